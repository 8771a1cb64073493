"""Lesson 15 runs in quick mode and prints the numbers its "What you should see" promises (needs torch and
transformers; skipped without them), and without them it explains and exits 0."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

LESSON = Path(__file__).resolve().parent.parent / "lessons" / "15_real_checkpoints.py"
ENV = dict(os.environ, MINIBERT_QUICK="1", MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
SKIP_REASON = 'lesson 15 compares with PyTorch: pip install "torch==2.13.0" && pip install ".[parity]"'


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"pattern {pattern!r} not found in the lesson's output:\n{text[-2000:]}"
    return float(match.group(1))


def test_lesson_15_runs_in_quick_mode(tmp_path):
    figures = tmp_path / "figures"      # MINIBERT_FIGURES: PNGs never go into the repository
    pytest.importorskip("torch", reason=f"torch is not installed: {SKIP_REASON}")
    pytest.importorskip("transformers", reason=f"transformers is not installed: {SKIP_REASON}")
    env = dict(ENV, MINIBERT_FIGURES=str(figures))
    proc = subprocess.run([sys.executable, str(LESSON)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "cls.seq_relationship.weight by hand == torch's: True" in out
    assert "only in transformers' state dict: ['cls.predictions.decoder.bias', 'cls.predictions.decoder.weight']" in out
    assert "shapes equal: True" in out
    outputs = [float(x) for x in re.findall(r"max \|minibert - transformers\| for .+?: (\S+)$", out, flags=re.M)]
    assert len(outputs) == 3 + 3 and max(outputs) < 1e-5          # 3 hidden states, pooled, MLM, NSP
    match = re.search(r"gradients: (\d+) of (\d+) tensors agree within 1e-4 relative; worst (\S+)", out)
    assert match and match.group(1) == match.group(2) == "44" and float(match.group(3)) < 1e-4
    assert number(r"key biases: largest gradient entry on either side (\S+)", out) < 1e-7
    assert "rows of the word-embedding gradient that differ: [0]" in out
    assert "bfloat16: upcast 46 tensors to float32, stored as {'BF16'}" in out
    assert number(r"largest relative change of a weight: (\S+)", out) <= 2 ** -8
    for line in ("missing keys (1): bert.pooler.dense.bias", "unexpected keys (1): bert.encoder.layer.2.output.dense.bias",
                 "shape mismatch (1): bert.embeddings.position_embeddings.weight"):
        assert line in out
    assert "never unpickles" in out and "7 head tensors kept their initialisation" in out
    assert "{'missing_keys': set(), 'unexpected_keys': set(), 'mismatched_keys': set()}" in out
    assert number(r"max \|difference\| over 46 tensors: (\S+)", out) == 0.0
    assert number(r"training: max \|loss difference\| over 10 steps: (\S+)", out) < 1e-5
    assert (figures / "15_parity.png").is_file()


def test_lesson_15_without_torch_explains_and_exits_0(tmp_path):
    """``sys.modules["torch"] = None`` makes ``import torch`` fail, as on a machine without it."""
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
            f"runpy.run_path({str(LESSON)!r}, run_name='__main__')")
    env = dict(ENV, MINIBERT_FIGURES=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Lesson 15 needs PyTorch and Hugging Face transformers" in proc.stdout
    assert "pip install" in proc.stdout and "tests/test_parity.py" in proc.stdout
