"""Lesson 08 runs top to bottom in quick mode and prints the numbers its prose promises."""
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "08_pretraining.py"


def number(pattern: str, text: str, group: int = 1) -> float:
    match = re.search(pattern, text)
    assert match, f"pattern {pattern!r} not found in the lesson's output:\n{text[-2000:]}"
    return float(match.group(group))


def test_lesson_08_runs_in_quick_mode(tmp_path):
    figures = tmp_path / "figures"      # MINIBERT_FIGURES: PNGs never go into the repository
    started = time.time()
    # One BLAS thread, as for the other lessons: only speed depends on it, and no test checks speed.
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(figures), MPLBACKEND="Agg",
               OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(LESSON)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    ln_v2 = math.log(4096) + math.log(2)

    # 1. the heads by hand equal the package; the gather's adjoint is the scatter-add, not the buffered +=
    assert number(r"max \|package - by hand\|: MLM ([0-9.e+-]+)", out) < 1e-5
    assert number(r"max \|package - by hand\|: MLM [0-9.e+-]+, NSP ([0-9.e+-]+)", out) < 1e-5
    assert "6.4x fewer" in out
    gather = number(r"<gather\(x\), g>\s+= ([+-][0-9.]+)", out)
    assert number(r"<x, add\.at\(g\)>\s+= ([+-][0-9.]+)", out) == gather
    assert abs(number(r"<x, buffered \+= g>\s+= ([+-][0-9.]+)", out) - gather) > 1e-3

    # 1b. the last layer computed at the rows the heads read only: same loss, same gradients
    kept = re.search(r"last layer: (\d+) of (\d+) rows; loss ([0-9.]+) with every row, ([0-9.]+) with "
                     r"these; largest gradient difference ([0-9.e+-]+)", out)
    assert kept and int(kept.group(1)) < int(kept.group(2)) / 3
    assert abs(float(kept.group(3)) - float(kept.group(4))) < 1e-5 and float(kept.group(5)) < 1e-4

    # 2. tied weights: both contributions, computed separately, add up to the one gradient
    assert "decoder weight is the word-embedding Parameter: True" in out
    assert "'cls.predictions.decoder.weight' listed: False" in out
    assert number(r"max \|grad - \(lookup \+ decoder\)\| / max \|grad\| = ([0-9.e+-]+)", out) < 1e-5
    rows = re.search(r"from the lookup (\d+) \(distinct tokens in the batch: (\d+)\), from the decoder (\d+) of (\d+)",
                     out)
    assert rows and rows.group(1) == rows.group(2) and rows.group(3) == rows.group(4) == "4096"
    passed = re.search(r"BertForPreTraining: (\d+) of (\d+) tensors ok", out)
    assert passed and passed.group(1) == passed.group(2)
    assert not re.search(r"\bFAIL\b", out)
    planted = re.search(r"with the buffered scatter: (\d+) of (\d+) tensors ok", out)
    assert planted and 0 < int(planted.group(1)) < int(planted.group(2))
    still_ok = out.split("with the buffered scatter")[1].split("real predictions")[0]
    assert "cls.predictions.transform.dense.weight" in still_ok and "word_embeddings" not in still_ok

    # 3. the losses: by hand = package; ln V + ln 2 at initialisation
    for head in ("MLM", "NSP"):
        by_hand = number(rf"{head} by hand ([0-9.]+)", out)
        assert abs(by_hand - number(rf"{head} by hand [0-9.]+, package ([0-9.]+)", out)) < 1e-5
    assert abs(number(r"at initialisation: MLM [0-9.]+, NSP [0-9.]+, total ([0-9.]+)", out) - ln_v2) < 0.1
    assert "with no prediction at all the loss is 0.0" in out

    # 4. bias correction: measured ratio = (1-b1^t)/sqrt(1-b2^t)
    block = out.split("(1-b1^t)/sqrt(1-b2^t)")[1].split("shipped run")[0]
    table = re.findall(r"^\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", block, flags=re.M)
    ratios = {int(t): (float(predicted), float(measured)) for t, predicted, measured, _, _ in table}
    assert sorted(ratios) == [1, 2, 5, 10, 100, 1000]
    for t, (predicted, measured) in ratios.items():
        assert abs(predicted - (1 - 0.9 ** t) / math.sqrt(1 - 0.999 ** t)) < 1e-3
        assert abs(measured - predicted) < 0.01 * predicted, (t, predicted, measured)

    # 5. the short run starts at ln V + ln 2 and learns
    assert abs(number(r"first steps' losses: ([0-9.]+)", out) - ln_v2) < 0.15
    block = out.split("held-out MLM  MLM acc  NSP acc")[1].split("saved")[0]
    evals = re.findall(r"^\s*\d+\s+[0-9.]+\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", block, flags=re.M)
    assert len(evals) >= 2
    assert float(evals[-1][0]) < float(evals[0][0]) < math.log(4096)
    assert float(evals[-1][0]) < math.log(4096) - 1

    # 6. the shipped checkpoint is compared when present, skipped with a note when absent
    shipped = re.search(r"^shipped data/pretrained/tiny \(8,000 steps\)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", out,
                        flags=re.M)
    if shipped:     # the pretrained model does far better than the 30-step run and the unigram baseline
        scratch = re.search(r"^from scratch, 30 steps \(section 5\)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", out,
                            flags=re.M)
        assert float(shipped.group(1)) < float(scratch.group(1)) - 2 and float(shipped.group(2)) > 0.4
        assert out.count("  shipped    ") == 4
    else:
        assert "note: no shipped checkpoint" in out
    assert out.count("  short run ") == 4
    for name in ("08_schedule.png", "08_pretraining.png"):
        figure = figures / name
        assert figure.is_file() and figure.stat().st_mtime >= started - 1, name
