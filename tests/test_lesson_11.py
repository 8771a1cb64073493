"""Lesson 11 runs top to bottom in quick mode and prints the numbers its prose promises."""
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "11_finetuning.py"
NUMBER = r"([-+]?[0-9.]+(?:e[-+]?\d+)?)"


def number(pattern: str, text: str, group: int = 1) -> float:
    match = re.search(pattern, text, flags=re.M)
    assert match, f"pattern {pattern!r} not found in the lesson's output:\n{text[-2000:]}"
    return float(match.group(group))


def test_lesson_11_runs_in_quick_mode(tmp_path):
    figures = tmp_path / "figures"      # MINIBERT_FIGURES: PNGs never go into the repository
    started = time.time()
    # One BLAS thread, as for the other lessons: only speed depends on it, and no test checks speed.
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(figures), MPLBACKEND="Agg",
               OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(LESSON)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    # 1. loading: the encoder is copied, the classifier is new, the pretraining heads are left out
    assert "missing in the checkpoint (fresh initialisation): ['classifier.weight', 'classifier.bias']" in out
    assert "left out of the model (the MLM and NSP heads): 7 tensors" in out
    assert len(re.findall(r"^  cls\.", out, flags=re.M)) == 7

    # 2. the head by hand: same mask, same numbers, gradients right
    assert "same classifier mask as the package's Dropout: True" in out
    by_hand = number(r"loss by hand ([0-9.]+)", out)
    assert abs(by_hand - number(r"loss by hand [0-9.]+, package ([0-9.]+)", out)) < 1e-5
    assert abs(by_hand - math.log(2)) < 0.05                       # a fresh classifier: about ln 2
    for name in ("logits", "dW", "db"):
        assert number(rf"max \|package - by hand\|:.*?\b{name} {NUMBER}", out) < 1e-5, name
    assert "head: 3 of 3 tensors ok" in out
    whole = re.search(r"tiny float64 copy\): (\d+) of (\d+) tensors ok", out)
    assert whole and whole.group(1) == whole.group(2)
    assert not re.search(r"\bFAIL\b", out)

    # 3. tasks: baselines at chance; a pair has segment 0 up to the first [SEP], then 1
    assert number(r"^entailment\s+premise \+ hypothesis.*\s([0-9.]+)$", out) == 0.5
    assert abs(number(r"^nli\s+premise \+ hypothesis.*\s([0-9.]+)$", out) - 1 / 3) < 0.01
    pair = re.search(r"^entailment: premise=.*\n  (.*)$", out, flags=re.M).group(1).split()
    tokens = [t.rsplit("/", 1) for t in pair]
    first_sep = [tok for tok, _ in tokens].index("[SEP]")
    assert tokens[0] == ["[CLS]", "0"] and tokens[-1] == ["[SEP]", "1"]
    assert {s for _, s in tokens[:first_sep + 1]} == {"0"} and {s for _, s in tokens[first_sep + 1:]} == {"1"}
    single = re.search(r"^acceptability: sentence=.*\n  (.*)$", out, flags=re.M).group(1).split()
    assert single[0] == "[CLS]/0" and single[-1] == "[SEP]/0" and all(t.endswith("/0") for t in single)

    # 4. metrics: by hand = package; a constant prediction has MCC 0
    for line in re.findall(r"^(?:always 1|three mistakes) .*$", out, flags=re.M):
        hand = re.search(r"by hand accuracy ([0-9.]+), F1 ([0-9.]+), MCC ([-0-9.]+)", line).groups()
        pkg = re.search(r"package accuracy ([0-9.]+), f1 ([0-9.]+), matthews_corrcoef ([-0-9.]+)", line).groups()
        assert hand == pkg, line
    assert re.search(r"^always 1 .*MCC 0\.000;", out, flags=re.M)
    assert number(r"^three mistakes .*MCC ([0-9.]+);", out) == 0.408    # (4*3 - 1*2) / sqrt(5*6*4*5)

    # 5. what pretraining is worth: the pretrained model beats random weights
    pretrained = number(r"^pretrained\s+dev accuracy .*mean ([0-9.]+)$", out)
    random_init = number(r"^random init\s+dev accuracy .*mean ([0-9.]+)$", out)
    assert pretrained > random_init + 0.05 and random_init >= 0.45
    assert number(r"pretraining is worth ([-+][0-9.]+)", out) == round(pretrained - random_init, 3)

    # 6. restarts: the summary matches the per-seed scores; failures are counted against the baseline
    by_seed = re.search(r"^pretrained, dev accuracy by seed: (.*)$", out, flags=re.M).group(1)
    seeds = [float(v) for v in re.findall(r"\d+: ([0-9.]+)", by_seed)]
    assert len(seeds) == 2
    assert abs(number(r"restarts: mean ([0-9.]+)", out) - sum(seeds) / len(seeds)) < 1e-3
    assert number(r"restarts: .*failed (\d+)", out) == sum(s <= 0.5 for s in seeds)

    # 7. bias correction: the factor, the schedule (first update at lr 0) and their product
    block = out.split("(1-b1^t)/sqrt(1-b2^t)")[1].split("re-initialised")[0]
    rows = re.findall(r"^\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", block, flags=re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 5, 10, 21]
    for t, factor, share, product in rows:
        assert abs(float(factor) - (1 - 0.9 ** int(t)) / math.sqrt(1 - 0.999 ** int(t))) < 1e-3
        assert abs(float(product) - float(factor) * float(share)) < 5e-3     # three rounded numbers
    assert float(rows[0][2]) == 0.0 and float(rows[2][2]) == 1.0
    assert "re-initialised: ['bert.encoder.layer.1', 'bert.pooler']; 18 arrays, 214,784 parameters; " \
           "739,714 keep their pretrained values" in out

    # the remedies, run: four strategies; Adam without bias correction moves layer 0 furthest
    table = re.findall(r"^\| (.+?) \| (\d+) \| ([0-9.]+) \|", out, flags=re.M)
    assert [name for name, _, _ in table] == ["dropout (BERT's recipe)", "nobiascorr", "reinit1", "long (6 epochs)"]
    assert all(int(runs) == 2 for _, runs, _ in table)
    moved = {name: number(rf"^{re.escape(name)}\s+dev .*layer 0 moved ([0-9.]+)", out) for name, _, _ in table}
    assert moved["nobiascorr"] > 2 * moved["dropout (BERT's recipe)"]
    assert moved["long (6 epochs)"] > moved["dropout (BERT's recipe)"]

    for name in ("11_restarts.png", "11_remedies.png"):
        figure = figures / name
        assert figure.is_file() and figure.stat().st_mtime >= started - 1, name
