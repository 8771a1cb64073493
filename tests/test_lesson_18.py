"""Lesson 18 runs top to bottom in quick mode and prints the numbers its prose promises."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "18_what_size_buys.py"


def test_lesson_18_runs_in_quick_mode(tmp_path):
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(tmp_path / "figures"), MPLBACKEND="Agg",
               OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(LESSON)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    # 1. the sizes: mini has about 8x tiny's encoder weights (2x the layers, 4x the weights per layer)
    sizes = {m.group(1): int(m.group(2).replace(",", ""))
             for m in re.finditer(r"^(tiny|mini)\s+\d+\s+\d+\s+\d+\s+\d+\s+[\d,]+\s+([\d,]+)", out, flags=re.M)}
    assert set(sizes) == {"tiny", "mini"} and 7 < sizes["mini"] / sizes["tiny"] < 9

    # 2. held-out: both far above the unigram (0.126) and majority (0.597) baselines, mini above tiny
    heldout = {m.group(1): (float(m.group(2)), float(m.group(3)), float(m.group(4)))
               for m in re.finditer(r"^(tiny|mini)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\(", out, flags=re.M)}
    assert set(heldout) == {"tiny", "mini"}
    assert heldout["tiny"][1] > 0.4 and heldout["mini"][1] > heldout["tiny"][1]
    assert heldout["mini"][0] < heldout["tiny"][0] and heldout["mini"][2] > 0.597

    # 3. live agreement: the nearest-noun baseline is perfect without attractors and fails with them
    rows = {m.group(1).strip(): [float(v) for v in m.group(2).split()]
            for m in re.finditer(r"^(tiny|mini|nearest noun)\s+([\d. ]+)$", out, flags=re.M)}
    assert set(rows) == {"tiny", "mini", "nearest noun"}
    assert rows["nearest noun"][0] == 1.0 and rows["nearest noun"][2] < 0.5

    # 4. the comparison printed is the shipped comparison.md, line for line
    shipped = (ROOT / "data" / "results" / "probing" / "comparison.md").read_text()
    assert shipped.strip() in out
