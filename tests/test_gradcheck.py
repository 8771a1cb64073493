"""Finite-difference gradient checks of every op and module (float64, batch > 1, several heads,
padding, dropout on with replayed masks). Test ids carry the check names of ``minibert gradcheck``."""
import numpy as np
import pytest

from minibert import functional as F
from minibert import checks, gradcheck, kernels


@pytest.mark.parametrize("name", list(checks.CHECKS))
def test_gradients_numpy_path(name):
    with kernels.using("numpy"):
        results = checks.run_check(name)
    assert results, "a check must compare at least one tensor"
    bad = [(r.tensor, r.max_rel_error) for r in results if not r.ok]
    assert not bad, f"{name}: gradients off by more than {gradcheck.TOLERANCE}: {bad}"


@pytest.mark.parametrize("name", ["layernorm", "linear_gelu", "softmax", "attention", "embedding",
                                  "cross_entropy_weighted", "BertLayer", "BertModel"])
def test_gradients_numba_path(name):
    with kernels.using("numba"):
        results = checks.run_check(name, seed=1)
    bad = [(r.tensor, r.max_rel_error) for r in results if not r.ok]
    assert not bad, f"{name} on Numba kernels: {bad}"


def test_checker_catches_a_wrong_backward():
    """A layer-norm backward that forgets the variance term must fail the check."""
    rng = np.random.default_rng(0)
    x, g, b = rng.standard_normal((2, 3, 5)), rng.standard_normal(5), rng.standard_normal(5)

    def wrong_backward(dy):
        xhat, rstd, gamma = F.layernorm_forward(x, g, b)[1]
        d = dy * gamma
        return {"x": rstd * (d - d.mean(-1, keepdims=True))}  # missing - xhat * mean(d * xhat)

    results = gradcheck.check_function("layernorm_wrong", lambda: F.layernorm_forward(x, g, b)[0],
                                       wrong_backward, {"x": x}, rng)
    assert results[0].max_rel_error > 1e-2


def test_checker_needs_float64():
    x = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match="float64"):
        gradcheck.compare("c", lambda: 0.0, {"x": x}, {"x": x}, np.random.default_rng(0))


def test_cli_table_lists_every_check(capsys):
    from minibert.cli import main

    assert main(["gradcheck", "--only", "linear,softmax,BertPooler", "--kernels", "numpy"]) == 0
    out = capsys.readouterr().out
    for name in ("linear", "softmax", "BertPooler", "max rel error"):
        assert name in out
    assert main(["gradcheck", "--only", "nonsense"]) == 1
