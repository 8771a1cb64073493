"""The commands a user runs first, end to end on small inputs."""
import json

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
