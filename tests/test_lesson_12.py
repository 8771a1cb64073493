"""Lesson 12 runs top to bottom in quick mode and prints the numbers its prose promises."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "12_mixout.py"
RESULTS = ROOT / "data" / "results" / "stability"
NUMBER = r"([-+]?[0-9.]+(?:e[-+]?\d+)?)"


def number(pattern: str, text: str, group: int = 1) -> float:
    match = re.search(pattern, text, flags=re.M)
    assert match, f"pattern {pattern!r} not found in the lesson's output:\n{text[-2000:]}"
    return float(match.group(group))


def test_lesson_12_runs_in_quick_mode(tmp_path):
    figures = tmp_path / "figures"      # MINIBERT_FIGURES: PNGs never go into the repository
    started = time.time()
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(figures), MPLBACKEND="Agg",
               OPENBLAS_NUM_THREADS="1")
    env.pop("MINIBERT_STABILITY_RESULTS", None)                          # read the shipped results, if any
    proc = subprocess.run([sys.executable, str(LESSON)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    # 1. the derivation, by Monte Carlo: E[w_tilde] = w, the variance, u = 0 is dropout, the penalty
    assert number(r"E\[w_tilde\] - w: max ([0-9.]+)", out) < 3 * number(r"Monte Carlo error ~ ([0-9.]+)", out)
    assert abs(number(r"Var\[w_tilde\] / \(p/\(1-p\) \(w-u\)\^2\): mean ([0-9.]+)", out) - 1) < 0.1
    assert number(r"u = 0 is dropout on the inputs: .* = " + NUMBER, out) < 1e-12
    monte_carlo = number(r"E\[\(y - y_hat\)\^2\]: Monte Carlo ([0-9.]+)", out)
    formula = number(r"sum x\^2 \(w-u\)\^2 = ([0-9.]+)", out)
    assert abs(monte_carlo - formula) < 0.05 * formula and number(r"of which the penalty ([0-9.]+)", out) > 0.1

    # 2. by hand = package, same mask
    masks = re.search(r"mask: package \[([01 ]+)\], by hand \[([01 ]+)\]", out)
    assert masks and masks.group(1) == masks.group(2) and "0" in masks.group(1) and "1" in masks.group(1)
    for name in ("y", "dx", "dw", "db"):
        assert number(rf"max \|package - by hand\|:.*?\b{name} {NUMBER}", out) < 1e-5, name
    assert "shares the Linear's Parameters: True" in out and "not a parameter: ['weight', 'bias']" in out

    # 3. the exact gradient passes, by hand and in the package
    hand = re.findall(r"^mixout p=0\.6\s+(x|w|b)\s+\S+\s+" + NUMBER + r"\s+(ok|FAIL)$", out, flags=re.M)
    assert len(hand) == 3 and all(ok == "ok" and float(err) < 1e-6 for _, err, ok in hand)
    package = re.search(r"run_check\('mixout'\).*: (\d+) of (\d+) tensors ok", out)
    assert package and package.group(1) == package.group(2)

    # 4. the reference gradient fails by exactly p on the weights, and only there
    rows = re.findall(r"^\s*(0\.\d)\s+([0-9.]+)\s+" + NUMBER + r"\s+" + NUMBER + "$", out, flags=re.M)
    assert [r[0] for r in rows] == ["0.3", "0.6", "0.9"]
    for p, weight, x, bias in rows:
        assert abs(float(weight) - float(p)) < 1e-4 and float(x) < 1e-6 and float(bias) < 1e-6
    assert "check_mixout_reference (p = 0.6): 14 of 42 tensors FAIL, errors 0.6000;" in out
    failures = out.split("the failures:")[1].split("passing:")[0]
    assert failures.count("weight") == 14 and "bias" not in failures and "LayerNorm" not in failures
    assert "passing: 28 = 1 inputs + 19 biases + 5 LayerNorm weights + 3 embedding matrices" in out
    assert number(r"exact / reference on kept columns = ([0-9.]+)", out) == number(r"1/\(1-p\) = ([0-9.]+)", out)
    optimisers = re.findall(r"^\s*(\de-0\d)\s+([0-9.]+)\s+([0-9.]+)$", out, flags=re.M)
    assert [size for size, _, _ in optimisers] == ["1e-05", "5e-05", "1e-04", "1e-03", "1e-02"]
    assert all(float(sgd) == 0.1 for _, sgd, _ in optimisers)              # (1 - p) at p = 0.9
    adam = [float(a) for _, _, a in optimisers]
    assert adam == sorted(adam) and adam[0] < 0.9 and adam[-1] > 0.99     # only eps keeps them apart

    # 5. the larger p, the closer the weights stay to the pretrained ones
    distance = {name: number(rf"^{re.escape(name)}\s+\|\|w - u\|\| / \|\|u\|\| = ([0-9.]+)", out)
                for name in ("mixout 0 (no dropout)", "dropout 0.1", "mixout 0.5", "mixout 0.9")}
    assert distance["mixout 0.9"] < distance["mixout 0.5"] < distance["mixout 0 (no dropout)"]
    assert distance["mixout 0.9"] < distance["dropout 0.1"]

    # 6. apply_mixout on the classifier model
    assert "14 mixed weights:" in out and "  classifier.weight" in out and "  bert.pooler.dense.weight" in out
    assert "8 Dropout modules, p now [0.0]" in out
    assert "classifier target = its initialisation: True" in out
    assert number(r"training-mode logits \(masks drawn\) - eval logits: max " + NUMBER, out) == 0.0
    assert number(r"ratio mixout / dropout = ([0-9.]+)", out) > 0              # timings: printed, not judged
    median = number(r"mixed weight matrices at the start \(4 batches, clipped\): median " + NUMBER, out)
    assert 1e-6 < median < number(r"clipped\): median \S+, RMS " + NUMBER, out) < 1
    assert "Mixout draws 2,560 (one per column) and builds 409,856 mixed weights" in out

    # 8. the live experiment: the stability machinery's table and record format
    block = out.split("entailment (first 32 pairs, epochs 1)")[1].split("saved")[0]
    live = re.findall(r"^\| (\S+) \| (\d+) \| ([0-9.]+) \|", block, flags=re.M)
    assert [(name, runs) for name, runs, _ in live] == [("dropout", "2"), ("mixout0.9", "2")]
    record = json.loads(re.search(r"^first record: (.*)$", out, flags=re.M).group(1))
    assert {"strategy", "seed", "metric", "dev", "test", "majority", "failed", "seconds", "task"} <= set(record)
    assert record["failed"] == (record["dev"] <= record["majority"])

    # 9. the measured experiment: read and drawn when shipped, a note otherwise
    for task in ("acceptability", "entailment"):
        for size in (100, 500):
            runs = RESULTS / f"{task}-{size}" / "runs.jsonl"
            if runs.is_file():
                table = out.split(f"{task}, {size} training examples: dev")[1].split("saved")[0]
                rows = re.findall(r"^\| (\S+) \| (\d+) \| ([0-9.]+) \|", table, flags=re.M)
                shipped = [json.loads(line) for line in runs.read_text().splitlines() if line.strip()]
                assert {name for name, _, _ in rows} == {r["strategy"] for r in shipped if "error" not in r}
                for name, n, mean in rows:
                    devs = [r["dev"] for r in shipped if r["strategy"] == name and "error" not in r]
                    assert int(n) == len(devs) and abs(float(mean) - sum(devs) / len(devs)) < 6e-4
                figure = figures / f"12_stability_{task}_{size}.png"
                assert figure.is_file() and figure.stat().st_mtime >= started - 1
            else:
                assert f"skipping {task}-{size}" in out
    for name in ("12_stability_live.png",):
        figure = figures / name
        assert figure.is_file() and figure.stat().st_mtime >= started - 1, name
    # 10. the learning-rate sweep from the mini model: the shipped table, and its figure
    sweep = ROOT / "data" / "results" / "mixout_regime" / "entailment-200"
    assert (sweep / "table.md").read_text().strip() in out
    assert (figures / "12_mixout_regime_entailment-200.png").is_file()
