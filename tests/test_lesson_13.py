"""Lesson 13 runs top to bottom in quick mode and prints the numbers its prose promises."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "13_layers_and_two_stage.py"
NUM = r"([-+]?[0-9.]+(?:e[-+]?\d+)?)"


def numbers(pattern: str, text: str) -> list[float]:
    match = re.search(pattern, text, flags=re.M)
    assert match, f"pattern {pattern!r} not found in the lesson's output:\n{text[-3000:]}"
    return [float(g) for g in match.groups()]


def test_lesson_13_runs_in_quick_mode(tmp_path):
    figures = tmp_path / "figures"      # MINIBERT_FIGURES: PNGs never go into the repository
    # A stability folder with one setting of made-up runs: the lesson must tabulate it and skip the others.
    records = [{"strategy": s, "seed": i, "metric": "accuracy", "dev": dev, "test": dev, "majority": 0.5,
                "failed": dev <= 0.5, "seconds": 1.0, "task": "acceptability"}
               for s, devs in (("dropout", (0.5, 0.6, 0.7)), ("twostage", (0.55, 0.65, 0.62)),
                               ("smart", (0.9, 0.9, 0.9)))
               for i, dev in enumerate(devs)]
    (tmp_path / "acceptability-100").mkdir()
    (tmp_path / "acceptability-100" / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    started = time.time()
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(figures), MPLBACKEND="Agg",
               OPENBLAS_NUM_THREADS="1", MINIBERT_STABILITY_RESULTS=str(tmp_path))
    proc = subprocess.run([sys.executable, str(LESSON)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    # 1. the scalar mix by hand equals ScalarMix, with and without layer dropout, and passes the checks
    pattern = rf"by hand vs ScalarMix: h {NUM}, dX {NUM}, dw {NUM}, dgamma {NUM}"
    comparisons = [[float(v) for v in m] for m in re.findall(pattern, out)]
    assert len(comparisons) == 2 and max(max(c) for c in comparisons) < 1e-12, comparisons
    assert abs(numbers(rf"sum of dw: {NUM}", out)[0]) < 1e-12
    kept = re.search(r"kept \[(\d) (\d) (\d)\], s = \[([0-9. ]+)\]", out)
    assert kept, out[-3000:]
    keep = [int(kept.group(i)) for i in (1, 2, 3)]
    s = [float(v) for v in kept.group(4).split()]
    assert 0 < sum(keep) < 3 and abs(sum(s) - 1) < 1e-3
    assert all((k == 0) == (v == 0) for k, v in zip(keep, s))
    dropped = re.search(r"dropped layers get no gradient: dw = \[([-0-9. ]+)\], \|dX_l\| = \[([0-9. ]+)\]", out)
    dw = [float(v) for v in dropped.group(1).split()]
    dx = [float(v) for v in dropped.group(2).split()]
    for k, g, x in zip(keep, dw, dx):
        assert (g == 0 and x == 0) if k == 0 else x > 0
    passed = numbers(r"^(\d+) of (\d+) tensors within 1e-06", out)
    assert passed[0] == passed[1] == 13
    assert not re.search(r"\bFAIL", out)

    # 2. the readings by hand equal the model; concat4 of a 2-layer model reads 3 states
    rows = dict(re.findall(rf"^(mix|concat4)\s+3 hidden states, .*max \|by hand - model\| {NUM}$", out, flags=re.M))
    assert set(rows) == {"mix", "concat4"} and max(float(v) for v in rows.values()) < 1e-5
    assert "concat4  3 hidden states, features (8, 384), classifier weight (2, 384)" in out
    ok, total = numbers(r"gradient checks of the whole model .*: (\d+) of (\d+) tensors ok", out)
    assert ok == total > 40

    # 3. three readings fine-tuned; the mixing weights stay inside the learning-rate bound
    table = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(last|mix|concat4)\s+([0-9.]+)\s+([0-9.]+)\s+"
                                                                  r"[0-9.]+$", out, flags=re.M)}
    assert set(table) == {"last", "mix", "concat4"} and all(0 <= v <= 1 for v in table.values())
    weights = re.search(r"^mix seed 0: mixing weights \(embeddings, layer 1, layer 2\) \[([0-9. ]+)\]", out, flags=re.M)
    weights = [float(v) for v in weights.group(1).split()]
    low, high = numbers(rf"softmax\(w\) stays within \[{NUM}, {NUM}\]", out)
    assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-3 and all(low <= v <= high for v in weights)
    assert numbers(rf"largest \|w_l\| learned: {NUM}", out)[0] <= numbers(rf"so \|w_l\| <~ {NUM}", out)[0]

    # 4. two-stage: the intermediate stage ran; the gains are the differences of the table's means
    nli, majority = numbers(r"nli dev accuracy ([0-9.]+) \(majority ([0-9.]+)\)", out)
    assert abs(majority - 1 / 3) < 0.01 and 0 <= nli <= 1
    assert 0 <= numbers(r"no entailment training: accuracy ([0-9.]+)", out)[0] <= 1
    means = {(m.group(1), m.group(2), m.group(3)): float(m.group(4)) for m in re.finditer(
        r"^(entailment|acceptability)\s+(\d+) (pretrained|nli)\s+[0-9. ]+?\s([0-9.]+)\s+[0-9.]+$", out, flags=re.M)}
    assert len(means) == 4, means
    for task, size, gain in re.findall(r"two-stage gain, (\w+) N=(\d+): ([-+][0-9.]+)", out):
        assert abs(float(gain) - (means[task, size, "nli"] - means[task, size, "pretrained"])) < 0.0015
    figure = figures / "13_two_stage.png"
    assert figure.is_file() and figure.stat().st_mtime >= started - 1

    # 5. the stability folder: the one setting present is tabulated (only this lesson's strategies), the
    # five others are skipped with a note
    assert out.count("note: no stability runs for") == 5
    assert "| dropout | 3 | 0.600 | 0.100 | 0.600 | 0.700 | 1/3 | 0.650 |" in out
    assert "| twostage | 3 | 0.607 |" in out and "| smart |" not in out and "| mix |" not in out
    assert "stability settings found: 1 of 6" in out
    assert (figures / "13_stability_acceptability-100.png").stat().st_mtime >= started - 1
