"""Lesson 17 runs top to bottom in quick mode and prints the numbers its prose promises; its last
section runs `mpiexec -n 2` when the mpi extra is installed and says how to install it otherwise."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "17_data_parallelism.py"


def have_mpi() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return bool(shutil.which("mpiexec", path=str(Path(sys.executable).parent))
                or shutil.which("mpiexec"))


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"pattern {pattern!r} not found in the lesson's output:\n{text[-2000:]}"
    return float(match.group(1))


def test_lesson_17_runs_in_quick_mode(tmp_path):
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(tmp_path / "figures"),
               MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(LESSON)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    # 1. the plain average of the shards' own gradients is another gradient; the renormalised sum
    # is the big batch's (float64: exact; float32: rounding)
    assert number(r"plain average of the shards' own gradients: relative error ([0-9.e+-]+)",
                  out) > 1e-3
    assert number(r"after rescaling: max difference ([0-9.e+-]+)", out) < 1e-6
    assert number(r"float32: sum of renormalised shard gradients vs big batch: relative error "
                  r"([0-9.e+-]+)", out) < 1e-5
    assert number(r"float64: sum of renormalised shard gradients vs big batch: relative error "
                  r"([0-9.e+-]+)", out) < 1e-12
    # 2. the ring: every rank holds the sum, and sends 2(N-1)/N of the buffer
    rings = re.findall(r"N=(\d+): every rank has the sum: (\w+), identical copies: (\w+); "
                       r"bytes sent per rank ([0-9.]+) S", out)
    assert len(rings) == 4, out[-3000:]
    for n, exact, same, sent in rings:
        assert exact == same == "True" and abs(float(sent) - 2 * (int(n) - 1) / int(n)) < 1e-3
    # 3. the cost model: BERT-base's bandwidth term approaches 2 S / beta = 704 ms on 10 Gb/s
    assert re.search(r"BERT-base\s+110,000,000\s+440\.0\s+352\.06\s+528\.18\s+660\.90\s+696\.78",
                     out), out[-3000:]
    # 4. the noise falls with the batch; the learning-rate table
    noise = [number(rf"b = {b:2}: E\|g_b - G\|\^2 = ([0-9.]+)", out) for b in (4, 16)]
    assert noise[1] < noise[0]
    assert re.search(r"\n\s+4\s+128\s+2000\s+200\s+4\.0e-03\s+2\.0e-03", out), out[-3000:]
    # 5. two ranks reproduce one process (dropout off); the command runs on two ranks
    if have_mpi():
        assert number(r"max \|loss difference\| over \d+ steps: ([0-9.e+-]+)", out) < 1e-4
        assert number(r"max \|weight difference\| after them: ([0-9.e+-]+)", out) < 1e-4
        assert "$ mpiexec -n 2 minibert pretrain" in out, out[-3000:]
        written = re.search(r"files written: (\[.*\])", out).group(1)
        assert all(name in written for name in ("checkpoint-000006", "metrics.jsonl", "latest"))
        assert (tmp_path / "figures" / "17_two_ranks.png").stat().st_size > 0
        # 6. two workers in one process are the two ranks, to the bit
        assert re.search(r"2 workers against 2 ranks, dropout on, 6 steps: max \|loss difference\| "
                         r"0\.0e\+00; identical weights: True", out), out[-3000:]
    else:
        assert "mpi4py or mpiexec is not installed" in out and 'pip install "minibert[mpi]"' in out
        assert "this compares the run with section 5's `mpiexec -n 2` run" in out
    assert "$ minibert pretrain ... --workers 2" in out
