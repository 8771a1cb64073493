"""Lesson 07 runs top to bottom in quick mode and prints the numbers its prose promises."""
import os
import re
import subprocess
import sys
from pathlib import Path

LESSON = Path(__file__).resolve().parent.parent / "lessons" / "07_pretraining_data.py"


def test_lesson_07_runs_in_quick_mode(tmp_path):
    figures = tmp_path / "figures"      # MINIBERT_FIGURES: PNGs never go into the repository
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(figures), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(LESSON)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # Masks are shown as "seen(answer)"; at least one [MASK] and the three kinds of NSP/MLM output appear.
    assert re.search(r"\[MASK\]\(\S+\)", out)
    assert "label 0 (IsNext)" in out and "label 1 (random B)" in out
    rate = float(re.search(r"predicted: [\d,]+ of [\d,]+ tokens = ([\d.]+)", out).group(1))
    assert abs(rate - 0.15) < 0.01
    shares = dict(re.findall(r"(\[MASK\]|kept|random) ([\d.]+)", out.split("of the predictions:")[1].split("\n")[0]))
    assert abs(float(shares["[MASK]"]) - 0.8) < 0.03
    assert abs(float(shares["kept"]) - 0.1) < 0.03 and abs(float(shares["random"]) - 0.1) < 0.03
    nsp = float(re.search(r"label 1 \(random B\) in ([\d.]+)", out).group(1))
    assert 0.5 < nsp < 0.7
    assert re.search(r"whole word: 0 partly masked words", out)
    assert int(re.search(r"per piece: (\d+) partly masked words", out).group(1)) > 0
    assert "next_sentence_labels   int32    (8,)" in out
    assert (figures / "07_lengths.png").is_file()
