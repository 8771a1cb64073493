"""``minibert demo`` end to end on a few steps: what it prints, the report it writes, its figure."""
import argparse
import contextlib
import io
import re

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is a runtime dependency: pip install '.[test]'")

from minibert import demo, plots  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert demo.main(argparse.Namespace(out=str(out), steps=2, seed=0, finetune_seeds=1,
                                            model="tiny")) == 0
    return out, printed.getvalue(), (out / "report.md").read_text(encoding="utf-8")


def test_fine_tuning_shows_progress_and_a_table_with_its_header(run):
    _, printed, report = run
    progress = r"^   \[(\d)/3\] .+, seed 0: dev accuracy 0\.\d{3} \(\d+ s\)$"
    assert re.findall(progress, printed, re.M) == ["1", "2", "3"]
    header = "| setting | seed 0 | mean |"
    assert header in printed and printed.index(header) > printed.index("[3/3]")
    assert "| shipped model, Mixout 0.8 | 0." in report
    assert "## Fine-tuning the shipped tiny model on the entailment task" in report
    assert "| random weights, dropout 0.1 | 0." in report
    majority = re.search(r"dev accuracy on 300 pairs; majority baseline (0\.\d{3})\)", report)
    assert majority and 0.5 <= float(majority[1]) < 0.7


def test_accuracies_come_with_their_item_counts_and_the_report_reads_them(run):
    _, printed, report = run
    assert re.search(r"\| masked LM accuracy \(n = [\d,]+ masked tokens\) "
                     r"\| NSP accuracy \(n = [\d,]+ pairs\) \|", report)
    assert "| 0 attractors (n = 25) | 1 attractor (n = 25) | 2 attractors (n = 25) |" in report
    assert "1 attractors" not in report and "1 attractors" not in printed
    assert "1 seed per setting" in printed and "1 seeds" not in printed
    assert "Wrong fill-ins are expected" in report and "lessons/09_cloze_probes.py" in report
    assert "The shipped model `tiny` has 2 layers (hidden 128) and 975,362 parameters" in report
    assert "| shipped tiny model | " in report and "`data/pretrained/tiny/README.md`" in report
    assert "agree with the closest noun" in report and "one sentence is 0.04 of accuracy" in report


def test_the_pretraining_figure_draws_the_baselines_of_the_report(run):
    out, _, report = run
    assert (out / "pretraining.png").stat().st_size > 0
    row = re.search(r"\| baselines: most frequent token / majority NSP label "
                    r"\| - \| (0\.\d{3}) \| (0\.\d{3}) \|", report)
    assert row
    fig = plots.pretraining_figure(plots.read_jsonl(out / "pretrain" / "metrics.jsonl"),
                                   float(row[1]), float(row[2]))
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert f"MLM: most frequent token ({row[1]})" in labels
    assert f"NSP: majority label ({row[2]})" in labels and "NSP: chance (0.5)" in labels


def test_demo_help_says_what_it_does_and_bad_counts_are_refused(tmp_path, capsys):
    from minibert.cli import main
    try:
        main(["demo", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    text = capsys.readouterr().out
    for words in ("default 300", "default 3", "report.md", "pretraining.png", "attractors", "Mixout"):
        assert words in text, words
    for option in ("--steps", "--finetune-seeds"):
        assert main(["demo", option, "0", "--out", str(tmp_path / "demo")]) == 1
        assert f"{option} must be a positive integer, got 0" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()                 # refused before anything was written


def test_demo_takes_a_shipped_model_by_name_and_checks_it_before_any_work(tmp_path, monkeypatch,
                                                                          capsys):
    from minibert import paths
    from minibert.cli import build_parser, main
    assert build_parser().parse_args(["demo"]).model == "tiny"
    assert build_parser().parse_args(["demo", "--model", "mini"]).model == "mini"
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--model", "huge", "--out", str(tmp_path / "demo")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --model: invalid choice: 'huge'" in err and "tiny" in err and "mini" in err
    data = tmp_path / "data"                 # a data folder in which mini is not installed
    (data / "pretrained").mkdir(parents=True)
    monkeypatch.setattr(paths, "data_dir", lambda: data)
    assert main(["demo", "--model", "mini", "--out", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("minibert demo: error: the shipped model mini is missing"), err
    assert not (tmp_path / "demo").exists()                 # refused before anything was written


def test_the_report_prose_describes_the_chosen_model():
    """The reading of the cloze table takes the model's size from its config, and the reading of
    the agreement table follows the numbers: above chance with attractors is said only when it is
    (more than two standard errors of the 75 sentences)."""
    import numpy as np

    from minibert.config import BertConfig
    from minibert.models import BertForPreTraining
    mini = BertForPreTraining(BertConfig.preset("mini", vocab_size=100), np.random.default_rng(0))
    text = demo.reading_the_cloze("mini", mini)
    assert f"`mini` has 4 layers (hidden 256) and {mini.num_parameters():,} parameters" in text
    assert not re.search(r"\b2 layers", text) and "8,000" not in text and "million" not in text

    def by(*accuracies):
        return {str(k): {"accuracy": a} for k, a in enumerate(accuracies)}
    assert "falls to about chance" in demo.reading_the_agreement(25, by(0.9, 0.52, 0.41, 0.43))
    assert "falls to about chance" in demo.reading_the_agreement(25, by(0.9, 0.6, 0.6, 0.6))
    held = demo.reading_the_agreement(25, by(0.9, 0.72, 0.64, 0.6))
    assert "stays above chance (0.65 on average" in held and "falls" not in held
    mixed = demo.reading_the_agreement(25, by(0.92, 0.88, 0.48, 0.40))     # the shipped mini's row
    assert "With 1 attractor(s) it stays above chance (0.88); with 2 or 3 it falls to about chance (0.48, 0.40)" \
        in mixed
