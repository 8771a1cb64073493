"""The measured experiments shipped in data/results/: the stability experiments of lessons 11-14 (every
strategy has its 20 restarts, nothing crashed, failures follow the rule, and each table is exactly what
``minibert stability`` computes from its runs), the probing comparison of lesson 18 and the Mixout
learning-rate sweep of lesson 12, each regenerated from its shipped runs."""
import json

import pytest

from minibert import outputs
from minibert.finetuning import data as task_data
from minibert.finetuning import stability
from minibert.paths import data_path

RESULTS = data_path("results", "stability")
EXPERIMENTS = sorted(p.name for p in RESULTS.iterdir() if p.is_dir()) if RESULTS.is_dir() else []
STRATEGIES = ["dropout", "mixout0.7", "mixout0.8", "mixout0.9", "freelb", "smart", "mix", "concat4", "twostage",
              "nobiascorr", "reinit1", "long", "random", "freelb0.03"]


def test_the_experiments_of_the_lessons_are_shipped():
    assert set(EXPERIMENTS) == {f"{task}-{size}" for task in ("acceptability", "entailment") for size in (100, 200, 500)}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_runs_are_complete_and_the_table_is_theirs(name):
    folder = RESULTS / name
    records = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    task, size = name.rsplit("-", 1)
    assert {r["task"] for r in records} == {task} and int(size) in (100, 200, 500)
    assert not [r for r in records if "error" in r]
    assert sorted((r["strategy"], r["seed"]) for r in records) == sorted((s, i) for s in STRATEGIES for i in range(20))
    majority = task_data.majority_score(task_data.task_info(task), "dev")
    for r in records:
        assert r["failed"] == (r["dev"] <= majority) and 0 <= r["dev"] <= 1
        assert r["stages"] == (["nli", task] if r["strategy"] == "twostage" else [task])
    rows = stability.summarise(records, STRATEGIES)
    table = stability.format_table(rows, task, "accuracy", majority)
    assert (folder / "table.md").read_text() == table + "\n"


# The probing comparison of the two shipped models (lesson 18): both `minibert probe` runs ship, and
# comparison.md is exactly what minibert.probing.compare makes of them.
PROBING = data_path("results", "probing")


def test_the_probing_comparison_is_the_shipped_runs():
    from minibert.probing import compare

    results = compare.load({name: PROBING / name for name in ("tiny", "mini")})
    for name, r in results.items():
        assert r["model"] == f"the shipped model {name}"
        assert set(r) >= {"agreement", "npi", "negation", "facts", "malformed", "layers", "structural", "attention"}
        assert r["agreement"]["model"]["n"] == 1680 and r["npi"]["model"]["groups"] == 250   # full sets, no --limit
    assert (PROBING / "comparison.md").read_text() == compare.comparison(results) + "\n"


# Mixout in its regime (lesson 12, section 10): a learning-rate sweep from the shipped mini model.
SWEEPS = data_path("results", "mixout_regime")
SWEEP_STRATEGIES = ["dropout", "dropout0", "mixout0.7", "mixout0.8", "mixout0.9"]


def test_the_mixout_sweep_is_complete_made_from_mini_and_its_tables_are_its_runs():
    mini_weights = outputs.sha256_file(data_path("pretrained", "mini", "model.safetensors"))
    folders = [p for p in SWEEPS.iterdir() if p.is_dir()]
    assert folders
    for folder in folders:
        sweep = stability.read_sweep(folder)
        assert len(sweep) >= 4                                   # a sweep, not one learning rate
        for settings, records in sweep:
            assert settings["init_weights_sha256"] == mini_weights and settings["train_limit"] == 200
            assert sorted((r["strategy"], r["seed"]) for r in records) == sorted(
                (s, i) for s in SWEEP_STRATEGIES for i in range(20))
            for r in records:
                assert r["failed"] == (r["dev"] <= r["majority"]) and r["task"] == settings["task"]
            tables = [p for p in folder.iterdir() if p.is_dir() and json.loads(
                (p / stability.SETTINGS).read_text())["lr"] == settings["lr"]]
            assert len(tables) == 1
            rows = stability.summarise(records, SWEEP_STRATEGIES)
            table = stability.format_table(rows, settings["task"], "accuracy", records[0]["majority"])
            assert (tables[0] / "table.md").read_text() == table + "\n"
        assert (folder / "table.md").read_text() == stability.sweep_table(sweep, SWEEP_STRATEGIES) + "\n"


def test_a_sweep_of_experiments_that_differ_in_more_than_the_learning_rate_is_refused(tmp_path):
    record = {"strategy": "dropout", "seed": 0, "metric": "accuracy", "dev": 0.6, "test": 0.6, "majority": 0.5,
              "failed": False, "seconds": 1.0, "stages": ["entailment"], "task": "entailment"}
    for name, lr, limit in (("a", 1e-3, 200), ("b", 3e-3, 200)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "settings.json").write_text(json.dumps({"task": "entailment", "lr": lr,
                                                                   "train_limit": limit, "epochs": 3.0}))
        (tmp_path / name / "runs.jsonl").write_text(json.dumps(record) + "\n")
    sweep = stability.read_sweep(tmp_path)
    assert [s["lr"] for s, _ in sweep] == [1e-3, 3e-3]
    assert "| 0.003 | 0.600 (0/1) |" in stability.sweep_table(sweep, ["dropout"])
    (tmp_path / "b" / "settings.json").write_text(json.dumps({"task": "entailment", "lr": 3e-3, "train_limit": 500,
                                                              "epochs": 3.0}))
    with pytest.raises(ValueError, match="differ in train_limit, not only in lr"):
        stability.read_sweep(tmp_path)
    with pytest.raises(FileNotFoundError, match="no stability experiments"):
        stability.read_sweep(tmp_path / "a" / "nothing")
