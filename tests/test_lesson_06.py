"""Lesson 06 runs top to bottom in quick mode and prints the numbers its prose promises."""
import os
import re
import subprocess
import sys
from pathlib import Path

LESSON = Path(__file__).resolve().parent.parent / "lessons" / "06_tokenization.py"


def test_lesson_06_runs_in_quick_mode(tmp_path):
    figures = tmp_path / "figures"      # MINIBERT_FIGURES: PNGs never go into the repository
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(figures), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(LESSON)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # The hand-made WordPiece trace and the package agree on the classic example.
    assert "['un', '##aff', '##able']" in out
    # The size table: pieces per held-out word fall from letter-by-letter to about one, never [UNK].
    rows = [tuple(float(x) for x in m) for m in
            re.findall(r"^\s*(\d+)\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)%$", out, flags=re.M)]
    assert len(rows) >= 3, out[-2000:]
    sizes, pieces = [r[0] for r in rows], [r[1] for r in rows]
    assert sizes == sorted(sizes) and pieces == sorted(pieces, reverse=True)
    assert pieces[0] > 2.0 and pieces[-1] < 0.5 * pieces[0]
    assert all(r[3] == 0.0 for r in rows)  # the alphabet covers every held-out character
    assert (figures / "06_pieces_per_word.png").is_file()
