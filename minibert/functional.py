"""NumPy forward/backward pairs: the readable reference for every operation in BERT.

Every operation is two plain functions:

    y, cache = op_forward(x, ...)       # cache holds exactly what the backward needs
    dx = op_backward(dy, cache, ...)    # parameter gradients are ADDED (+=) into buffers passed in

Backward passes accumulate into the gradient buffers instead of returning fresh arrays because a
parameter can be used more than once per step: BERT ties the word-embedding matrix to the MLM decoder,
and both uses must add up in one gradient (the `+=` makes tying need no special case). Call
``zero_grad`` between steps.

Shapes use one legend: B batch, T tokens, H hidden, A heads, D head size, I intermediate, V vocab,
P predictions (masked positions), N rows, C classes. ``...`` is any number of leading dimensions.
dtype follows the input: float32 for training, float64 for gradient checks; nothing upcasts silently.

The hot pairs (softmax, layer norm, linear+GELU, attention, embedding scatter-add, cross-entropy) also
have Numba versions with the same signatures in ``minibert.kernels.numba_kernels``; model code calls them
through the switch ``minibert.kernels``. This module never calls that switch: it imports only NumPy and
the package's math helpers, and stays the reference the kernels are tested against.
"""
from __future__ import annotations

import math

import numpy as np

from minibert.special import normal_cdf, normal_pdf

# Added to the attention scores of padded keys. exp(-10000) is exactly 0 in float32 and float64, so a
# padded key gets exactly zero attention; a finite value (not -inf) keeps a fully padded row finite
# instead of NaN (softmax ignores the common shift, so such a row is just softmax of its scores; its
# output is never read). The original BERT uses the same -10000.
MASK_BIAS = -10000.0


# ----------------------------------------------------------------------------------------------
# Linear
# ----------------------------------------------------------------------------------------------
def linear_forward(x, weight, bias=None):
    """y = x W^T + b.

    x (..., in), weight (out, in) as in PyTorch / Hugging Face, bias (out,) or None -> y (..., out).
    """
    # One (N, in) @ (in, out) product: a 3-D x @ W^T would run B separate, smaller products.
    y = x.reshape(-1, x.shape[-1]) @ weight.T
    if bias is not None:
        y += bias
    return y.reshape(*x.shape[:-1], weight.shape[0]), (x, weight)


def linear_backward(dy, cache, dweight, dbias=None):
    """Gradients of y = x W^T + b.

    With x flattened to (N, in) and dy to (N, out):
        dx = dy W                 (N, out) @ (out, in)
        dW += dy^T x              (out, N) @ (N, in)  -- summed over every row that used W
        db += sum_n dy[n]
    """
    x, weight = cache
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    dx = (dy2 @ weight).reshape(x.shape)
    dweight += dy2.T @ x2
    if dbias is not None:
        dbias += dy2.sum(axis=0)
    return dx


# ----------------------------------------------------------------------------------------------
# Embedding lookup
# ----------------------------------------------------------------------------------------------
def embedding_forward(ids, weight):
    """out[...] = weight[ids[...]]: ids (...) integer, weight (V, H) -> out (..., H)."""
    return weight[ids], ids


def embedding_backward(dout, ids, dweight):
    """Scatter-add: row v of dW receives the sum of dout over every position whose id is v.

    out[n] = W[ids[n]] is a row selection, so dW[v] = sum_{n : ids[n] = v} dout[n]. ``np.add.at`` is
    the unbuffered add that sums repeated ids correctly (``dW[ids] += dout`` would keep only one).
    """
    np.add.at(dweight, ids.reshape(-1), dout.reshape(-1, dout.shape[-1]))


# ----------------------------------------------------------------------------------------------
# Layer normalisation
# ----------------------------------------------------------------------------------------------
def layernorm_forward(x, gamma, beta, eps=1e-12):
    """y = gamma * xhat + beta, xhat = (x - mean) / sqrt(var + eps), statistics over the last axis.

    x (..., H), gamma (H,), beta (H,) -> y (..., H); cache keeps xhat (..., H) and rstd (..., 1).
    """
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    xhat = xc * rstd
    return xhat * gamma + beta, (xhat, rstd, gamma)


def layernorm_backward(dy, cache, dgamma, dbeta):
    """Gradients of layer norm.

    dgamma += sum over rows of dy * xhat, dbeta += sum over rows of dy. For one row, with g = dy * gamma:
        xhat_i = (x_i - mu) r,  r = (var + eps)^(-1/2),  d mu / dx_j = 1/H,  d r / dx_j = -r^3 (x_j - mu) / H
        dx_j = sum_i g_i d xhat_i / dx_j = r (g_j - mean(g) - xhat_j * mean(g * xhat))
    (the mean(g) term comes from the mean, the xhat term from the variance).
    """
    xhat, rstd, gamma = cache
    dgamma += (dy * xhat).reshape(-1, xhat.shape[-1]).sum(axis=0)
    dbeta += dy.reshape(-1, dy.shape[-1]).sum(axis=0)
    g = dy * gamma
    return rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------------------------
# GELU
# ----------------------------------------------------------------------------------------------
_TANH_K = math.sqrt(2 / math.pi)
_TANH_C = 0.044715


def gelu_forward(x, approximate=False):
    """GELU(x) = x Phi(x) (exact, erf; Hugging Face "gelu"), or its tanh approximation ("gelu_new"):
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Elementwise; the cache is x itself."""
    if approximate:
        inner = x.dtype.type(_TANH_K) * (x + x.dtype.type(_TANH_C) * x * x * x)
        return 0.5 * x * (1 + np.tanh(inner)), (x, approximate)
    return x * normal_cdf(x), (x, approximate)


def gelu_backward(dy, cache):
    """dx = dy * GELU'(x).

    exact:  d/dx [x Phi(x)] = Phi(x) + x phi(x)
    tanh:   with u = k (x + c x^3), t = tanh(u):  0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)
    """
    x, approximate = cache
    if approximate:
        k, c = x.dtype.type(_TANH_K), x.dtype.type(_TANH_C)
        t = np.tanh(k * (x + c * x * x * x))
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * c * x * x))
    return dy * (normal_cdf(x) + x * normal_pdf(x))


def bias_gelu_forward(x, bias, approximate=False):
    """y = GELU(x + b), the feed-forward activation fused with the bias of the matmul before it.

    x (..., I) without bias, bias (I,) -> y (..., I); the cache keeps the pre-activation x + b.
    """
    return gelu_forward(x + bias.astype(x.dtype, copy=False), approximate)


def bias_gelu_backward(dy, cache, dbias):
    """da = dy GELU'(a) with a = x + b, so dx = da and db += sum over rows of da."""
    da = gelu_backward(dy, cache)
    dbias += da.reshape(-1, da.shape[-1]).sum(axis=0)
    return da


def linear_gelu_forward(x, weight, bias, approximate=False):
    """h = GELU(x W^T + b): the feed-forward's first half and the MLM head's transform.

    x (..., in), weight (out, in), bias (out,) -> h (..., out). The Numba backend runs the matmul without
    the bias and adds it inside its fused bias+GELU kernel (one pass over (..., out) fewer).
    """
    a, linear_cache = linear_forward(x, weight, bias)
    h, gelu_cache = gelu_forward(a, approximate)
    return h, (linear_cache, gelu_cache)


def linear_gelu_backward(dh, cache, dweight, dbias):
    """da = dh GELU'(a), then the linear backward: dx = da W, dW += da^T x, db += sum of da's rows."""
    linear_cache, gelu_cache = cache
    return linear_backward(gelu_backward(dh, gelu_cache), linear_cache, dweight, dbias)


# ----------------------------------------------------------------------------------------------
# Dropout (inverted)
# ----------------------------------------------------------------------------------------------
def dropout_forward(x, p, rng, mask=None, drawn_rows=None):
    """Zero each element with probability p and scale the survivors by 1/(1-p), so E[y] = x.

    The scaled mask (0 or 1/(1-p)) is the cache; pass it back in as ``mask`` to replay the same
    dropout (gradient checks, FreeLB's repeated passes). p = 0 is the identity (mask None).
    ``drawn_rows``: see ``dropout_bits``.

    The mask is drawn from 16 random bits per element, four times faster than uniform floats (dropout
    masks are ~20 million draws per training step at the mini size). p therefore acts as the nearest
    multiple of 2^-16 (0.1 -> 0.100006), and the scale uses that same value, so E[y] = x exactly.
    """
    if mask is None:
        if p == 0:
            return x, None
        bits, threshold, scale = dropout_bits(x.shape, p, rng, x.dtype, drawn_rows)
        mask = (bits >= threshold) * scale
    return x * mask, mask


def dropout_bits(shape, p, rng, dtype, drawn_rows=None):
    """The draws of dropout, shared with the Numba kernel (so one seed drops the same elements on both
    backends): 16 random bits per element, the threshold at or above which an element survives, and
    the survivors' scale 1 / (1 - p') in ``dtype``, p' = threshold / 2^16 the p actually applied.

    ``drawn_rows`` = (rows, n): shape is (len(rows), ...), rows of an (n, ...) array that was not
    computed whole. The bits are drawn for all n rows and those of ``rows`` kept, so the draws, and every
    draw after them, are those of the whole computation (the last layer computes the rows the heads
    read only, and training stays the same to rounding)."""
    threshold = round(p * 65536)
    if drawn_rows is None:
        bits = rng.integers(0, 65536, shape, dtype=np.uint16)
    else:
        rows, n = drawn_rows
        bits = rng.integers(0, 65536, (n, *shape[1:]), dtype=np.uint16)[rows]
    return bits, threshold, np.dtype(dtype).type(65536 / (65536 - threshold))


def dropout_backward(dy, mask):
    """y = x * mask elementwise, so dx = dy * mask."""
    return dy if mask is None else dy * mask


# ----------------------------------------------------------------------------------------------
# The end of every sublayer: y = LayerNorm(dropout(x) + residual)
# ----------------------------------------------------------------------------------------------
def dropout_add_layernorm_forward(x, residual, p, rng, gamma, beta, eps=1e-12, drawn_rows=None):
    """y = LayerNorm(dropout(x) + residual), BERT's post-LN sublayer output. x, residual (..., H);
    ``drawn_rows``: see ``dropout_bits`` (x is then (R, H)).

    Here the composition of the three reference operations; the Numba backend does all three in one
    pass over each row (the dropped x and the sum never make a round trip through memory), with the
    same draws and the same arithmetic. The cache is (dropout's, layer norm's).
    """
    dropped, dropout_cache = dropout_forward(x, p, rng, drawn_rows=drawn_rows)
    y, layernorm_cache = layernorm_forward(dropped + residual, gamma, beta, eps)
    return y, (dropout_cache, layernorm_cache)


def dropout_add_layernorm_backward(dy, cache, dgamma, dbeta):
    """Returns (dx, dresidual). With s = dropout(x) + residual, ds = layernorm_backward(dy); a sum passes
    its gradient to both terms, so dresidual = ds and dx = dropout_backward(ds)."""
    dropout_cache, layernorm_cache = cache
    ds = layernorm_backward(dy, layernorm_cache, dgamma, dbeta)
    return dropout_backward(ds, dropout_cache), ds


# ----------------------------------------------------------------------------------------------
# Softmax with an additive mask
# ----------------------------------------------------------------------------------------------
def softmax_forward(x, mask_bias=None):
    """p = softmax(x + mask_bias) over the last axis.

    x (B, ..., N) -- for attention scores (B, A, T, T); mask_bias (B, N) or None, added to every row
    of batch element b (0 for real keys, MASK_BIAS for padding). Subtracting the row max first keeps
    exp from overflowing. The cache is p.
    """
    if mask_bias is not None:
        mask_bias = mask_bias.astype(x.dtype, copy=False)
        x = x + mask_bias.reshape(mask_bias.shape[0], *([1] * (x.ndim - 2)), mask_bias.shape[1])
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return p, p


def softmax_backward(dp, p):
    """dx_i = sum_j dp_j dp_j/dx_i = sum_j dp_j p_j (delta_ij - p_i) = p_i (dp_i - sum_j dp_j p_j).

    The mask bias is a constant: its gradient is not needed. A masked key has p = 0, hence dx = 0.
    """
    return p * (dp - (dp * p).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------------------------
# Scaled dot-product attention over heads
# ----------------------------------------------------------------------------------------------
def attention_forward(q, k, v, mask_bias, dropout_p=0.0, rng=None, dropout_mask=None):
    """context = dropout(softmax(q k^T / sqrt(D) + mask)) v, for every head at once.

    q, k, v (B, A, T, D); mask_bias (B, T) or None (no padding) -> context (B, A, T, D), attention
    probs (B, A, T, T). The cache keeps probs and the dropout mask but not the dropped probabilities:
    the backward recomputes them (one multiply) rather than hold a third (B, A, T, T) array.
    """
    scale = q.dtype.type(1 / math.sqrt(q.shape[-1]))
    scores = (q @ k.swapaxes(-1, -2)) * scale                     # (B, A, T, T)
    probs, _ = softmax_forward(scores, mask_bias)                # (B, A, T, T)
    dropped, dropout_mask = dropout_forward(probs, dropout_p, rng, dropout_mask)
    context = dropped @ v                                        # (B, A, T, D)
    return context, probs, (q, k, v, probs, dropout_mask, scale)


def attention_backward(dcontext, cache):
    """Backward through context = P' v, P' = dropout(P), P = softmax(S), S = scale q k^T.

        dv = P'^T dcontext                  dP' = dcontext v^T
        dP = dropout_backward(dP')          dS = softmax_backward(dP, P)
        dq = scale dS k                     dk = scale dS^T q
    Returns dq, dk, dv, each (B, A, T, D).
    """
    q, k, v, probs, dropout_mask, scale = cache
    dropped = probs if dropout_mask is None else probs * dropout_mask
    dv = dropped.swapaxes(-1, -2) @ dcontext
    del dropped
    dprobs = dropout_backward(dcontext @ v.swapaxes(-1, -2), dropout_mask)
    dscores = softmax_backward(dprobs, probs)
    dscores *= scale
    dq = dscores @ k
    dk = dscores.swapaxes(-1, -2) @ q
    return dq, dk, dv


def unpadded_attention_forward(q, k, v, groups, num_heads, dropout_p=0.0, rng=None, queries=None):
    """Attention over the real tokens only: sequences of different lengths, no padding, no mask.

    k, v (N, H) are the rows of a batch's real tokens, ordered so that the c sequences of each
    length n are consecutive: ``groups`` = ((start row, c, n), ...) (``models.bert.Unpadded``). Each
    group is a view (c, n, H) -> (c, A, n, D) that ``attention_forward`` attends without a mask, since
    no key in it is padding. ``queries``: None if q (N, H) has the rows of k; or, per group, c sorted
    arrays of positions in 0 .. n-1: the queries each sequence asks, the rows of q (R, H) in that
    order (the last layer asks only where the heads read: ``BertModel``). A sequence then attends as a
    block of (1, A, m, n) scores, and its dropout keeps the bits of its m rows from a draw for the
    group's whole (c, A, n, n), so the random stream is that of every query asked.
    Returns context (like q), probs (one (c, A, m, n) per block: per group, or per sequence with
    ``queries``) and the cache.
    """
    context = np.empty_like(q)                                                      # (N or R, H)
    probs, caches = [], []
    blocks = attention_blocks(groups, queries)
    masks = _replayed_masks(groups, queries, num_heads, dropout_p, rng, q.dtype) or [None] * len(blocks)
    for (k_group, q_group), mask in zip(blocks, masks):
        q_g = heads_view(q, q_group, num_heads)                                     # (c, A, m, D)
        k_g, v_g = (heads_view(a, k_group, num_heads) for a in (k, v))              # (c, A, n, D)
        c, p, cache = attention_forward(q_g, k_g, v_g, None, dropout_p, rng, mask)
        heads_view(context, q_group, num_heads)[...] = c
        probs.append(p)                                                             # (c, A, m, n)
        caches.append(cache)
    return context, tuple(probs), (blocks, num_heads, k.shape, caches)


def unpadded_attention_backward(dcontext, cache):
    """``attention_backward`` block by block; dcontext (like q) -> dq (like q), dk, dv (N, H)."""
    blocks, num_heads, kv_shape, caches = cache
    dq = np.empty_like(dcontext)
    dk, dv = (np.empty(kv_shape, dtype=dcontext.dtype) for _ in range(2))
    for (k_group, q_group), block_cache in zip(blocks, caches):
        dq_g, dk_g, dv_g = attention_backward(heads_view(dcontext, q_group, num_heads), block_cache)
        heads_view(dq, q_group, num_heads)[...] = dq_g
        heads_view(dk, k_group, num_heads)[...] = dk_g
        heads_view(dv, k_group, num_heads)[...] = dv_g
    return dq, dk, dv


def attention_blocks(groups, queries):
    """The blocks attention runs as, each a pair (keys' rows, queries' rows) = ((start, c, n), (first,
    c, m)): the groups themselves without ``queries``, else one block per sequence."""
    if queries is None:
        return [(group, group) for group in groups]
    blocks, first = [], 0
    for (start, c, n), positions in zip(groups, queries):
        for i, local in enumerate(positions):
            blocks.append(((start + i * n, 1, n), (first, 1, len(local))))
            first += len(local)
    return blocks


def _replayed_masks(groups, queries, num_heads, dropout_p, rng, dtype):
    """Each block's dropout mask to replay; None if the blocks draw their own as they attend (no
    ``queries``: the groups draw in order, as the whole computation does) or there is no dropout."""
    if queries is None or dropout_p == 0:
        return None
    draws, threshold, scale = attention_bits(groups, queries, num_heads, dropout_p, rng, dtype)
    return [(bits >= threshold) * scale for bits in draws]


def attention_bits(groups, queries, num_heads, p, rng, dtype):
    """Attention dropout's draws, shared with the Numba kernel: each group draws for its whole
    (c, A, n, n), in order, and with ``queries`` sequence i keeps its query rows, (1, A, m, n), so the
    random stream is that of every query asked. Returns (each block's bits, in the order of
    ``attention_blocks``, threshold, scale) as ``dropout_bits``."""
    draws, threshold, scale = [], None, None
    for (_, c, n), positions in zip(groups, [None] * len(groups) if queries is None else queries):
        bits, threshold, scale = dropout_bits((c, num_heads, n, n), p, rng, dtype)
        draws += [bits] if positions is None else [bits[i:i + 1][:, :, local] for i, local in enumerate(positions)]
    return draws, threshold, scale


def heads_view(a, group, num_heads):
    """The view (c, A, n, D) of the rows start ... start + c n of a (N, H), group = (start, c, n):
    c sequences of n tokens, each row split into A heads of D = H / A."""
    start, count, n = group
    rows = a[start:start + count * n]
    return rows.reshape(count, n, num_heads, a.shape[1] // num_heads).transpose(0, 2, 1, 3)


# ----------------------------------------------------------------------------------------------
# Softmax cross-entropy with per-row weights
# ----------------------------------------------------------------------------------------------
def cross_entropy_forward(logits, targets, weights=None):
    """loss = sum_n w_n * (-log softmax(logits_n)[targets_n]) / denominator.

    logits (N, C), targets (N,) integer in [0, C), weights (N,) or None. With weights the denominator is
    sum(w) + 1e-5, as in the original BERT's masked-LM loss (padding predictions carry w = 0); without,
    it is N (the plain mean, as for next-sentence prediction). Returns a NumPy scalar of logits' dtype and
    the cache (softmax probabilities, targets, per-row scale w_n / denominator).
    """
    n = logits.shape[0]
    row_scale = cross_entropy_row_scale(logits, targets, weights)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    nll = log_z - shifted[np.arange(n), targets]
    probs = np.exp(shifted - log_z[:, None])
    return (row_scale * nll).sum(dtype=logits.dtype), (probs, targets, row_scale)


def cross_entropy_row_scale(logits, targets, weights=None):
    """Check targets (and weights) against logits (N, C); return each row's factor w_n / denominator (N,).
    Shared by the NumPy and Numba cross-entropy, so both validate and weigh identically."""
    n, c = logits.shape
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},), got {targets.shape}")
    if n and (targets.min() < 0 or targets.max() >= c):
        raise ValueError(f"targets must be in [0, {c}), got values in [{targets.min()}, {targets.max()}]")
    if weights is None:
        return np.full(n, 1 / max(n, 1), dtype=logits.dtype)
    if weights.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {weights.shape}")
    weights = weights.astype(logits.dtype, copy=False)
    return weights / (weights.sum() + logits.dtype.type(1e-5))


def cross_entropy_backward(dloss, cache):
    """d nll_n / d logits_n = softmax(logits_n) - onehot(target_n); each row is scaled by w_n / denom.

    dloss is the scalar upstream gradient (1 for a loss minimised directly). Returns dlogits (N, C).
    """
    probs, targets, row_scale = cache
    dlogits = probs.copy()
    dlogits[np.arange(len(targets)), targets] -= 1
    dlogits *= (row_scale * dloss)[:, None]
    return dlogits


# ----------------------------------------------------------------------------------------------
# The log-softmax's normaliser, in float64 (held-out evaluation, cloze probes)
# ----------------------------------------------------------------------------------------------
def log_softmax_normaliser(logits):
    """Per row of logits (R, C): shift = max_j l_j and log_total = log sum_j exp(l_j - shift), both
    (R,) float64, so that

        log softmax(l)_j = (l_j - shift) - log_total.

    In float64 whatever the logits' dtype: the held-out loss sums thousands of log-probabilities, and
    the probes compare two words' log-probabilities that can differ in the last digits float32 has.
    Subtracting the max keeps exp from overflowing (the largest term is exp(0) = 1), and l_j - shift is
    exact in float64 when l is float32. Inference only: there is no backward."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (R, C), got {logits.shape}")
    x = logits.astype(np.float64)                                                  # (R, C)
    shift = x.max(-1)                                                              # (R,)
    return shift, np.log(np.exp(x - shift[:, None]).sum(-1))


# ----------------------------------------------------------------------------------------------
# AdamW's update of one parameter
# ----------------------------------------------------------------------------------------------
def adamw_update(p, g, m, v, b1, b2, eps, lr_c1, c2, decay, buf):
    """One AdamW step for one parameter, in place (``optim.AdamW.step`` derives the scalars):

        m = b1 m + (1 - b1) g                     v = b2 v + (1 - b2) g^2
        p = decay p - lr_c1 m / (c2 sqrt(v) + eps)

    with lr_c1 = lr / (1 - b1^t) and c2 = 1 / sqrt(1 - b2^t) (bias correction; both 1 without it) and
    decay = 1 - lr wd (1 for the parameters that take no weight decay). p, g, m, v and the scratch buf
    have one shape; the scalars are applied in p's dtype, one elementwise pass at a time.
    """
    dt = p.dtype.type
    m *= dt(b1)
    np.multiply(g, dt(1.0 - b1), out=buf)
    m += buf
    v *= dt(b2)
    np.multiply(g, g, out=buf)
    buf *= dt(1.0 - b2)
    v += buf
    np.sqrt(v, out=buf)
    buf *= dt(c2)
    buf += dt(eps)
    np.divide(m, buf, out=buf)
    buf *= dt(lr_c1)
    p *= dt(decay)
    p -= buf

