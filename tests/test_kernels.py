"""The Numba kernels against the NumPy reference pairs, and the backend switch.

Every kernel pair is run on the same random inputs through ``minibert.functional`` (the reference) and
``minibert.kernels.numba_kernels``; outputs and EVERY gradient (input gradients and the parameter
gradients accumulated into buffers that start NON-zero) must agree.

Agreement criterion: max |numba - numpy| <= rtol * max |numpy|, i.e. relative to the largest magnitude
of the expected array, with rtol 1e-10 in float64 and 1e-5 in float32. An elementwise relative test
would demand accuracy that neither side has for entries that are tiny next to the rest of the array
(a probability of 1e-30 next to 0.9, a gradient that cancels to ~0).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from minibert import functional as F
from minibert import kernels

# numba is a required dependency (`pip install .` brings it); a bare checkout without it can still collect
# the other tests. The model and gradient-check tests that run on the Numba path fail loudly without it.
pytest.importorskip("numba", reason="numba is not installed: `pip install .` installs it")
from minibert.kernels import numba_kernels as K  # noqa: E402

RTOL = {np.float64: 1e-10, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]


def assert_close(actual, expected, dtype):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    assert np.all(np.isfinite(actual))
    scale = max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(dtype).tiny)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    assert err <= RTOL[dtype] * scale, f"max abs error {err:.3g} > {RTOL[dtype]:g} * max |expected| {scale:.3g}"


def randn(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True, params=["serial", "parallel"])
def compilation(request, monkeypatch):
    """Every test runs on both compilations of each kernel (a call with at most ``SERIAL_UP_TO``
    elements takes the serial one): here all calls take one, then all the other."""
    monkeypatch.setattr(K, "SERIAL_UP_TO", 1 << 62 if request.param == "serial" else -1)
    return request.param


def test_helpers_can_fail():
    """The criterion rejects a wrong answer and a wrong dtype (the tests below are not vacuous)."""
    x = np.linspace(-1, 1, 37)
    with pytest.raises(AssertionError):
        assert_close(x * (1 + 1e-8), x, np.float64)
    with pytest.raises(AssertionError):
        assert_close(x.astype(np.float32).astype(np.float64), x, np.float32)


# ----------------------------------------------------------------------------------------------
# Softmax
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 13, 13), (2, 13), (2, 3, 2, 5, 13)])
def test_softmax_with_mask(rng, dtype, shape):
    x = randn(rng, shape, dtype, 3.0)
    B, N = shape[0], shape[-1]
    mask_bias = np.zeros((B, N), dtype)
    mask_bias[0, 9:] = F.MASK_BIAS          # padding at the end of batch element 0
    mask_bias[1, :] = F.MASK_BIAS           # batch element 1 is padding only: its rows must stay finite
    p_ref, cache_ref = F.softmax_forward(x, mask_bias)
    p, cache = K.softmax_forward(x, mask_bias)
    assert_close(p, p_ref, dtype)
    assert np.all(p[0, ..., 9:] == 0)       # exp(-10000) is exactly 0 in both dtypes
    dp = randn(rng, shape, dtype)
    assert_close(K.softmax_backward(dp, cache), F.softmax_backward(dp, cache_ref), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(13,), (3, 37), (2, 3, 7)])
def test_softmax_without_mask(rng, dtype, shape):
    x = randn(rng, shape, dtype, 2.0)
    p_ref, _ = F.softmax_forward(x)
    p, cache = K.softmax_forward(x)
    assert_close(p, p_ref, dtype)
    dp = randn(rng, shape, dtype)
    assert_close(K.softmax_backward(dp, cache), F.softmax_backward(dp, p_ref), dtype)


def test_softmax_backward_float32_peaked_rows(rng):
    """With peaked rows (p_k near 1), dx_k = p_k (dp_k - sum_j dp_j p_j) cancels; the reference's float32
    sum then costs it ~1e-3 of max |dx|, more than the 1e-5 agreement tolerance. The kernel sums in
    float64, so it is compared here with the float64 evaluation of the same float32 inputs instead."""
    x, dp = randn(rng, (50, 13), np.float32, 5.0), randn(rng, (50, 13), np.float32)
    p, cache = K.softmax_forward(x)
    truth = F.softmax_backward(dp.astype(np.float64), p.astype(np.float64)).astype(np.float32)
    assert_close(K.softmax_backward(dp, cache), truth, np.float32)


def test_softmax_broadcast_mask_and_non_contiguous_input(rng):
    x = randn(rng, (2, 13, 3, 26), np.float64).transpose(0, 2, 1, 3)[..., ::2]    # (2, 3, 13, 13), strided
    mask_bias = np.where(rng.random((1, 13)) < 0.3, F.MASK_BIAS, 0.0)             # one mask for all of B
    assert_close(K.softmax_forward(x, mask_bias)[0], F.softmax_forward(x, mask_bias)[0], np.float64)
    with pytest.raises(ValueError, match="mask_bias must have shape"):
        K.softmax_forward(x, np.zeros((3, 13)))


# ----------------------------------------------------------------------------------------------
# Layer norm
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37,), (13, 37), (2, 13, 37), (2, 3, 5, 37), (130, 37)])
def test_layernorm(rng, dtype, shape):
    H = shape[-1]
    x = randn(rng, shape, dtype, 2.0) + dtype(3)            # an offset mean: the two-pass variance matters
    gamma, beta = randn(rng, H, dtype), randn(rng, H, dtype)
    y_ref, cache_ref = F.layernorm_forward(x, gamma, beta)
    y, cache = K.layernorm_forward(x, gamma, beta)
    assert_close(y, y_ref, dtype)
    dy = randn(rng, shape, dtype)
    dgamma0, dbeta0 = randn(rng, H, dtype), randn(rng, H, dtype)   # non-zero: backward must ADD
    dgamma_ref, dbeta_ref = dgamma0.copy(), dbeta0.copy()
    dgamma, dbeta = dgamma0.copy(), dbeta0.copy()
    dx_ref = F.layernorm_backward(dy, cache_ref, dgamma_ref, dbeta_ref)
    dx = K.layernorm_backward(dy, cache, dgamma, dbeta)
    assert_close(dx, dx_ref, dtype)
    assert_close(dgamma, dgamma_ref, dtype)
    assert_close(dbeta, dbeta_ref, dtype)
    assert not np.allclose(dgamma - dgamma0, 0)   # something was added


def test_layernorm_eps_and_non_contiguous(rng):
    x = randn(rng, (37, 2, 13), np.float64).transpose(1, 2, 0)      # (2, 13, 37), not contiguous
    x[0, 0] = 5.0                                                    # a constant row: var = 0, eps decides
    gamma, beta = randn(rng, 37, np.float64), randn(rng, 37, np.float64)
    for eps in (1e-12, 1e-5):
        y_ref, cache_ref = F.layernorm_forward(x, gamma, beta, eps)
        y, cache = K.layernorm_forward(x, gamma, beta, eps)
        assert_close(y, y_ref, np.float64)
        dy = randn(rng, (13, 37, 2), np.float64).transpose(2, 0, 1)
        dgamma, dbeta = np.ones((2, 37))[0], np.ones(37)
        dgamma_ref, dbeta_ref = dgamma.copy(), dbeta.copy()
        assert_close(K.layernorm_backward(dy, cache, dgamma, dbeta),
                     F.layernorm_backward(dy, cache_ref, dgamma_ref, dbeta_ref), np.float64)
        assert_close(dgamma, dgamma_ref, np.float64)
        assert_close(dbeta, dbeta_ref, np.float64)


# ----------------------------------------------------------------------------------------------
# Bias + GELU
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("shape", [(37,), (2, 13, 37), (2, 3, 5, 37), (100, 37)])
def test_bias_gelu(rng, dtype, approximate, shape):
    I = shape[-1]
    x = randn(rng, shape, dtype, 3.0)
    x.reshape(-1)[:6] = [-40.0, -12.0, -6.0, 0.0, 6.0, 40.0]  # both tails (Phi underflows, saturates)
    bias = randn(rng, I, dtype, 0.5)
    bias[:6] = 0
    y_ref, cache_ref = F.bias_gelu_forward(x, bias, approximate)
    y, cache = K.bias_gelu_forward(x, bias, approximate)
    assert_close(y, y_ref, dtype)
    dy = randn(rng, shape, dtype)
    dbias0 = randn(rng, I, dtype)
    dbias_ref, dbias = dbias0.copy(), dbias0.copy()
    assert_close(K.bias_gelu_backward(dy, cache, dbias), F.bias_gelu_backward(dy, cache_ref, dbias_ref), dtype)
    assert_close(dbias, dbias_ref, dtype)
    assert not np.allclose(dbias - dbias0, 0)


def test_exact_gelu_matches_math_erfc():
    """The kernel's vectorised Phi against the C library's erfc, elementwise and relative: x Phi(x) with
    Phi(x) = erfc(-x / sqrt 2) / 2, from deep in the left tail (Phi ~ 1e-300) to the right one."""
    import math
    x = np.concatenate([np.linspace(-37, 37, 2001), np.geomspace(1e-8, 1, 50), -np.geomspace(1e-8, 1, 50)])
    expected = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    y, _ = K.bias_gelu_forward(x[:, None], np.zeros(1))
    nonzero = expected != 0
    assert np.all(y[~nonzero, 0] == 0) or np.max(np.abs(y[~nonzero, 0])) < 1e-300
    rel = np.abs(y[nonzero, 0] - expected[nonzero]) / np.abs(expected[nonzero])
    assert rel.max() < 1e-12        # ~1e-15 near 0, ~3e-13 at x = -37 (the rounding of x^2 / 2 in exp)


def test_compiling_the_exact_gelu_warns_nothing(tmp_path):
    """A first compilation (an empty on-disk cache, as on a fresh install) of the kernel that inlines
    ``_exp`` into ``_normal_cdf`` into a loop: Numba's SSA check used to warn there, asking the user to
    report a Numba bug. In a fresh process, on this test's compilation (serial or parallel)."""
    code = ("import numpy as np; from minibert.kernels import numba_kernels as K\n"
            f"K.SERIAL_UP_TO = {K.SERIAL_UP_TO}\n"
            "for dt in (np.float32, np.float64):\n"
            "    y, _ = K.bias_gelu_forward(np.linspace(-9, 9, 64, dtype=dt).reshape(4, 16), np.zeros(16, dt))\n"
            "    assert np.isfinite(y).all()\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-W", "error::numba.core.errors.NumbaWarning", "-c", code],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr[-2000:]


def test_bias_gelu_non_contiguous(rng):
    x = randn(rng, (37, 13), np.float64).T               # (13, 37) strided
    bias = randn(rng, 74, np.float64)[::2]
    y_ref, cache_ref = F.bias_gelu_forward(x, bias)
    y, cache = K.bias_gelu_forward(x, bias)
    assert_close(y, y_ref, np.float64)
    dy = randn(rng, (37, 13), np.float64).T
    dbias_ref, dbias = np.ones(37), np.ones(37)
    assert_close(K.bias_gelu_backward(dy, cache, dbias), F.bias_gelu_backward(dy, cache_ref, dbias_ref), np.float64)
    assert_close(dbias, dbias_ref, np.float64)


# ----------------------------------------------------------------------------------------------
# Embedding scatter-add
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ids_shape", [(13,), (2, 13), (2, 3, 5)])
@pytest.mark.parametrize("H", [37, 130])        # 130: more than one column block, and a ragged last block
def test_embedding_backward(rng, dtype, ids_shape, H):
    V = 11
    ids = rng.integers(-V, V, ids_shape)         # repeats, and negative ids (NumPy indexing) too
    ids.reshape(-1)[:3] = 4                      # one id three times: the adds must all count
    dout = randn(rng, ids_shape + (H,), dtype)
    dweight0 = randn(rng, (V, H), dtype)
    dweight_ref, dweight = dweight0.copy(), dweight0.copy()
    assert F.embedding_backward(dout, ids, dweight_ref) is None
    assert K.embedding_backward(dout, ids, dweight) is None
    assert_close(dweight, dweight_ref, dtype)


def test_embedding_backward_layouts_and_errors(rng):
    ids = rng.integers(0, 11, (2, 13)).astype(np.int32)
    dout = randn(rng, (13, 2, 37), np.float64).transpose(1, 0, 2)
    dweight_ref = randn(rng, (37, 11), np.float64).T              # a non-contiguous buffer, still in place
    dweight = dweight_ref.copy(order="F")
    F.embedding_backward(dout, ids, dweight_ref)
    K.embedding_backward(dout, ids, dweight)
    assert_close(dweight, dweight_ref, np.float64)
    with pytest.raises(IndexError):
        K.embedding_backward(dout, ids + 11, dweight)
    with pytest.raises(ValueError, match="dout must have shape"):
        K.embedding_backward(dout[:, :5], ids, dweight)


# ----------------------------------------------------------------------------------------------
# Cross-entropy
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("N, C", [(13, 37), (1, 3), (40, 300)])
def test_cross_entropy(rng, dtype, weighted, N, C):
    logits = randn(rng, (N, C), dtype, 4.0)
    targets = rng.integers(0, C, N)
    weights = (rng.random(N) < 0.7).astype(dtype) if weighted else None
    loss_ref, cache_ref = F.cross_entropy_forward(logits, targets, weights)
    loss, cache = K.cross_entropy_forward(logits, targets, weights)
    assert np.asarray(loss).shape == ()
    assert_close(loss, loss_ref, dtype)
    for dloss in (1.0, dtype(0.7)):
        assert_close(K.cross_entropy_backward(dloss, cache), F.cross_entropy_backward(dloss, cache_ref), dtype)


@pytest.mark.parametrize("bad", ["low", "high", "shape", "weights"])
def test_cross_entropy_validation_matches_reference(rng, bad):
    logits = randn(rng, (5, 7), np.float64)
    targets, weights = rng.integers(0, 7, 5), None
    if bad == "low":
        targets[2] = -1
    elif bad == "high":
        targets[2] = 7
    elif bad == "shape":
        targets = targets[:4]
    else:
        weights = np.ones(4)
    with pytest.raises(ValueError) as ref_error:
        F.cross_entropy_forward(logits, targets, weights)
    with pytest.raises(ValueError) as numba_error:
        K.cross_entropy_forward(logits, targets, weights)
    assert str(numba_error.value) == str(ref_error.value)


def test_cross_entropy_empty():
    logits = np.zeros((0, 7), np.float32)
    loss, cache = K.cross_entropy_forward(logits, np.zeros(0, np.int64))
    assert loss == F.cross_entropy_forward(logits, np.zeros(0, np.int64))[0] == 0
    assert K.cross_entropy_backward(1.0, cache).shape == (0, 7)


# ----------------------------------------------------------------------------------------------
# The log-softmax's normaliser (float64)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R, C", [(13, 37), (1, 2), (40, 3000)])
def test_log_softmax_normaliser(rng, dtype, R, C):
    logits = randn(rng, (R, C), dtype, 8.0)
    logits[0, :2] = (80, -900)        # a dominant logit, and one whose exponential underflows to 0
    shift, log_total = K.log_softmax_normaliser(logits)
    ref_shift, ref_log_total = F.log_softmax_normaliser(logits)
    assert shift.dtype == log_total.dtype == np.float64 and log_total.shape == (R,)
    np.testing.assert_array_equal(shift, ref_shift)                  # the max: exact
    np.testing.assert_allclose(log_total, ref_log_total, rtol=0, atol=1e-13)
    probs = np.exp((logits.astype(np.float64) - shift[:, None]) - log_total[:, None])
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-13)
    assert log_total[0] == 0.0          # 1 + exp(-45 or less) + ... rounds to 1: the other terms vanish


def test_log_softmax_normaliser_edges():
    for module in (F, K):
        shift, log_total = module.log_softmax_normaliser(np.zeros((0, 5), np.float32))
        assert shift.shape == log_total.shape == (0,)
        assert module.log_softmax_normaliser(np.full((1, 4), 3.0))[1][0] == pytest.approx(np.log(4), rel=1e-15)
        with pytest.raises(ValueError, match=r"logits must have shape \(R, C\), got \(5,\)"):
            module.log_softmax_normaliser(np.zeros(5, np.float32))


def _every_kernel_once(rng, dtype):
    """Each public Numba function on fixed inputs (sizes not multiples of the row blocks), with its
    parameter gradients; returns every array it produced."""
    x, dy = randn(rng, (300, 37), dtype), randn(rng, (300, 37), dtype)
    gamma, bias = randn(rng, 37, dtype), randn(rng, 37, dtype)
    out = []
    y, cache = K.layernorm_forward(x, gamma, bias)
    dgamma, dbeta = np.zeros(37, dtype), np.zeros(37, dtype)
    out += [y, K.layernorm_backward(dy, cache, dgamma, dbeta), dgamma, dbeta]
    for approximate in (False, True):
        dbias = np.zeros(37, dtype)
        y, cache = K.bias_gelu_forward(x, bias, approximate)
        out += [y, K.bias_gelu_backward(dy, cache, dbias), dbias]
    p, cache = K.softmax_forward(x, (rng.random((300, 37)) < 0.2) * -1e4)
    out += [p, K.softmax_backward(dy, cache)]
    y, cache = K.dropout_forward(x, 0.1, np.random.default_rng(3))
    out += [y, K.dropout_backward(dy, cache)]
    dgamma, dbeta = np.zeros(37, dtype), np.zeros(37, dtype)
    y, cache = K.dropout_add_layernorm_forward(x, dy, 0.1, np.random.default_rng(4), gamma, bias)
    out += [y, *K.dropout_add_layernorm_backward(x, cache, dgamma, dbeta), dgamma, dbeta]
    q, k, v, dc = (randn(rng, (2, 3, 11, 4), dtype) for _ in range(4))
    context, probs, cache = K.attention_forward(q, k, v, np.where(np.arange(11) < 8, 0, -1e4)[None].repeat(2, 0),
                                                0.1, np.random.default_rng(5))
    out += [context, probs, *K.attention_backward(dc, cache)]
    groups = ((0, 2, 5), (10, 1, 9), (19, 3, 2))                # (start row, count, length): 25 rows
    q, k, v, dc = (randn(rng, (25, 12), dtype) for _ in range(4))
    context, probs, cache = K.unpadded_attention_forward(q, k, v, groups, 3, 0.1, np.random.default_rng(6))
    out += [context, *probs, *K.unpadded_attention_backward(dc, cache)]
    dweight = np.ones((10, 37), dtype)
    K.embedding_backward(dy, rng.integers(0, 10, 300), dweight)
    loss, cache = K.cross_entropy_forward(x, rng.integers(0, 37, 300), rng.random(300).astype(dtype))
    out += [dweight, loss, K.cross_entropy_backward(dtype(1), cache)]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_serial_and_parallel_compilations_agree_to_the_bit(dtype):
    """The serial copy of each kernel does the parallel one's operations in the same order, and the
    parallel one's block sums are added in a fixed order: the same bits on one thread, on every thread,
    and without threads. Every compiled kernel is exercised (a new one without a case here fails).
    (The test picks the compilation itself, so the fixture's choice does not matter here.)"""
    import numba
    runs = []
    for up_to, threads in ((1 << 62, 1), (-1, 1), (-1, numba.config.NUMBA_NUM_THREADS)):
        K.SERIAL_UP_TO = up_to
        numba.set_num_threads(threads)
        try:
            runs.append(_every_kernel_once(np.random.default_rng(7), dtype))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    kernels_ = [k for k in vars(K).values() if isinstance(k, K._Kernel)]
    assert len(kernels_) >= 12
    for k in kernels_:
        assert k.serial.signatures and k.parallel.signatures, f"{k.__name__} is not exercised"


# ----------------------------------------------------------------------------------------------
# Dropout and attention: the same draws as the reference, so the same bits
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_draws_as_the_reference(dtype, p):
    x = randn(np.random.default_rng(0), (3, 7, 40000), dtype)        # more than one task of the kernel
    x[0, 0, :4] = [-0.0, 0.0, -1.0, np.inf]
    y_ref, mask = F.dropout_forward(x, p, np.random.default_rng(9))
    y, cache = K.dropout_forward(x, p, np.random.default_rng(9))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(y_ref))  # a dropped -x is -0 on both sides
    keep, scale = cache
    assert keep.dtype == np.bool_ and y.dtype == np.dtype(dtype) and scale.dtype == np.dtype(dtype)
    assert abs(keep.mean() - (1 - p)) < 0.01
    dy = randn(np.random.default_rng(1), x.shape, dtype)
    np.testing.assert_array_equal(K.dropout_backward(dy, cache), F.dropout_backward(dy, mask))


def test_dropout_identity_and_errors():
    x = np.ones((2, 3), np.float32)
    y, cache = K.dropout_forward(x, 0.0, None)
    assert y is x and cache is None and K.dropout_backward(x, cache) is x
    _, cache = K.dropout_forward(x, 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"dy must have the shape of the dropout's input \(2, 3\), got \(3, 2\)"):
        K.dropout_backward(np.ones((3, 2), np.float32), cache)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_dropout_add_layernorm(rng, dtype, p):
    """One fused pass against the reference's composition (to rounding: the layer norms differ in
    arithmetic), and against this module's dropout, sum and layer norm one after the other (to the bit:
    the same draws and the same operations). Parameter gradients accumulate into non-zero buffers."""
    x, residual, dy = (randn(rng, (3, 5, 19), dtype) for _ in range(3))
    gamma, beta = 1 + randn(rng, 19, dtype, 0.1), randn(rng, 19, dtype, 0.1)
    grads = {name: [np.full(19, 0.5, dtype) for _ in range(2)] for name in ("ref", "fused", "steps")}
    y_ref, cache = F.dropout_add_layernorm_forward(x, residual, p, np.random.default_rng(5), gamma, beta)
    dx_ref, dres_ref = F.dropout_add_layernorm_backward(dy, cache, *grads["ref"])
    y, cache = K.dropout_add_layernorm_forward(x, residual, p, np.random.default_rng(5), gamma, beta)
    dx, dres = K.dropout_add_layernorm_backward(dy, cache, *grads["fused"])
    for actual, expected in ((y, y_ref), (dx, dx_ref), (dres, dres_ref), *zip(grads["fused"], grads["ref"])):
        assert_close(actual, expected, dtype)
    assert y.shape == dx.shape == dres.shape == x.shape
    if p:
        assert np.count_nonzero(dx == 0) > 0.1 * dx.size            # the dropout did drop

    dropped, d_cache = K.dropout_forward(x, p, np.random.default_rng(5))
    y_steps, ln_cache = K.layernorm_forward(dropped + residual, gamma, beta)
    ds = K.layernorm_backward(dy, ln_cache, *grads["steps"])
    for actual, expected in ((y, y_steps), (dres, ds), (dx, K.dropout_backward(ds, d_cache)),
                             *zip(grads["fused"], grads["steps"])):
        np.testing.assert_array_equal(actual, expected)


def test_dropout_add_layernorm_errors():
    x = np.ones((2, 4), np.float32)
    gamma, beta = np.ones(4, np.float32), np.zeros(4, np.float32)
    for impl in (F, K):
        with pytest.raises(ValueError, match=r"shape"):
            impl.dropout_add_layernorm_forward(x, np.ones((4, 2), np.float32), 0.1, np.random.default_rng(0),
                                               gamma, beta)
    with pytest.raises(ValueError, match=r"residual must have the shape of x \(2, 4\), got \(4, 2\)"):
        K.dropout_add_layernorm_forward(x, np.ones((4, 2), np.float32), 0.1, np.random.default_rng(0), gamma, beta)
    with pytest.raises(ValueError, match=r"gamma and beta must have shape \(4,\)"):
        K.dropout_add_layernorm_forward(x, x, 0.1, np.random.default_rng(0), gamma[:3], beta)
    _, cache = K.dropout_add_layernorm_forward(x, x, 0.1, np.random.default_rng(0), gamma, beta)
    with pytest.raises(ValueError, match=r"dy must have the shape of the forward input \(2, 4\), got \(4, 2\)"):
        K.dropout_add_layernorm_backward(np.ones((4, 2), np.float32), cache, np.zeros(4, np.float32),
                                         np.zeros(4, np.float32))


def attention_inputs(rng, dtype, B=3, A=2, T=9, D=4):
    q, k, v, dcontext = (randn(rng, (B, A, T, D), dtype) for _ in range(4))
    lengths = np.array([T, 5, 1][:B])
    mask_bias = np.where(np.arange(T) < lengths[:, None], 0.0, -10000.0).astype(dtype)      # (B, T)
    return q, k, v, mask_bias, dcontext


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_attention(rng, dtype, dropout_p):
    """The fused kernels (scale inside the softmax; dropout, softmax backward and scale in one pass)
    against the reference's separate steps: the same draws, outputs and gradients to rounding."""
    q, k, v, mask_bias, dcontext = attention_inputs(rng, dtype)
    context_ref, probs_ref, cache_ref = F.attention_forward(q, k, v, mask_bias, dropout_p, np.random.default_rng(4))
    context, probs, cache = K.attention_forward(q, k, v, mask_bias, dropout_p, np.random.default_rng(4))
    assert_close(probs, probs_ref, dtype)
    assert_close(context, context_ref, dtype)
    for grad, grad_ref in zip(K.attention_backward(dcontext, cache), F.attention_backward(dcontext, cache_ref)):
        assert_close(grad, grad_ref, dtype)
    if dropout_p:                  # a replayed reference mask (FreeLB's second pass) gives the same again
        replayed, _, cache = K.attention_forward(q, k, v, mask_bias, dropout_mask=cache_ref[4])
        np.testing.assert_array_equal(replayed, context)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_unpadded_attention(dtype, dropout_p):
    """One flat buffer for every length group's scores, against the reference's group-by-group loop
    (to rounding) and against this module's attention called group by group (to the bit: the same
    draws, odd-sized groups included, and the same arithmetic)."""
    rng = np.random.default_rng(2)
    A, H = 3, 12
    groups = ((0, 1, 1), (1, 2, 3), (7, 1, 5), (12, 3, 8))              # (start row, count, length)
    N = 36
    q, k, v, dcontext = (randn(rng, (N, H), dtype) for _ in range(4))
    ref = F.unpadded_attention_forward(q, k, v, groups, A, dropout_p, np.random.default_rng(4))
    out = K.unpadded_attention_forward(q, k, v, groups, A, dropout_p, np.random.default_rng(4))
    grads = K.unpadded_attention_backward(dcontext, out[2])
    assert_close(out[0], ref[0], dtype)
    assert [p.shape for p in out[1]] == [(c, A, n, n) for _, c, n in groups]
    for p, p_ref in zip(out[1], ref[1]):
        assert_close(p, p_ref, dtype)
    for grad, grad_ref in zip(grads, F.unpadded_attention_backward(dcontext, ref[2])):
        assert_close(grad, grad_ref, dtype)

    draws = np.random.default_rng(4)
    for group, p in zip(groups, out[1]):
        q_g, k_g, v_g, dc_g = (F.heads_view(a, group, A) for a in (q, k, v, dcontext))
        context_g, p_g, cache_g = K.attention_forward(q_g, k_g, v_g, None, dropout_p, draws)
        np.testing.assert_array_equal(F.heads_view(out[0], group, A), context_g)
        np.testing.assert_array_equal(p, p_g)
        for grad, grad_g in zip(grads, K.attention_backward(dc_g, cache_g)):
            np.testing.assert_array_equal(F.heads_view(grad, group, A), grad_g)
    # Each group is its own attention: a sequence's rows depend on no other sequence.
    q2 = q.copy()
    q2[12:] += 1
    k2 = k.copy()
    k2[12:] -= 1
    again = K.unpadded_attention_forward(q2, k2, v, groups, A)
    alone = K.unpadded_attention_forward(q, k, v, groups, A)
    np.testing.assert_array_equal(again[0][:12], alone[0][:12])
    assert not np.allclose(again[0][12:], alone[0][12:])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_unpadded_attention_with_queries_at_some_rows_only(dtype, dropout_p):
    """``queries``: per group, the positions each of its sequences asks; their rows make q (R, H). The
    Numba path against the reference (rounding; the same dropout draws); against full attention at
    those rows, with the same seed: the same context, the same probabilities and dropout (the draws
    are those of the whole groups), and the same dk, dv when the other rows' dcontext is 0. A
    sequence may ask none (its keys then get no gradient)."""
    rng = np.random.default_rng(3)
    A, H = 3, 12
    groups = ((0, 1, 4), (4, 1, 6), (10, 2, 5), (20, 1, 3))          # (start row, count, length): 23 rows
    queries = ((np.array([0, 2, 3]),), (np.array([0, 5]),), (np.array([0, 1]), np.array([0, 1])),
               (np.array([], np.int64),))
    wanted = np.array([0, 2, 3, 4, 9, 10, 11, 15, 16])             # the same rows, as rows of k
    k, v = (randn(rng, (23, H), dtype) for _ in range(2))
    q_all = randn(rng, (23, H), dtype)
    q, dcontext = q_all[wanted], randn(rng, (len(wanted), H), dtype)
    ref = F.unpadded_attention_forward(q, k, v, groups, A, dropout_p, np.random.default_rng(4), queries)
    out = K.unpadded_attention_forward(q, k, v, groups, A, dropout_p, np.random.default_rng(4), queries)
    assert [p.shape for p in out[1]] == [(1, A, 3, 4), (1, A, 2, 6), (1, A, 2, 5), (1, A, 2, 5), (1, A, 0, 3)]
    assert_close(out[0], ref[0], dtype)
    for p, p_ref in zip(out[1], ref[1]):
        assert_close(p, p_ref, dtype)
    grads = K.unpadded_attention_backward(dcontext, out[2])
    for grad, grad_ref in zip(grads, F.unpadded_attention_backward(dcontext, ref[2])):
        assert_close(grad, grad_ref, dtype)
    assert not grads[1][20:].any() and not grads[2][20:].any()          # the sequence that asked nothing
    full = K.unpadded_attention_forward(q_all, k, v, groups, A, dropout_p, np.random.default_rng(4))
    assert_close(out[0], full[0][wanted], dtype)
    dfull = np.zeros((23, H), dtype)
    dfull[wanted] = dcontext
    dq_full, dk_full, dv_full = K.unpadded_attention_backward(dfull, full[2])
    assert_close(grads[0], dq_full[wanted], dtype)
    assert_close(grads[1], dk_full, dtype)
    assert_close(grads[2], dv_full, dtype)
    # the generator is left where the whole computation leaves it
    after_subset, after_full = np.random.default_rng(4), np.random.default_rng(4)
    K.unpadded_attention_forward(q, k, v, groups, A, dropout_p, after_subset, queries)
    K.unpadded_attention_forward(q_all, k, v, groups, A, dropout_p, after_full)
    assert after_subset.integers(1 << 30) == after_full.integers(1 << 30)


def test_unpadded_attention_rejects_a_wrong_gradient_shape():
    q = np.ones((4, 6), np.float32)
    _, _, cache = K.unpadded_attention_forward(q, q, q, ((0, 2, 2),), 2)
    with pytest.raises(ValueError, match=r"dcontext must have the shape of the attention's queries \(4, 6\)"):
        K.unpadded_attention_backward(np.ones((3, 6), np.float32), cache)


def test_attention_rejects_a_mask_it_cannot_replay(rng):
    q, k, v, mask_bias, _ = attention_inputs(rng, np.float32)
    _, _, cache = F.attention_forward(q, k, v, mask_bias, 0.3, np.random.default_rng(4))
    mask = cache[4]
    with pytest.raises(ValueError, match=r"dropout_mask must have the shape of the attention probabilities"):
        K.attention_forward(q, k, v, mask_bias, dropout_mask=mask[:, :1])
    mask = mask.copy()
    mask[0, 0, 0, :2] = [0.5, 2.0]
    with pytest.raises(ValueError, match="dropout_mask must hold 0 and one scale"):
        K.attention_forward(q, k, v, mask_bias, dropout_mask=mask)


# ----------------------------------------------------------------------------------------------
# AdamW: one pass instead of thirteen, the same bits
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c2, decay", [(1.0, 1.0), (31.6, 0.99999)])
def test_adamw_update(rng, dtype, c2, decay):
    shape = (70, 300)                                          # more than one task of the kernel
    p, g = randn(rng, shape, dtype), randn(rng, shape, dtype, 1e-3)
    m, v = randn(rng, shape, dtype, 1e-3), np.abs(randn(rng, shape, dtype, 1e-6))
    g[0, :3] = [0.0, -0.0, 1e18]
    ref = [a.copy() for a in (p, g, m, v)]
    for _ in range(3):
        K.adamw_update(p, g, m, v, 0.9, 0.999, 1e-6, 1e-3 * 10.0, c2, decay, None)
        F.adamw_update(*ref, 0.9, 0.999, 1e-6, 1e-3 * 10.0, c2, decay, np.empty(shape, dtype))
    for a, b in zip((p, m, v), (ref[0], ref[2], ref[3])):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(p, randn(np.random.default_rng(1234), shape, dtype))   # it moved


def test_adamw_update_of_a_strided_view_takes_the_reference_path(rng):
    whole = randn(rng, (6, 8), np.float32)
    p = whole[:, ::2]                                           # not contiguous: updated in place all the same
    g, m, v = (randn(rng, p.shape, np.float32) for _ in range(3))
    v = np.abs(v)
    expected = [a.copy() for a in (p, g, m, v)]
    F.adamw_update(*expected, 0.9, 0.999, 1e-6, 1e-3, 1.0, 1.0, np.empty(p.shape, np.float32))
    K.adamw_update(p, g, m, v, 0.9, 0.999, 1e-6, 1e-3, 1.0, 1.0, np.empty(p.shape, np.float32))
    np.testing.assert_array_equal(whole[:, ::2], expected[0])
    np.testing.assert_array_equal(m, expected[2])


# ----------------------------------------------------------------------------------------------
# dtype: float32 in, float32 out, everywhere
# ----------------------------------------------------------------------------------------------
def test_float32_stays_float32(rng):
    f32 = np.float32
    x = randn(rng, (2, 3, 5, 5), f32)
    p, cache = K.softmax_forward(x, np.zeros((2, 5)))               # a float64 mask does not upcast
    assert p.dtype == f32 and K.softmax_backward(x.astype(np.float64), cache).dtype == f32
    h = randn(rng, (2, 5, 8), f32)
    y, cache = K.layernorm_forward(h, np.ones(8, f32), np.zeros(8, f32))
    assert all(a.dtype == f32 for a in cache if isinstance(a, np.ndarray))
    assert y.dtype == f32 and K.layernorm_backward(h, cache, np.zeros(8, f32), np.zeros(8, f32)).dtype == f32
    for approximate in (False, True):
        y, cache = K.bias_gelu_forward(h, np.zeros(8, f32), approximate)
        assert y.dtype == f32 and all(a.dtype == f32 for a in cache if isinstance(a, np.ndarray))
        assert K.bias_gelu_backward(h, cache, np.zeros(8, f32)).dtype == f32
    loss, cache = K.cross_entropy_forward(h[0], np.arange(5), np.ones(5))
    assert loss.dtype == f32 and cache[0].dtype == f32 and cache[2].dtype == f32
    assert K.cross_entropy_backward(np.float64(1.0), cache).dtype == f32


# ----------------------------------------------------------------------------------------------
# The switch
# ----------------------------------------------------------------------------------------------
def test_switch_selects_backend(rng):
    x = randn(rng, (2, 7), np.float64)
    with kernels.using("numpy"):
        assert kernels.backend() == "numpy"
        _, (impl, cache) = kernels.layernorm_forward(x, np.ones(7), np.zeros(7))
        assert impl == "numpy" and len(cache) == 3              # the reference's (xhat, rstd, gamma)
        with kernels.using("numba"):
            assert kernels.backend() == "numba"
            _, (impl, cache) = kernels.layernorm_forward(x, np.ones(7), np.zeros(7))
            assert impl == "numba" and len(cache) == 5          # the kernel's (x, mean, rstd, gamma, shape)
        assert kernels.backend() == "numpy"
    for name in kernels.KERNEL_NAMES:                     # every switchable op exists on both sides
        assert callable(getattr(F, name)) and callable(getattr(K, name))


def test_switch_reads_environment(monkeypatch):
    previous = kernels.backend()
    try:
        for value, expected in (("numpy", "numpy"), (" Numba ", "numba"), ("", "numba")):
            monkeypatch.setenv("MINIBERT_KERNELS", value)
            monkeypatch.setattr(kernels, "_active", None)     # as if freshly imported
            assert kernels.backend() == expected
        monkeypatch.setenv("MINIBERT_KERNELS", "cuda")
        monkeypatch.setattr(kernels, "_active", None)
        with pytest.raises(ValueError, match="unknown kernel backend 'cuda'"):
            kernels.backend()
    finally:
        kernels.use(previous)


def test_switch_rejects_unknown_backend():
    before = kernels.backend()
    with pytest.raises(ValueError, match="unknown kernel backend 'torch'"):
        kernels.use("torch")
    with pytest.raises(ValueError, match="expected one of"):
        with kernels.using("jax"):
            pass
    assert kernels.backend() == before


@pytest.mark.parametrize("forward_backend, backward_backend", [("numpy", "numba"), ("numba", "numpy")])
def test_backward_runs_on_the_backend_of_its_forward(rng, forward_backend, backward_backend):
    """A cache is bound to the backend that made it: switching between forward and backward, on purpose,
    still runs one backend's pair, and the gradients equal the reference's."""
    from minibert.gradcheck import ids_and_types, padding_mask, tiny_config
    from minibert.models import BertForPreTraining

    config = tiny_config()
    ids, types = ids_and_types()
    positions = np.array([[1, 4, 6], [2, 3, 0], [1, 2, 0]])
    labels = rng.integers(0, config.vocab_size, positions.shape)

    def gradients(forward_on, backward_on):
        model = BertForPreTraining(config, np.random.default_rng(5)).astype(np.float64).eval()
        with kernels.using(forward_on):
            out = model.forward(ids, types, padding_mask(), positions, labels, None, np.array([0, 1, 1]))
        with kernels.using(backward_on):
            model.backward()
        return float(out.loss), dict(model.named_grads())

    loss, grads = gradients(forward_backend, backward_backend)
    ref_loss, ref_grads = gradients("numpy", "numpy")
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name, g in ref_grads.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-9, atol=1e-12, err_msg=name)
