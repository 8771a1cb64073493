"""Lessons 01-05 run top to bottom in quick mode and print the numbers their "What you should see" promises.

Each lesson runs in a subprocess (``sys.executable``, cwd = repository root, ``MINIBERT_QUICK=1``). Besides
the exit code, every test parses the printed numbers it relies on, so a lesson whose prose and output
drift apart fails here. The only gradient checks allowed to FAIL are the deliberate bugs each lesson plants.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"


def run_lesson(name: str, figures: Path) -> str:
    """The lesson's output; its figures go to ``figures`` (a temporary folder), never to lessons/figures."""
    # One BLAS thread: on a 2-core machine shared with other test processes, OpenBLAS's spinning threads
    # can make the lessons' small matmuls 100x slower. Only speed depends on it, and no test checks speed.
    env = dict(os.environ, MINIBERT_QUICK="1", MINIBERT_FIGURES=str(figures), MPLBACKEND="Agg",
               OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(LESSONS / name)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def number(pattern: str, text: str) -> float:
    """The first number captured by ``pattern`` in ``text``."""
    match = re.search(pattern, text)
    assert match, f"pattern {pattern!r} not found in the lesson's output:\n{text[-2000:]}"
    return float(match.group(1))


def check_rows(text: str) -> list[tuple[str, str, float, str]]:
    """(check, tensor, max rel error, ok|FAIL) for every row of every gradient-check table printed."""
    rows = re.findall(r"^(.+?)\s{2,}(\S+)\s+\d+/\d+\s+([0-9.e+-]+)\s+(ok|FAIL)\s*$", text, flags=re.M)
    return [(c.strip(), t, float(e), s) for c, t, e, s in rows]


def assert_only_planted_failures(text: str, planted: tuple[str, ...] = ()):
    rows = check_rows(text)
    assert rows, "no gradient-check table found"
    unexpected = [r for r in rows if r[3] == "FAIL" and r[0] not in planted]
    assert not unexpected, f"gradient checks failed: {unexpected}"
    for r in rows:                         # the table's verdict agrees with the 1e-6 tolerance
        assert (r[2] <= 1e-6) == (r[3] == "ok"), r
    return rows


def test_lesson_01_linear_and_gradcheck(tmp_path):
    out = run_lesson("01_linear_and_gradcheck.py", tmp_path)
    rows = assert_only_planted_failures(out, planted=("W used twice, =",))
    # The finite-difference table: central differences in float64 are best near h = 1e-5, far better than
    # forward differences, and float32 cannot get anywhere close.
    assert number(r"best central float64: h = (\S+),", out) in (1e-4, 1e-5, 1e-6)
    central64 = number(r"best central float64: h = \S+, relative error (\S+)", out)
    forward64 = number(r"best forward float64: h = \S+, relative error (\S+)", out)
    central32 = number(r"best central float32: h = \S+, relative error (\S+)", out)
    assert central64 < 1e-9 and forward64 > 10 * central64 and central32 > 1e-7
    # The reversed-rows bug hides from an all-ones upstream gradient and not from a random one.
    assert number(r"upstream = ones:\s+max rel error of W = (\S+)", out) < 1e-6
    assert number(r"upstream = random: max rel error of W = (\S+)", out) > 0.1
    assert any(r[0] == "W used twice, =" and r[3] == "FAIL" for r in rows)
    assert any(r[0] == "W used twice, +=" and r[1] == "W" and r[3] == "ok" for r in rows)
    for name in ("y", "dx", "dW", "db"):
        assert number(rf"max \|package - by hand\| for {name}\s*: (\S+)", out) == 0.0
    assert "gradient checks need float64 tensors" in out
    assert {r[1] for r in rows if r[0] == "linear"} == {"x", "weight", "bias"}
    assert (tmp_path / "01_finite_differences.png").is_file()


def test_lesson_02_softmax_cross_entropy_gelu(tmp_path):
    out = run_lesson("02_softmax_cross_entropy_gelu.py", tmp_path)
    rows = assert_only_planted_failures(out)
    assert "naive : [nan nan nan]" in out
    assert "stable: [0.09   0.2447 0.6652]" in out
    assert number(r"max \|J @ ones\| = (\S+)", out) < 1e-15
    assert "-log(softmax(z)[y]) = inf" in out
    assert number(r"logsumexp\(z\) - z\[y\] = (\S+)", out) == 800.0
    assert number(r"\(ratio (\S+) = 3 / \(3 \+ 1e-5\)\)", out) == pytest.approx(3 / (3 + 1e-5), abs=1e-8)
    assert number(r"largest \|gradient\| in the padding rows: (\S+)", out) == 0.0
    assert number(r"no predictions at all: loss (\S+) ,", out) == 0.0
    assert number(r"max \|exact - tanh\| on \[-5, 5\]: (\S+) at", out) == pytest.approx(4.73e-4, rel=0.01)
    assert number(r"max \|normal_cdf - math.erfc\| = (\S+),", out) < 1e-14
    assert "float32 in, float32 out: float32" in out
    checks = {r[0] for r in rows}
    assert checks >= {"softmax by hand", "cross-entropy by hand", "cross_entropy_weighted", "GELU by hand"}
    assert (tmp_path / "02_gelu.png").is_file()


def test_lesson_03_layernorm(tmp_path):
    out = run_lesson("03_layernorm.py", tmp_path)
    rows = assert_only_planted_failures(out, planted=("no mean term",))
    assert number(r"max \|J\^T dy - formula\| = (\S+)", out) < 1e-14
    assert {(r[1], r[3]) for r in rows if r[0] == "no mean term"} == {("x", "FAIL"), ("gamma", "ok"), ("beta", "ok")}
    assert all(r[3] == "ok" for r in rows if r[0] == "layernorm by hand")
    assert number(r"dx for dy = ones, gamma = 1: (\S+)", out) < 1e-14
    for name in ("y", "dx", "dgamma", "dbeta"):
        assert number(rf"max \|package - by hand\| for {name}\s*: (\S+)", out) == 0.0
    # eps matters only for rows with a small variance
    eps_diffs = [float(x) for x in re.findall(r"max \|LN_1e-12 - LN_1e-5\| = (\S+)", out)]
    assert len(eps_diffs) == 3 and eps_diffs[0] < 1e-4 < eps_diffs[1] < eps_diffs[2]


def test_lesson_04_attention(tmp_path):
    out = run_lesson("04_attention.py", tmp_path)
    rows = assert_only_planted_failures(out)
    assert number(r"single head:\s+max \|diff\| = (\S+)", out) < 1e-14
    assert number(r"D = 64: std of q.k =\s+(\S+),", out) == pytest.approx(8.0, rel=0.1)
    assert number(r"D = 64: std of q.k =\s+\S+,\s+std of q.k / sqrt\(D\) = (\S+)", out) == pytest.approx(1.0, rel=0.1)
    assert number(r"largest attention on a padded key: (\S+)", out) == 0.0
    assert number(r"changing the padding: max \|diff\| = (\S+)", out) == 0.0
    assert number(r"padded keys: max \|dK\| = (\S+)", out) == 0.0
    assert number(r"BertSelfAttention vs by hand: output (\S+),", out) < 1e-14
    # The key bias: zero gradient up to rounding, while the query and value biases are of order 1.
    assert number(r"max \|d key.bias\s*\| = (\S+)", out) < 1e-12
    assert number(r"max \|d query.bias\s*\| = (\S+)", out) > 1e-2
    assert number(r"adding 5 to every key bias: (\S+)", out) < 1e-12
    assert ("BertSelfAttention", "key.bias", 0.0, "ok") in rows
    # "What you should see" states bounds for the float64 rounding, not digits that vary across CPUs
    assert max(r[2] for r in rows) < 1e-7
    assert (tmp_path / "04_attention_padding.png").is_file()


def test_lesson_05_encoder_layer(tmp_path):
    out = run_lesson("05_encoder_layer.py", tmp_path)
    rows = assert_only_planted_failures(out, planted=("no residual grad",))
    assert number(r"max \|module - by hand\| = (\S+)", out) < 1e-14
    assert number(r"module vs by hand: max \|dx diff\| = (\S+),", out) < 1e-13
    assert sum(r[0] == "layer by hand" and r[3] == "ok" for r in rows) == 17
    failed = {r[1] for r in rows if r[0] == "no residual grad"}
    assert "x" in failed and not any(name.startswith(("intermediate", "output.")) for name in failed)
    assert "7 of 17 tensors still pass" in out
    assert sum(r[0] == "BertLayer" and r[3] == "ok" for r in rows) == 17
    assert re.search(r"BertModel: (\d+) of \1 tensors ok", out)
    assert "hidden_states 3 x (2, 5, 16)" in out
    assert number(r"numba vs numpy \(float32\): max \|output diff\| = (\S+),", out) < 1e-4
    assert number(r"relative to that gradient's largest entry = (\S+)", out) < 1e-4
    assert "Numba kernels (float64): 17 of 17 ok" in out
    assert max(r[2] for r in rows if r[3] == "ok") < 2e-7              # the bound the lesson states
    assert number(r"BertModel: \d+ of \d+ tensors ok, worst (\S+)", out) < 2e-7
    assert number(r"on the Numba kernels \(float64\): 17 of 17 ok, worst (\S+)", out) < 2e-7
    # Timings are machine-dependent: only check that every ratio was measured and printed.
    assert len(re.findall(r"^(softmax|layernorm|bias\+GELU)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+x\s+[\d.]+x$",
                          out, flags=re.M)) == 3
    assert len(re.findall(r"numba x\d+\s+[\d.]+ ms\s+speed-up [\d.]+x", out)) == 2


def untracked_files() -> set[str]:
    """Every file git does not track (ignored ones included), bytecode caches left out."""
    proc = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {line[3:] for line in proc.stdout.splitlines()
            if line[:2] in ("??", "!!") and "__pycache__" not in line and ".pytest_cache" not in line}


def test_a_lesson_run_by_the_tests_writes_nothing_into_the_repository(tmp_path):
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: nothing to compare with")
    before = untracked_files()
    run_lesson("01_linear_and_gradcheck.py", tmp_path)
    assert (tmp_path / "01_finite_differences.png").is_file()
    assert untracked_files() - before == set()


def test_lesson_setup_reads_quick_mode_and_the_figures_folder(tmp_path, monkeypatch):
    from minibert import lessons
    for value, quick in (("", False), ("0", False), ("1", True), ("yes", True)):
        monkeypatch.setenv("MINIBERT_QUICK", value)
        assert lessons.quick() is quick
    monkeypatch.setenv("MINIBERT_FIGURES", str(tmp_path / "chosen"))
    assert lessons.figures_dir(LESSONS / "01_linear_and_gradcheck.py") == tmp_path / "chosen"
    assert (tmp_path / "chosen").is_dir()
    monkeypatch.delenv("MINIBERT_FIGURES")
    lesson = tmp_path / "lessons" / "01.py"          # a learner's run: figures/ beside the lesson file
    lesson.parent.mkdir()
    assert lessons.figures_dir(lesson) == tmp_path / "lessons" / "figures"
    monkeypatch.chdir(tmp_path)                       # a notebook has no __file__: figures/ where it runs
    assert lessons.figures_dir(None) == Path("figures") and (tmp_path / "figures").is_dir()
