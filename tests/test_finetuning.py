"""The fine-tuning loop, its options, ``minibert finetune`` and ``minibert stability``.

Runs are kept to a few dozen examples and steps: what is tested is the plumbing and the direction of
each option's effect, not the scores (the lessons and the closing note measure those).
"""
import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from minibert import kernels
from minibert.finetuning import stability
from minibert.finetuning.trainer import FinetuneConfig, Finetuner, finetune, reinit_top_layers, seed_streams
from minibert.models import BertForSequenceClassification
from minibert.paths import data_path

TINY = str(data_path("pretrained", "tiny"))


@pytest.fixture(autouse=True)
def numpy_kernels():
    with kernels.using("numpy"):     # no Numba compilation in these short runs
        yield


def small(**changes):
    fields = dict(task="acceptability", init=TINY, epochs=1, train_limit=48, lr=1e-3, batch_size=16)
    return FinetuneConfig(**{**fields, **changes})


def quiet(config):
    return finetune(config, log=lambda s: None)


def encoder_distance(model, reference):
    return np.sqrt(sum(np.sum((a - reference[n]) ** 2) for n, a in model.bert.named_parameters()))


def pretrained_encoder():
    model = BertForSequenceClassification.from_pretrained(TINY, np.random.default_rng(0), allow_missing_heads=True)
    return {n: a.copy() for n, a in model.bert.named_parameters()}


def test_a_run_is_a_pure_function_of_its_seed():
    a, b, c = quiet(small(seed=3)), quiet(small(seed=3)), quiet(small(seed=4))
    assert a.final.dev == b.final.dev
    for (name, x), (_, y) in zip(a.model.named_parameters(), b.model.named_parameters()):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert not np.array_equal(a.model.classifier.weight.data, c.model.classifier.weight.data)


def test_result_reports_metrics_baseline_and_failure():
    result = quiet(small())
    final = result.final
    assert final.metric == "accuracy" and set(final.dev) >= {"accuracy", "f1", "matthews_corrcoef"}
    assert final.majority == pytest.approx(0.5)
    assert final.failed == (final.dev["accuracy"] <= 0.5)
    assert final.steps == 3 and final.history[-1]["step"] == 3


def test_the_encoder_starts_from_the_checkpoint_and_the_head_from_scratch():
    finetuner = Finetuner(small())
    model = finetuner.build_model(__import__("minibert.finetuning.data", fromlist=["x"]).task_info("nli"),
                                  seed_streams(0))
    for name, array in model.bert.named_parameters():
        np.testing.assert_array_equal(array, pretrained_encoder()[name], err_msg=name)
    assert model.classifier.weight.data.shape == (3, 128)


def test_mixout_keeps_the_encoder_closer_to_the_pretrained_weights():
    reference = pretrained_encoder()
    plain = quiet(small(dropout=0.1))
    mixed = quiet(small(mixout=0.9))
    assert encoder_distance(mixed.model, reference) < 0.5 * encoder_distance(plain.model, reference)


def test_random_init_does_not_load_the_weights():
    result = quiet(small(random_init=True))
    assert encoder_distance(result.model, pretrained_encoder()) > 10


def test_reinit_top_layers_touches_only_the_top_layers_and_the_pooler():
    model = BertForSequenceClassification.from_pretrained(TINY, np.random.default_rng(0), allow_missing_heads=True)
    before = {n: a.copy() for n, a in model.named_parameters()}
    names = reinit_top_layers(model, 1, np.random.default_rng(1))
    assert names == ["bert.encoder.layer.1", "bert.pooler"]
    for name, array in model.named_parameters():
        changed = not np.array_equal(array, before[name])
        top = name.startswith(("bert.encoder.layer.1.", "bert.pooler."))
        # re-initialised LayerNorms of a trained model differ too; biases were not all zero
        if not top:
            assert not changed, name
    assert np.all(model.bert.encoder.layer[1].output.LayerNorm.weight.data == 1)
    assert abs(model.bert.pooler.dense.weight.data.std() - 0.02) < 0.002
    with pytest.raises(ValueError, match="cannot re-initialise 3 layers"):
        reinit_top_layers(model, 3, np.random.default_rng(1))


def test_without_bias_correction_the_first_updates_are_larger():
    reference = pretrained_encoder()
    # One step at the full learning rate: Adam's first update is lr * g / (|g| + eps) with bias correction and
    # lr * (1-b1) g / (sqrt(1-b2) |g| + eps) without, up to (1-b1)/sqrt(1-b2) = 3.16x larger; less where
    # |g| is not far above eps / sqrt(1-b2) = 3e-5.
    fields = dict(train_limit=16, warmup_fraction=0.0, dropout=0.0, weight_decay=0.0)
    on = quiet(small(**fields))
    off = quiet(small(correct_bias=False, **fields))
    ratio = encoder_distance(off.model, reference) / encoder_distance(on.model, reference)
    assert 1.5 < ratio < 3.17


def test_scalar_mix_and_concat_heads_train():
    mix = quiet(small(layers="mix", layer_dropout=0.1))
    assert not np.allclose(mix.model.scalar_mix.weights.data, 0)      # the mixing weights were trained
    concat = quiet(small(layers="concat4"))
    assert concat.model.classifier.weight.data.shape == (2, 3 * 128)   # 2 layers + embeddings


def test_two_stage_runs_the_intermediate_task_first_with_its_own_head():
    result = quiet(small(intermediate="nli", intermediate_epochs=0.01))
    assert [s.task for s in result.stages] == ["nli", "acceptability"]
    assert result.stages[0].steps == 19
    assert result.model.classifier.weight.data.shape == (2, 128)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="Mixout replaces dropout"):
        small(mixout=0.5, dropout=0.1)
    with pytest.raises(ValueError, match="one adversarial technique"):
        small(freelb=(2, 0.1, 0.0), smart=1.0)
    with pytest.raises(ValueError, match="intermediate task must differ"):
        small(intermediate="acceptability")
    with pytest.raises(ValueError, match="unknown task"):
        quiet(small(task="glue"))
    with pytest.raises(FileNotFoundError):
        quiet(small(init="/nonexistent/model"))


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "minibert.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "MINIBERT_KERNELS": "numpy"})


def test_finetune_command_saves_a_model_that_reloads(tmp_path):
    out = tmp_path / "model"
    proc = run_cli("finetune", "--task", "entailment", "--train-limit", "32", "--epochs", "1",
                   "--mixout", "0.7", "--layers", "mix", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "entailment: dev accuracy" in proc.stdout
    record = json.loads((out / "results.json").read_text())
    model = BertForSequenceClassification.from_pretrained(out, np.random.default_rng(0))
    assert model.config.classifier_layers == "mix" and record["config"]["mixout"] == 0.7
    from minibert.finetuning import data as task_data
    from minibert.finetuning.trainer import evaluate
    from minibert.tokenization import BertTokenizer
    info = task_data.task_info("entailment")
    dev = task_data.encode(task_data.load_examples("entailment", "dev"), BertTokenizer.from_pretrained(out), info)
    assert evaluate(model, dev, info)["accuracy"] == pytest.approx(record["stages"][-1]["dev"]["accuracy"])


@pytest.mark.parametrize("args, message", [
    (["--freelb", "2,0.1"], "K,alpha,eps"),
    (["--mixout", "0.5", "--dropout", "0.1"], "not allowed with"),
    (["--mixout", "1.0"], "mixout must be in"),
    (["--task", "nope"], "unknown task"),
])
def test_finetune_command_rejects_bad_options(args, message):
    task = [] if "--task" in args else ["--task", "acceptability"]
    proc = run_cli("finetune", *task, *args, "--train-limit", "16", "--epochs", "1")
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("name, changes", [
    ("dropout", {"dropout": 0.1}), ("dropout0.3", {"dropout": 0.3}), ("mixout0.8", {"mixout": 0.8}),
    ("mix", {"layers": "mix"}), ("concat4", {"layers": "concat4"}), ("twostage", {"intermediate": "nli"}),
    ("freelb", {"freelb": (2, 0.1, 0.0), "freelb_init_mag": 0.1}),
    ("freelb0.03", {"freelb": (2, 0.03, 0.0), "freelb_init_mag": 0.1}), ("smart", {"smart": 1.0}), ("smart3", {"smart": 3.0}), ("nobiascorr", {"correct_bias": False}),
    ("reinit2", {"reinit_layers": 2}), ("long", {"epochs": 6.0}), ("random", {"random_init": True}),
])
def test_strategy_names(name, changes):
    assert stability.strategy_changes(name, base_epochs=3.0) == changes


@pytest.mark.parametrize("name", ["mixout", "mixout1.5", "bagging", "mix2", "reinit1.5", ""])
def test_bad_strategy_names(name):
    with pytest.raises(ValueError, match="strategy"):
        stability.strategy_changes(name, 3.0)


def test_summary_table_counts_failures():
    records = [{"strategy": "a", "seed": i, "dev": d, "failed": d <= 0.5, "seconds": 1.0}
               for i, d in enumerate([0.5, 0.7, 0.9])]
    records.append({"strategy": "a", "seed": 9, "error": "boom"})
    (row,) = stability.summarise(records, ["a", "b"])
    assert row["runs"] == 3 and row["failed"] == 1
    assert row["mean"] == pytest.approx(0.7) and row["std"] == pytest.approx(0.2)
    assert row["mean_not_failed"] == pytest.approx(0.8)
    assert "| a | 3 | 0.700 | 0.200 | 0.700 | 0.900 | 1/3 | 0.800 |" in stability.format_table([row], "t", "accuracy", 0.5)


def test_swarm_offsets_spread_equal_values_and_leave_lonely_ones():
    offsets = stability.swarm_offsets(np.array([0.5, 0.5, 0.5, 0.9]))
    assert len(set(np.round(offsets[:3], 6))) == 3 and offsets[3] == 0


def test_stability_experiment_resumes(tmp_path, capsys):
    args = argparse.Namespace(task="acceptability", init=None, random_init=False, epochs=1.0, lr=1e-3,
                              batch_size=16, train_limit=16, max_length=128, seeds=2,
                              strategies="dropout,mixout0.9", workers=1, out=str(tmp_path))
    assert stability.main(args) == 0
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 4 and (tmp_path / "stability.png").stat().st_size > 0
    assert "| mixout0.9 | 2 |" in (tmp_path / "table.md").read_text()
    assert stability.main(args) == 0                      # everything on file: nothing is rerun
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 4
    assert "(4 already in" in capsys.readouterr().out


def test_backward_refuses_a_loss_gradient_after_a_forward_without_labels():
    model = BertForSequenceClassification.from_pretrained(TINY, np.random.default_rng(0), allow_missing_heads=True)
    ids = np.array([[2, 40, 41, 3]])
    model.forward(ids)
    with pytest.raises(RuntimeError, match="needs the last forward"):
        model.backward(1.0, np.ones((1, 2), np.float32))
    with pytest.raises(RuntimeError, match="needs a forward"):
        model.backward()
    assert model.backward(dlogits=np.ones((1, 2), np.float32)).shape == (1, 4, 128)
    model.forward(ids, labels=np.array([1]))
    assert model.backward().shape == (1, 4, 128)


def test_report_reads_the_shipped_runs(tmp_path):
    runs = data_path("results", "stability", "entailment-500", "runs.jsonl")
    table = stability.report(runs, ["dropout", "long"], tmp_path / "f.png", "entailment, 500")
    assert table.startswith("entailment, 500: dev accuracy") and "| long | 20 |" in table and "| mix |" not in table
    assert (tmp_path / "f.png").stat().st_size > 0
    assert stability.report(runs, ["bagging"]) is None
    bad = tmp_path / "runs.jsonl"
    bad.write_text('{"strategy": "dropout", "seed": 0}\nnot json\n')
    with pytest.raises(ValueError, match="runs.jsonl:2 is not valid JSON"):
        stability.read_runs(bad)
    with pytest.raises(FileNotFoundError):
        stability.read_runs(tmp_path / "missing.jsonl")
