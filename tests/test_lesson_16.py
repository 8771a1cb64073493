"""Lesson 16 runs top to bottom in quick mode and prints what its prose promises: every diagnostic
passes clean and fails with its bug, and the symptoms it discusses are in the output."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "16_debugging.py"


def test_lesson_16_runs_in_quick_mode(tmp_path):
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(tmp_path), MPLBACKEND="Agg",
               OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(LESSON)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    # 1. every diagnostic: pass clean, FAIL with its bug
    rows = re.findall(r"^(\w+)\s+.+?\s+(pass|FAIL)\s+(pass|FAIL)\s*$", out, flags=re.M)
    assert len(rows) == 9, out[:3000]
    assert all(clean == "pass" and planted == "FAIL" for _, clean, planted in rows), rows

    # 2. the short runs: five rows; the swallowed label shows an NSP loss below the clean run's
    table = out.split("held-out MLM")[1].split("figure:")[0]
    runs = {m[0]: [float(x) for x in m[1:]] for m in re.findall(
        r"^(\w+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+) \|\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$",
        table, flags=re.M)}
    assert set(runs) == {"clean", "nsp_ignore_index", "nsp_same_document", "mlm_unmasked_labels",
                         "tied_by_assignment"}
    assert runs["nsp_ignore_index"][1] < runs["clean"][1]
    assert runs["tied_by_assignment"][0] > runs["clean"][0]
    assert (tmp_path / "16_symptoms.png").stat().st_size > 0

    # loss at initialisation and one overfit batch, clean and with the swallowed label
    assert re.search(r"loss at initialisation: FAIL .* every label 0 0\.000", out)
    accuracies = re.findall(r"overfit one batch: (pass|FAIL) .*NSP accuracy ([0-9.]+)", out)
    assert accuracies == [("pass", "1.00"), ("FAIL", "0.50")], accuracies

    # 3. the shipped model: the bugs change the numbers, "clean again" equals the first row
    def row(label):
        match = re.search(rf"^{re.escape(label)}\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", out, flags=re.M)
        assert match, label
        return tuple(float(x) for x in match.groups())
    first = row("clean, batches of 32")
    assert row("clean again (every bug removed)") == first == row("clean, batches of 4")
    assert row("position_ids_restart")[1] < first[1] - 0.1
    assert row("no_sqrt_scale")[0] > first[0]
    assert row("dropout_at_eval, first evaluation") != row("dropout_at_eval, second evaluation")
    assert "with the bug, the gradient check: gradient check: pass" in out

    # 4. the update ratio follows (1 - b1^t) / sqrt(1 - b2^t)
    steps = re.findall(r"^\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", out, flags=re.M)
    assert [int(s[0]) for s in steps] == [1, 2, 10, 100, 1000]
    for t, clean, buggy, ratio, formula in steps:
        t = int(t)
        assert abs(float(formula) - (1 - 0.9 ** t) / math.sqrt(1 - 0.999 ** t)) < 1e-3
        assert abs(float(ratio) - float(formula)) < 0.01 * float(formula)
    assert steps[0][1] == "1.000"
