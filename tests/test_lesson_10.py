"""Lesson 10 runs top to bottom in quick mode and prints the numbers its prose promises."""
import os
import re
import subprocess
import sys
from pathlib import Path

LESSON = Path(__file__).resolve().parent.parent / "lessons" / "10_representations_and_attention.py"


def accuracies(out, task, model):
    m = re.search(rf"^layers {task}\s+{model}\s+accuracy ([\d. ]+?)(?: control|\s+\()", out, flags=re.M)
    return [float(v) for v in m.group(1).split()]


def test_lesson_10_runs_in_quick_mode(tmp_path):
    figures = tmp_path / "figures"      # MINIBERT_FIGURES: PNGs never go into the repository
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(figures), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(LESSON)], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "(equal: True)" in out                          # the hand-written probe is the package's
    pos, pos_random = accuracies(out, "pos", "pretrained"), accuracies(out, "pos", "random init")
    assert len(pos) == 3 and min(pos) > 0.85 and max(pos) > max(pos_random)
    selectivity = [float(v) for v in re.findall(r"^POS layer \d: .*selectivity ([+-][\d.]+)", out, flags=re.M)]
    assert len(selectivity) == 3 and min(selectivity) > 0.1
    # lexical and positional features are decodable everywhere, for both models
    assert accuracies(out, "npi", "random init") == [1.0, 1.0, 1.0]
    assert accuracies(out, "subject_number", "pretrained")[0] < 0.65     # nothing at the mask at layer 0
    # last column of the head table: entropy, pretrained / random; random attention is close to uniform
    entropy = [(float(a), float(b)) for a, b in re.findall(r"^L\d H\d .*?([\d.]+) /\s*([\d.]+)\s*$", out, flags=re.M)]
    assert len(entropy) == 4, out[-2000:]
    assert min(b for _, b in entropy) > 2.0
    assert sum(a for a, _ in entropy) < sum(b for _, b in entropy)
    assert re.search(r"dependency det\s+n=\s*\d+\s+best head", out)
    uuas = [float(v) for v in re.search(r"^structural pretrained\s+UUAS ([\d. ]+?)\s+Spearman", out, flags=re.M).group(1).split()]
    chain = float(re.search(r"linear chain baseline UUAS ([\d.]+)", out).group(1))
    assert len(uuas) == 3 and max(uuas) > chain
    for name in ("10_layers.png", "10_selectivity.png", "10_structural.png", "10_head_stats.png", "10_dependencies.png",
                 "10_attention_map.png"):
        assert (figures / name).is_file()
