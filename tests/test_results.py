"""The measured stability experiments shipped in data/results/stability/ (lessons 11-14 read them): every
strategy has its 20 restarts, nothing crashed, failures follow the rule, and each table is exactly what
``minibert stability`` computes from its runs."""
import json

import pytest

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
