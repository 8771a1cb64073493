"""The commands a user runs first, end to end on small inputs."""
import json
import re

import pytest

from minibert.cli import main
from minibert.paths import data_path


def test_help_lists_the_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in ("demo", "gradcheck", "bench", "pretrain", "evaluate", "vocab", "prepare", "corpus", "finetune",
                 "stability", "probe"):
        assert name in out


def test_pretrain_resume_and_evaluate(tmp_path, capsys):
    lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()[:1500]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    common = ["pretrain", "--corpus", str(corpus), "--max-seq-length", "64", "--dupe-factor", "1",
              "--batch-size", "8", "--eval-every", "2", "--save-every", "2", "--out", str(tmp_path / "run")]
    assert main(common + ["--steps", "2"]) == 0
    assert main(common + ["--steps", "4", "--resume", str(tmp_path / "run" / "checkpoint-000002")]) == 0
    steps = [json.loads(line)["step"] for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]
    assert main(["evaluate", str(tmp_path / "run" / "checkpoint-000004"), "--text", str(corpus)]) == 0
    assert "masked LM loss" in capsys.readouterr().out


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 1
    assert "error" in capsys.readouterr().err


def test_demo_writes_a_report(tmp_path):
    assert main(["demo", "--steps", "2", "--finetune-seeds", "1", "--out", str(tmp_path / "demo")]) == 0
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "Held-out evaluation" in report and "[MASK]" in report
    assert "| shipped model, Mixout 0.8 | 0." in report and "| random weights, dropout 0.1 | 0." in report
    assert (tmp_path / "demo" / "pretraining.png").stat().st_size > 0


def test_pretrain_prints_what_evaluate_prints_and_draws_a_curve(tmp_path, capsys):
    """The held-out numbers at the end of pretrain are `evaluate`'s on the final checkpoint (the
    same instances: prepared as evaluate prepares them, all of them read), the held-out preparation
    is logged as held-out, a short run evaluates ten times, and `evaluate` takes the run folder
    itself."""
    lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()[:1500]
    corpus, heldout = tmp_path / "corpus.txt", tmp_path / "heldout.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    held = data_path("corpus", "heldout.txt").read_text(encoding="utf-8").splitlines()[:300]
    heldout.write_text("\n".join(held) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    assert main(["pretrain", "--corpus", str(corpus), "--heldout", str(heldout), "--max-seq-length",
                 "64", "--dupe-factor", "1", "--batch-size", "8", "--steps", "20",
                 "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^held-out: \d+ documents", out, re.M)
    number = r"([\d.]+)"
    end = re.search(f"held-out eval_mlm_loss {number}, eval_mlm_accuracy {number}, "
                    f"eval_nsp_accuracy {number}", out).groups()
    evals = [r for r in map(json.loads, open(run / "metrics.jsonl")) if "eval_mlm_loss" in r]
    assert [r["step"] for r in evals] == list(range(2, 21, 2))
    assert main(["evaluate", str(run), "--text", str(heldout), "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint-000020" in out
    again = re.search(f"masked LM loss {number}, accuracy {number} .*next sentence accuracy "
                      f"{number}", out).groups()
    assert again == end
    # Every command that takes a model takes the run folder: its latest checkpoint.
    from minibert.cli import build_parser
    from minibert.finetuning.cli import config_from_args
    from minibert.probing.cli import load_models
    args = build_parser().parse_args(["finetune", "--task", "entailment", "--from", str(run)])
    assert config_from_args(args).init == str(run / "checkpoint-000020")
    assert load_models(str(run), 0)[3] == str(run / "checkpoint-000020")


def test_pretrain_help_describes_presets_steps_and_intervals(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("tiny 2 layers, hidden 128", "mini 4 layers", "small 4 layers",
                     "total optimiser steps", "(default 2000)", "default: a tenth of --steps",
                     "(default 500; the last step is always", "--resume", "SIGTERM", "143"):
        assert expected in text, expected


def test_pretrain_refuses_bad_workers_before_writing_anything(tmp_path, capsys):
    assert main(["pretrain", "--workers", "0", "--out", str(tmp_path / "zero")]) == 1
    assert "--workers must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["pretrain", "--workers", "9", "--batch-size", "8", "--out", str(tmp_path / "nine")]) == 1
    assert "--batch-size 8 cannot be shared by 9 workers" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
