"""Lesson 09 runs top to bottom in quick mode and prints the numbers its prose promises."""
import os
import re
import subprocess
import sys
from pathlib import Path

LESSON = Path(__file__).resolve().parent.parent / "lessons" / "09_cloze_probes.py"


def test_lesson_09_runs_in_quick_mode(tmp_path):
    figures = tmp_path / "figures"      # MINIBERT_FIGURES: PNGs never go into the repository
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(figures), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(LESSON)], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # The hand-made cloze question and the package agree, and so do the two pseudo-log-likelihoods.
    assert "(same number: True)" in out
    hand = float(re.search(r"^whether in  ever .*?PLL\s+(-[\d.]+)", out, flags=re.M).group(1))
    package = float(re.search(r"pseudo_log_likelihood: (-[\d.]+)", out).group(1))
    assert abs(hand - package) < 1e-2
    # Agreement table: the random model has no idea (about 0.5 overall); the nearest-noun baseline is
    # perfect without attractors and poor with two or more.
    rows = {m.group(1).strip(): [float(v) for v in m.group(2).split()]
            for m in re.finditer(r"^(pretrained|embedding layer|random init|nearest noun)\s+([\d. ]+)$", out, flags=re.M)}
    assert set(rows) == {"pretrained", "embedding layer", "random init", "nearest noun"}
    assert 0.35 < rows["random init"][-1] < 0.65
    assert rows["nearest noun"][0] == 1.0 and rows["nearest noun"][2] < 0.5
    for probe in ("npi pretrained", "negation random init", "facts taxonomy_kind", "malformed random init"):
        assert probe in out
    same_top = float(re.search(r"malformed random init .*?same top: shuffled ([\d.]+)", out).group(1))
    assert same_top > 0.8          # a context-blind model's prediction barely moves when words are shuffled
    for name in ("09_agreement.png", "09_npi.png", "09_facts.png"):
        assert (figures / name).is_file()
