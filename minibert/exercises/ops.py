"""Exercises on the single operations of lessons 01-05: linear, softmax + cross-entropy, GELU, layer
norm, dropout, and the embedding lookup's scatter-add. Each grade compares with
``minibert.functional``."""

from __future__ import annotations

import numpy as np

from minibert import functional as F
from minibert.exercises.base import Exercise
from minibert.exercises.grader import (
    Report,
    as_array,
    call,
    compare,
    fail_with_diagnosis,
    gradient_check,
    weighted_sum,
    same,
    shape_message,
    unpack,
)
from minibert.special import normal_cdf


def check_accumulates(
    report: Report, what: str, name: str, got, prefill, reference, extra_variants=None
):
    """A backward must ADD into a gradient buffer: the buffer, prefilled with ``prefill``, must end
    as prefill + reference. Recognises the plain assignment (the buffer ends as the reference
    alone)."""
    ok = compare(report, what, name, got, prefill + reference)
    if not ok:
        fail_with_diagnosis(report, got, {
            f"'=' instead of '+=': {name} was overwritten, not added to (a tied or reused "
            f"parameter would lose its other gradients)":
                lambda: reference,
            **(extra_variants or {})})
    return ok


# ------------------------------------------------------------------------------------------- linear
LINEAR = '''
import numpy as np


def linear_forward(x, weight, bias=None):
    """y = x W^T + b.

    x (..., in), weight (out, in) as in PyTorch / Hugging Face, bias (out,) or None -> y (..., out).
    Returns (y, cache): the cache is whatever linear_backward needs.
    """
    raise NotImplementedError


def linear_backward(dy, cache, dweight, dbias=None):
    """Given dy = dL/dy (..., out), return dx = dL/dx (..., in) and ADD (+=) the parameter gradients
    into the buffers dweight (out, in) and dbias (out,) (dbias may be None).

    Starting point: with x flattened to rows n, y[n, j] = sum_i x[n, i] W[j, i] + b[j], so
        dL/dx[n, i] = sum_j dL/dy[n, j] * dy[n, j]/dx[n, i]
        dL/dW[j, i] = sum_n dL/dy[n, j] * dy[n, j]/dW[j, i]      (every row used the same W)
    """
    raise NotImplementedError
'''


def _grade_linear(m, r: Report):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((6, 5)), rng.standard_normal(6)
    y, cache = unpack(call(m, "linear_forward", x, w, b), 2, "linear_forward")
    if not compare(
        r, "forward: y = x W^T + b, x (3, 4, 5), W (6, 5)", "y", y, F.linear_forward(x, w, b)[0]
    ):
        fail_with_diagnosis(r, y, {"the bias is missing from y": lambda: x @ w.T})
    y0, _ = unpack(call(m, "linear_forward", x, w, None), 2, "linear_forward")
    compare(r, "forward without a bias (bias=None)", "y", y0, x @ w.T)
    dy = rng.standard_normal((3, 4, 6))
    dw, db = np.zeros_like(w), np.zeros_like(b)
    dx = call(m, "linear_backward", dy, cache, dw, db)
    ref_dw, ref_db = np.zeros_like(w), np.zeros_like(b)
    ref_dx = F.linear_backward(dy, F.linear_forward(x, w, b)[1], ref_dw, ref_db)
    compare(r, "backward: dx", "dx", dx, ref_dx)
    if not compare(r, "backward: dW", "dweight", dw, ref_dw):
        fail_with_diagnosis(r, dw, {
            "dW is averaged over the rows instead of summed": lambda: ref_dw / 12})
    if not compare(r, "backward: db", "dbias", db, ref_db):
        fail_with_diagnosis(r, db, {
            "db is the mean of dy over the rows; every row adds b, so it is the sum":
                lambda: ref_db / 12})
    gradient_check(r, "gradients agree with finite differences",
                   weighted_sum(m, "linear_forward", dy, x, w, b),
                   {"x": x, "weight": w, "bias": b},
                   {"x": dx, "weight": dw, "bias": db})
    dw1, db1 = np.full_like(w, 0.5), np.full_like(b, -0.25)
    call(m, "linear_backward", dy, cache, dw1, db1)
    check_accumulates(r, "backward adds into dweight (+=)", "dweight", dw1, 0.5, ref_dw)
    check_accumulates(r, "backward adds into dbias (+=)", "dbias", db1, -0.25, ref_db)


# -------------------------------------------------------------------------------------- softmax, CE
SOFTMAX_CE = '''
import numpy as np


def softmax_forward(x):
    """p = softmax(x) over the last axis: x (..., N) -> p (..., N), each row summing to 1.
    Returns (p, cache). It must not overflow for rows like [1000, 999, 998]."""
    raise NotImplementedError


def softmax_backward(dp, cache):
    """dx (..., N) from dp = dL/dp.
    Starting point: p_j = exp(x_j) / sum_k exp(x_k), so dp_j/dx_i = p_j (delta_ij - p_i), and
    dL/dx_i = sum_j dL/dp_j * dp_j/dx_i."""
    raise NotImplementedError


def cross_entropy_forward(logits, targets):
    """Mean negative log-likelihood: logits (N, C), targets (N,) integers in [0, C) ->
    (loss, cache), loss a scalar = mean_n -log softmax(logits_n)[targets_n]."""
    raise NotImplementedError


def cross_entropy_backward(dloss, cache):
    """dlogits (N, C) from the scalar dloss = dL/dloss.
    Starting point: -log softmax(z)_t = log sum_k exp(z_k) - z_t; differentiate it with
    respect to z_i."""
    raise NotImplementedError
'''


def _softmax_rows(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _grade_softmax_ce(m, r: Report):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5, 6)) * 2
    p, cache = unpack(call(m, "softmax_forward", x), 2, "softmax_forward")
    if not compare(r, "softmax forward, x (4, 5, 6)", "p", p, F.softmax_forward(x)[0]):
        fail_with_diagnosis(r, p, {
            "softmax over the wrong axis (it normalises each row: the last axis)":
                lambda: _softmax_rows(x, axis=0),
            "softmax over the middle axis instead of the last": lambda: _softmax_rows(x, 1)})
    big = np.array([[1000.0, 999.0, 998.0], [-1000.0, -1001.0, -1003.0]])
    p_big, _ = unpack(call(m, "softmax_forward", big), 2, "softmax_forward")
    if not compare(
        r, "softmax of large logits (no overflow)", "p", p_big, F.softmax_forward(big)[0]
    ):
        if not np.isfinite(as_array("p", p_big)).all():
            r.checks[-1].diagnosis = (
                "exp overflowed: subtract each row's max before exp (softmax does not "
                "change when a constant is added to a row)"
            )
    dp = rng.standard_normal(x.shape)
    dx = call(m, "softmax_backward", dp, cache)
    ref = F.softmax_backward(dp, F.softmax_forward(x)[0])
    if not compare(r, "softmax backward", "dx", dx, ref):
        pr = F.softmax_forward(x)[0]
        fail_with_diagnosis(r, dx, {
            "only the diagonal of the Jacobian (p (1 - p) dp): every p_j depends on every x_i":
                lambda: pr * (1 - pr) * dp,
            "the sum over j is missing (p * dp)": lambda: pr * dp})
    gradient_check(r, "softmax gradient agrees with finite differences",
                   weighted_sum(m, "softmax_forward", dp, x),
                   {"x": x},
                   {"x": dx})

    n, c = 6, 5
    logits, targets = rng.standard_normal((n, c)) * 2, rng.integers(0, c, n)
    loss, ce_cache = unpack(
        call(m, "cross_entropy_forward", logits, targets), 2, "cross_entropy_forward"
    )
    ref_loss, ref_cache = F.cross_entropy_forward(logits, targets)
    if not compare(r, "cross-entropy loss, logits (6, 5)", "loss", loss, ref_loss):
        fail_with_diagnosis(r, loss, {
            "summed over the rows instead of averaged": lambda: ref_loss * n,
            "log p without the minus sign": lambda: -ref_loss})
    dlogits = call(m, "cross_entropy_backward", 1.7, ce_cache)
    ref_d = F.cross_entropy_backward(1.7, ref_cache)
    if not compare(r, "cross-entropy backward (dloss = 1.7)", "dlogits", dlogits, ref_d):
        probs = F.softmax_forward(logits)[0]
        fail_with_diagnosis(r, dlogits, {
            "the 1/N of the mean is missing from the gradient": lambda: ref_d * n,
            "dloss is ignored (the upstream gradient must multiply dlogits)": lambda: ref_d / 1.7,
            "the -1 at the target is missing (softmax - onehot)": lambda: probs * 1.7 / n})
    gradient_check(
        r,
        "cross-entropy gradient agrees with finite differences",
        lambda: 1.7 * float(call(m, "cross_entropy_forward", logits, targets)[0]),
        {"logits": logits},
        {"logits": dlogits},
    )


# --------------------------------------------------------------------------------------------- GELU
GELU = '''
import numpy as np

# Phi(x) and phi(x), the standard normal CDF and density, vectorised (NumPy has no erf)
from minibert.special import normal_cdf, normal_pdf


def gelu_forward(x):
    """The exact GELU: y = x * Phi(x), Phi the standard normal CDF (Hugging Face's "gelu").
    Elementwise, any shape. Returns (y, cache)."""
    raise NotImplementedError


def gelu_backward(dy, cache):
    """dx = dy * GELU'(x). Starting point: the product rule on x * Phi(x), with Phi'(x) = phi(x)."""
    raise NotImplementedError
'''


def _grade_gelu(m, r: Report):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 7)) * 3
    y, cache = unpack(call(m, "gelu_forward", x), 2, "gelu_forward")
    if not compare(r, "forward, x (3, 4, 7)", "y", y, F.gelu_forward(x)[0]):
        fail_with_diagnosis(r, y, {
            "the tanh approximation, not the exact erf GELU": lambda: F.gelu_forward(x, True)[0],
            "ReLU, not GELU": lambda: np.maximum(x, 0),
            "Phi(x) alone: the factor x is missing": lambda: normal_cdf(x)})
    dy = rng.standard_normal(x.shape)
    dx = call(m, "gelu_backward", dy, cache)
    ref = F.gelu_backward(dy, F.gelu_forward(x)[1])
    if not compare(r, "backward", "dx", dx, ref):
        fail_with_diagnosis(r, dx, {
            "only Phi(x): the x * phi(x) term of the product rule is missing":
                lambda: dy * normal_cdf(x),
            "the tanh approximation's derivative": lambda: F.gelu_backward(dy, (x, True))})
    gradient_check(r, "gradient agrees with finite differences",
                   weighted_sum(m, "gelu_forward", dy, x),
                   {"x": x},
                   {"x": dx})


# --------------------------------------------------------------------------------------- layer norm
LAYERNORM = '''
import numpy as np


def layernorm_forward(x, gamma, beta, eps=1e-12):
    """y = gamma * xhat + beta with xhat = (x - mean) / sqrt(var + eps), mean and (biased)
    variance taken over the LAST axis (each token's H features). x (..., H), gamma (H,), beta (H,).
    Returns (y, cache)."""
    raise NotImplementedError


def layernorm_backward(dy, cache, dgamma, dbeta):
    """Return dx (..., H); ADD (+=) the gradients into dgamma (H,) and dbeta (H,).

    Starting point, for one row with r = (var + eps)^(-1/2) and g = dy * gamma:
        xhat_i = (x_i - mu) r,   dmu/dx_j = 1/H,   dr/dx_j = -r^3 (x_j - mu) / H
        dx_j = sum_i g_i dxhat_i/dx_j
    """
    raise NotImplementedError
'''


def _layernorm_axis(x, gamma, beta, axis, ddof=0):
    """Layer norm with its statistics over ``axis`` (a wrong one, for the diagnosis)."""
    mean = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, ddof=ddof, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * gamma + beta


def _grade_layernorm(m, r: Report):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 6)) * 2 + 1
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    y, cache = unpack(call(m, "layernorm_forward", x, gamma, beta), 2, "layernorm_forward")
    if not compare(r, "forward, x (3, 5, 6)", "y", y, F.layernorm_forward(x, gamma, beta)[0]):
        fail_with_diagnosis(r, y, {
            "layer norm over the wrong axis: statistics over T (axis 1), not each token's H "
            "features":
                lambda: _layernorm_axis(x, gamma, beta, 1),
            "layer norm over the wrong axis: statistics over the batch (axis 0)":
                lambda: _layernorm_axis(x, gamma, beta, 0),
            "statistics over every axis at once, not per token":
                lambda: _layernorm_axis(x, gamma, beta, None),
            "the unbiased variance (divide by H - 1); layer norm divides by H":
                lambda: _layernorm_axis(x, gamma, beta, -1, ddof=1),
            "gamma and beta swapped": lambda: F.layernorm_forward(x, beta, gamma)[0]})
    dy = rng.standard_normal(x.shape)
    dg, db = np.zeros(6), np.zeros(6)
    dx = call(m, "layernorm_backward", dy, cache, dg, db)
    rdg, rdb = np.zeros(6), np.zeros(6)
    ref_cache = F.layernorm_forward(x, gamma, beta)[1]
    ref = F.layernorm_backward(dy, ref_cache, rdg, rdb)
    if not compare(r, "backward: dx", "dx", dx, ref):
        xhat, rstd, _ = ref_cache
        g = dy * gamma
        fail_with_diagnosis(r, dx, {
            "the variance's term is missing (- xhat * mean(g * xhat))":
                lambda: rstd * (g - g.mean(-1, keepdims=True)),
            "the mean's term is missing (- mean(g))":
                lambda: rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True)),
            "gamma is left out of the backward (use g = dy * gamma)":
                lambda: F.layernorm_backward(dy, (xhat, rstd, np.ones_like(gamma)), np.zeros(6),
                                             np.zeros(6)),
            "only dy * gamma * r: the mean and variance depend on x too": lambda: rstd * g})
    compare(r, "backward: dgamma", "dgamma", dg, rdg)
    compare(r, "backward: dbeta", "dbeta", db, rdb)
    gradient_check(r, "gradients agree with finite differences",
                   weighted_sum(m, "layernorm_forward", dy, x, gamma, beta),
                   {"x": x, "gamma": gamma, "beta": beta},
                   {"x": dx, "gamma": dg, "beta": db})
    dg1, db1 = np.full(6, 2.0), np.full(6, -1.0)
    call(m, "layernorm_backward", dy, cache, dg1, db1)
    check_accumulates(r, "backward adds into dgamma (+=)", "dgamma", dg1, 2.0, rdg)
    check_accumulates(r, "backward adds into dbeta (+=)", "dbeta", db1, -1.0, rdb)


# ------------------------------------------------------------------------------------------ dropout
DROPOUT = '''
import numpy as np


def dropout_forward(x, p, rng, mask=None):
    """Inverted dropout: zero each element with probability p, scale the survivors so that E[y] = x.

    x any shape; p in [0, 1); rng a numpy.random.Generator (draw every random number from it);
    mask: None to draw a new one, or the mask a previous call returned, to replay the same dropout.
    Returns (y, mask) where y = x * mask. With p = 0 return x unchanged.
    """
    raise NotImplementedError


def dropout_backward(dy, mask):
    """dx from dy, for y = x * mask."""
    raise NotImplementedError
'''


def _grade_dropout(m, r: Report):
    p = 0.3
    x = np.ones((200, 300))
    y, mask = unpack(
        call(m, "dropout_forward", x, p, np.random.default_rng(0)), 2, "dropout_forward"
    )
    y = as_array("y", y)
    if y.shape != x.shape:
        r.add("forward keeps the shape", False, shape_message("y", x.shape, y.shape))
        return
    dropped = float((y == 0).mean())
    if not r.add(
        f"about p = {p} of the entries are zero",
        abs(dropped - p) < 0.015,
        f"{dropped:.3f} of the entries are zero, expected {p} +- 0.015",
    ):
        if abs(dropped - (1 - p)) < 0.015:
            r.checks[-1].diagnosis = (
                "p is the probability of DROPPING an element, not of keeping it"
            )
    kept = y[y != 0]
    want = 1 / (1 - p)
    if not r.add(
        "survivors are scaled by 1/(1 - p), so E[y] = x",
        bool(len(kept)) and np.allclose(kept, want, rtol=1e-3),
        f"kept entries of x = 1 became {np.unique(np.round(kept, 6))[:4]}, expected {want:.6g}",
    ):
        r.checks[-1].diagnosis = {
            1.0: "dropout not rescaled: survivors must be divided by 1 - p",
            round(1 - p, 6): "survivors multiplied by 1 - p instead of divided by it",
        }.get(round(float(kept[0]), 6) if len(kept) else None)
    x2 = np.random.default_rng(1).standard_normal((6, 7))
    y2, mask2 = unpack(
        call(m, "dropout_forward", x2, 0.4, np.random.default_rng(5)), 2, "dropout_forward"
    )
    if mask2 is None:
        r.add(
            "the returned mask is the one applied (y = x * mask)",
            False,
            "the mask returned is None",
        )
        return
    compare(
        r,
        "the returned mask is the one applied (y = x * mask)",
        "y",
        y2,
        x2 * as_array("mask", mask2),
    )
    y3, _ = unpack(
        call(m, "dropout_forward", x2 * 2, 0.4, np.random.default_rng(99), mask2),
        2,
        "dropout_forward",
    )
    compare(
        r,
        "passing the mask back replays the same dropout",
        "y",
        y3,
        2 * x2 * as_array("mask", mask2),
    )
    y4, _ = unpack(
        call(m, "dropout_forward", x2, 0.4, np.random.default_rng(5)), 2, "dropout_forward"
    )
    r.add(
        "the same Generator state gives the same mask (no global random state)",
        same(y4, y2),
        "two calls with np.random.default_rng(5) dropped different entries: draw from the rng "
        "argument",
    )
    y0, _ = unpack(
        call(m, "dropout_forward", x2, 0.0, np.random.default_rng(0)), 2, "dropout_forward"
    )
    compare(r, "p = 0 is the identity", "y", y0, x2)
    dy = np.random.default_rng(2).standard_normal(x2.shape)
    dx = call(m, "dropout_backward", dy, mask2)
    if not compare(r, "backward: dx = dy * mask", "dx", dx, dy * as_array("mask", mask2)):
        fail_with_diagnosis(r, dx, {
            "the backward passes dy through unmasked": lambda: dy,
            "the backward uses the 0/1 pattern without the 1/(1 - p) scale":
                lambda: dy * (as_array("mask", mask2) != 0)})


# ---------------------------------------------------------------------------------------- embedding
EMBEDDING = '''
import numpy as np


def embedding_forward(ids, weight):
    """out[...] = weight[ids[...]]: ids (...) integers in [0, V), weight (V, H) -> out (..., H).
    Returns (out, cache)."""
    raise NotImplementedError


def embedding_backward(dout, cache, dweight):
    """ADD (+=) into dweight (V, H) the gradient of the lookup; returns nothing.
    Starting point: out[n] = W[ids[n]] selects a row, so dL/dW[v] collects dout[n] from every
    position n whose id is v. The grader's batch repeats ids on purpose."""
    raise NotImplementedError
'''


def _grade_embedding(m, r: Report):
    rng = np.random.default_rng(4)
    V, H = 11, 4
    ids = rng.integers(0, V, (3, 6))
    ids[0, :3] = 7  # a repeated id: its row must receive all three gradients
    w = rng.standard_normal((V, H))
    out, cache = unpack(call(m, "embedding_forward", ids, w), 2, "embedding_forward")
    compare(r, "forward: out = W[ids], ids (3, 6), W (11, 4)", "out", out, w[ids])
    dout = rng.standard_normal((3, 6, H))
    dw = np.zeros_like(w)
    call(m, "embedding_backward", dout, cache, dw)
    ref = np.zeros_like(w)
    F.embedding_backward(dout, ids, ref)

    def buffered():
        d = np.zeros_like(w)
        d[ids.reshape(-1)] += dout.reshape(-1, H)
        return d

    if not compare(r, "backward: the scatter-add of dout into the rows of dW", "dweight", dw, ref):
        fail_with_diagnosis(r, dw, {
            "dW[ids] += dout is buffered: a repeated id keeps only one of its gradients; use "
            "np.add.at":
                buffered})
    gradient_check(r, "gradient agrees with finite differences",
                   weighted_sum(m, "embedding_forward", dout, ids, w),
                   {"weight": w},
                   {"weight": dw})
    dw1 = np.full_like(w, 0.5)
    call(m, "embedding_backward", dout, cache, dw1)
    check_accumulates(
        r,
        "backward adds into dweight (+=): the tied decoder adds its part too",
        "dweight",
        dw1,
        0.5,
        ref,
        {"dW[ids] += dout is buffered; use np.add.at": lambda: 0.5 + buffered()},
    )


EXERCISES = [
    Exercise(
        "linear",
        "a linear layer, forward and backward",
        "01",
        LINEAR,
        (
            "Flatten x to rows: x2 = x.reshape(-1, x.shape[-1]); y is one matrix product plus the "
            "bias, then "
            "reshape back to (..., out). Cache (x, weight).",
            "In the backward, flatten dy the same way. dx = dy W has shape (N, in); dW = dy^T x "
            "has shape "
            "(out, in); db sums dy over the rows.",
            "Write the parameter gradients with +=, never =: dweight += dy2.T @ x2; dbias += "
            "dy2.sum(axis=0). "
            "Return dx reshaped to x.shape.",
        ),
        _grade_linear,
    ),
    Exercise(
        "softmax_cross_entropy",
        "softmax and cross-entropy, forward and backward",
        "02",
        SOFTMAX_CE,
        (
            "Subtract each row's max (keepdims=True) before exp: softmax is unchanged and exp "
            "cannot overflow. "
            "Cache p for the backward.",
            "Softmax backward: dx_i = p_i (dp_i - sum_j dp_j p_j); the sum runs over the last "
            "axis, keepdims. "
            "Cross-entropy: -log p_t = log sum exp(z) - z_t, averaged over the N rows.",
            "Cross-entropy backward: dlogits = (softmax(logits) - onehot(targets)) * dloss / N; "
            "build it as "
            "probs.copy(), subtract 1 at [arange(N), targets], multiply by dloss / N.",
        ),
        _grade_softmax_ce,
    ),
    Exercise(
        "gelu",
        "the exact GELU, forward and backward",
        "02",
        GELU,
        (
            "The forward is one line with normal_cdf. Cache x.",
            "d/dx [x Phi(x)] = Phi(x) + x phi(x).",
            "dx = dy * (normal_cdf(x) + x * normal_pdf(x)).",
        ),
        _grade_gelu,
    ),
    Exercise(
        "layernorm",
        "layer normalisation, forward and backward",
        "03",
        LAYERNORM,
        (
            "Every statistic is over axis=-1 with keepdims=True. Cache xhat, r = 1/sqrt(var + eps) "
            "and gamma.",
            "dgamma sums dy * xhat over every row (reshape to (-1, H) first); dbeta sums dy. For "
            "dx, work with "
            "g = dy * gamma; the result has three terms: one from xhat, one from the mean, one "
            "from the variance.",
            "dx = r * (g - mean(g) - xhat * mean(g * xhat)), both means over the last axis with "
            "keepdims.",
        ),
        _grade_layernorm,
    ),
    Exercise(
        "dropout",
        "inverted dropout with a replayable mask",
        "05",
        DROPOUT,
        (
            "Draw a keep pattern from rng (rng.random(x.shape) >= p keeps with probability 1 - p).",
            "The mask you return holds 0 or 1/(1 - p), in x's dtype; y = x * mask. If a mask is "
            "passed in, "
            "use it and draw nothing.",
            "The backward is dy * mask: the mask already holds the 1/(1 - p).",
        ),
        _grade_dropout,
    ),
    Exercise(
        "embedding",
        "the embedding lookup and its scatter-add backward",
        "05",
        EMBEDDING,
        (
            "The forward is fancy indexing: weight[ids]. Cache ids.",
            "dW[ids] += dout looks right but NumPy buffers it: for a repeated id only one += "
            "survives.",
            "np.add.at(dweight, ids.reshape(-1), dout.reshape(-1, dout.shape[-1])) adds every row.",
        ),
        _grade_embedding,
    ),
]
