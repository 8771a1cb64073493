"""Exercises on BERT's layers (lessons 04, 05, 08): one attention head, multi-head attention with a
padding mask, the encoder layer's backward in order, and the MLM decoder tied to the word
embeddings."""

from __future__ import annotations

import math

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
    unpack,
)
from minibert.exercises.ops import check_accumulates


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------------------- one head
HEAD = '''
import numpy as np


def attention_head_forward(q, k, v):
    """One head of scaled dot-product attention, no mask:
        context = softmax(q k^T / sqrt(D)) v,   softmax over the keys (the last axis of the scores)
    q, k, v (B, T, D) -> context (B, T, D). Returns (context, cache)."""
    raise NotImplementedError


def attention_head_backward(dcontext, cache):
    """Return (dq, dk, dv), each (B, T, D), from dcontext (B, T, D).
    Starting point: S = s q k^T (s = 1/sqrt(D)), P = softmax(S) row by row, C = P v. Go backwards:
    C = P v gives dP and dv; the softmax gives dS from dP and P; S = s q k^T gives dq and dk."""
    raise NotImplementedError
'''


def _head(q, k, v, scale=None, axis=-1, transpose_p=False):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    p = _softmax(q @ k.swapaxes(-1, -2) * scale, axis)
    return (p.swapaxes(-1, -2) if transpose_p else p) @ v


def _head_reference(q, k, v, dcontext):
    context, _, cache = F.attention_forward(
        q[:, None], k[:, None], v[:, None], np.zeros(q.shape[:2])
    )
    dq, dk, dv = F.attention_backward(dcontext[:, None], cache)
    return context[:, 0], (dq[:, 0], dk[:, 0], dv[:, 0])


def _grade_head(m, r: Report):
    rng = np.random.default_rng(5)
    B, T, D = 2, 5, 4
    q, k, v = (rng.standard_normal((B, T, D)) * 1.5 for _ in range(3))
    dc = rng.standard_normal((B, T, D))
    ref_c, ref_grads = _head_reference(q, k, v, dc)
    context, cache = unpack(call(m, "attention_head_forward", q, k, v), 2, "attention_head_forward")
    if not compare(r, "forward, q, k, v (2, 5, 4)", "context", context, ref_c):
        fail_with_diagnosis(r, context, {
            "forgot the 1/sqrt(D) scale of the scores": lambda: _head(q, k, v, 1.0),
            "scaled by 1/D instead of 1/sqrt(D)": lambda: _head(q, k, v, 1 / D),
            "softmax over the queries (axis -2), not over the keys (the last axis)":
                lambda: _head(q, k, v, axis=-2),
            "P^T v instead of P v": lambda: _head(q, k, v, transpose_p=True)})
    grads = unpack(call(m, "attention_head_backward", dc, cache), 3, "attention_head_backward")
    s = 1 / math.sqrt(D)
    p = _softmax(q @ k.swapaxes(-1, -2) * s)
    dp = dc @ v.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) * s
    for name, got, ref in zip(("dq", "dk", "dv"), grads, ref_grads):
        if not compare(r, f"backward: {name}", name, got, ref):
            fail_with_diagnosis(r, got, {
                "the 1/sqrt(D) scale is missing from the backward":
                    lambda: (ref / s if name != "dv" else None),
                "dk = dS q: the scores' transpose is missing (dk = dS^T q)": lambda: ds @ q,
                "dv = P dC: the transpose is missing (dv = P^T dC)": lambda: p @ dc,
                "the softmax's backward is missing (dS = dP)":
                    lambda: (dp * s) @ (k if name == "dq" else q)})
    gradient_check(r, "gradients agree with finite differences",
                   weighted_sum(m, "attention_head_forward", dc, q, k, v),
                   {"q": q, "k": k, "v": v},
                   dict(zip(("q", "k", "v"), grads)))


# ----------------------------------------------------------------------------- multi-head with mask
MULTIHEAD = '''
import numpy as np

MASK_BIAS = -10000.0    # added to the scores of padded keys (exp(-10000) is exactly 0)


def multihead_attention_forward(x, attention_mask, wq, bq, wk, bk, wv, bv, num_heads):
    """BERT's self-attention (before its output projection), for every head at once.

    x (B, T, H); attention_mask (B, T) with 1 for a real token and 0 for padding; w* (H, H) stored
    (out, in) and b* (H,); A = num_heads heads of size D = H / A.
        q = x wq^T + bq, k, v alike          (B, T, H) -> split into heads (B, A, T, D)
        scores = q k^T / sqrt(D) + mask      (B, A, T, T): no query may attend to a padded KEY
        context = softmax(scores) v          (B, A, T, D) -> merged back to (B, T, H)
    Splitting keeps each token's features together: reshape (B, T, A, D), then move A before T.
    Returns (context (B, T, H), cache)."""
    raise NotImplementedError


def multihead_attention_backward(dcontext, cache, dwq, dbq, dwk, dbk, dwv, dbv):
    """Return dx (B, T, H); ADD (+=) the six parameter gradients into the buffers given.
    Starting point: the backward of each step in reverse order; x feeds three projections, so its
    gradient is the sum of three contributions."""
    raise NotImplementedError
'''


def _split(t, a):
    B, T, H = t.shape
    return t.reshape(B, T, a, H // a).transpose(0, 2, 1, 3)


def _merge(t):
    B, A, T, D = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, T, A * D)


def _multihead(x, mask, params, a, mistake=None):
    wq, bq, wk, bk, wv, bv = params
    q, k, v = (x @ w.T + b for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    if mistake == "split":
        B, T, H = x.shape
        q, k, v = (t.reshape(B, a, T, H // a) for t in (q, k, v))
    else:
        q, k, v = (_split(t, a) for t in (q, k, v))
    scale = 1.0 if mistake == "scale" else 1 / math.sqrt(q.shape[-1])
    bias = (1 - mask) * F.MASK_BIAS
    s = q @ k.swapaxes(-1, -2) * scale
    if mistake == "query_axis":
        s = s + bias[:, None, :, None]
    elif mistake != "no_mask":
        s = s + bias[:, None, None, :]
    c = _softmax(s) @ v
    if mistake == "split":
        return c.reshape(x.shape)
    return _merge(c)


def _grade_multihead(m, r: Report):
    rng = np.random.default_rng(6)
    B, T, H, A = 3, 6, 8, 2
    x = rng.standard_normal((B, T, H))
    mask = (np.arange(T)[None, :] < np.array([6, 4, 2])[:, None]).astype(np.int64)
    params = [rng.standard_normal(s) * 0.6 for s in ((H, H), (H,)) * 3]
    context, cache = unpack(
        call(m, "multihead_attention_forward", x, mask, *params, A),
        2,
        "multihead_attention_forward",
    )
    if not compare(
        r,
        "forward, x (3, 6, 8), 2 heads, sequences of 6, 4 and 2 tokens",
        "context",
        context,
        _multihead(x, mask, params, A),
    ):
        fail_with_diagnosis(r, context, {
            "mask added on the wrong axis: it must hide padded KEYS (the last axis of the "
            "scores), not padded queries":
                lambda: _multihead(x, mask, params, A, "query_axis"),
            "the padding mask is not applied": lambda: _multihead(x, mask, params, A, "no_mask"),
            "forgot the 1/sqrt(D) scale of the scores":
                lambda: _multihead(x, mask, params, A, "scale"),
            "heads split by a bare reshape to (B, A, T, D): reshape to (B, T, A, D), then "
            "transpose":
                lambda: _multihead(x, mask, params, A, "split")})
    # The package's pair on the same split heads: context and every gradient.
    wq, bq, wk, bk, wv, bv = params
    proj = [F.linear_forward(x, w, b) for w, b in ((wq, bq), (wk, bk), (wv, bv))]
    mask_bias = ((1 - mask) * F.MASK_BIAS).astype(np.float64)
    _, _, att_cache = F.attention_forward(*(_split(p[0], A) for p in proj), mask_bias)
    dc = rng.standard_normal((B, T, H))
    dq, dk, dv = F.attention_backward(_split(dc, A), att_cache)
    ref = [np.zeros_like(p) for p in params]
    ref_dx = sum(
        F.linear_backward(_merge(d), c[1], ref[2 * i], ref[2 * i + 1])
        for i, (d, c) in enumerate(zip((dq, dk, dv), proj))
    )
    grads = [np.zeros_like(p) for p in params]
    dx = call(m, "multihead_attention_backward", dc, cache, *grads)
    if not compare(r, "backward: dx", "dx", dx, ref_dx):
        fail_with_diagnosis(r, dx, {
            "dx keeps only one projection's part: x feeds q, k and v, so dx is the sum of three":
                lambda: F.linear_backward(_merge(dv), proj[2][1], np.zeros_like(wv), None)})
    names = ("dwq", "dbq", "dwk", "dbk", "dwv", "dbv")
    for name, got, want in zip(names, grads, ref):
        compare(r, f"backward: {name}", name, got, want)
    gradient_check(r, "gradients agree with finite differences",
                   weighted_sum(m, "multihead_attention_forward", dc, x, mask, *params, A),
                   {"x": x, **dict(zip(("wq", "bq", "wk", "bk", "wv", "bv"), params))},
                   {"x": dx, **dict(zip(("wq", "bq", "wk", "bk", "wv", "bv"), grads))})
    real = mask.astype(bool)
    x2 = x.copy()
    x2[~real] = rng.standard_normal(((~real).sum(), H)) * 5
    c2, _ = unpack(
        call(m, "multihead_attention_forward", x2, mask, *params, A),
        2,
        "multihead_attention_forward",
    )
    compare(
        r,
        "real tokens ignore whatever sits at padded positions",
        "context at real tokens",
        as_array("context", c2)[real],
        as_array("context", context)[real],
    )


# --------------------------------------------------------------------------------- encoder backward
LAYER_KEYS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)

ENCODER = '''
import numpy as np

from minibert import functional as F


def encoder_layer_forward(x, mask_bias, params, num_heads):
    """One post-LN BERT encoder layer (dropout off), GIVEN: your task is the backward below.
        a = LayerNorm(x + (Attention(x) Wo^T + bo))
        y = LayerNorm(a + (GELU(a W1^T + b1) W2^T + b2))
    x (B, T, H); mask_bias (B, T) (0 or -10000); params: Hugging Face names -> arrays.
    Returns (y, cache).
    """
    P = params
    B, T, H = x.shape
    split = lambda t: t.reshape(B, T, num_heads, H // num_heads).transpose(0, 2, 1, 3)  # noqa: E731
    q, c_q = F.linear_forward(x, P["attention.self.query.weight"], P["attention.self.query.bias"])
    k, c_k = F.linear_forward(x, P["attention.self.key.weight"], P["attention.self.key.bias"])
    v, c_v = F.linear_forward(x, P["attention.self.value.weight"], P["attention.self.value.bias"])
    context, _, c_att = F.attention_forward(split(q), split(k), split(v), mask_bias)
    merged = context.transpose(0, 2, 1, 3).reshape(B, T, H)
    o, c_o = F.linear_forward(merged, P["attention.output.dense.weight"],
                              P["attention.output.dense.bias"])
    a, c_ln1 = F.layernorm_forward(o + x, P["attention.output.LayerNorm.weight"],
                                   P["attention.output.LayerNorm.bias"])
    h, c_i = F.linear_forward(a, P["intermediate.dense.weight"], P["intermediate.dense.bias"])
    g, c_g = F.gelu_forward(h)
    f, c_f = F.linear_forward(g, P["output.dense.weight"], P["output.dense.bias"])
    y, c_ln2 = F.layernorm_forward(f + a, P["output.LayerNorm.weight"], P["output.LayerNorm.bias"])
    cache = {"q": c_q, "k": c_k, "v": c_v, "attention": c_att, "attention_output": c_o,
             "ln1": c_ln1, "intermediate": c_i, "gelu": c_g, "output": c_f, "ln2": c_ln2,
             "num_heads": num_heads}
    return y, cache


def encoder_layer_backward(dy, cache, grads):
    """Return dx (B, T, H) from dy (B, T, H); ADD (+=) every parameter's gradient into grads[name]
    (the same names as params, e.g. grads["output.LayerNorm.weight"]).

    Starting point: walk the forward from the bottom up, calling each pair's backward
    (F.layernorm_backward, F.linear_backward, F.gelu_backward, F.attention_backward, ...). Where a
    value was used twice (a residual, x feeding q, k and v), its gradient is the SUM of both uses.
    """
    raise NotImplementedError
'''


def _encoder_params(rng, H, I):
    p = {}
    for key in LAYER_KEYS:
        if key.endswith("LayerNorm"):
            p[key + ".weight"] = 1 + 0.3 * rng.standard_normal(H)
            p[key + ".bias"] = 0.3 * rng.standard_normal(H)
        else:
            out_f, in_f = {"intermediate.dense": (I, H), "output.dense": (H, I)}.get(key, (H, H))
            p[key + ".weight"] = rng.standard_normal((out_f, in_f)) * 0.5
            p[key + ".bias"] = rng.standard_normal(out_f) * 0.3
    return p


def _encoder_forward(x, mask_bias, P, A):
    """The template's forward (the same code), run by the grader for the reference."""
    B, T, H = x.shape
    caches = {}
    q, caches["q"] = F.linear_forward(
        x, P["attention.self.query.weight"], P["attention.self.query.bias"]
    )
    k, caches["k"] = F.linear_forward(
        x, P["attention.self.key.weight"], P["attention.self.key.bias"]
    )
    v, caches["v"] = F.linear_forward(
        x, P["attention.self.value.weight"], P["attention.self.value.bias"]
    )
    context, _, caches["attention"] = F.attention_forward(
        _split(q, A), _split(k, A), _split(v, A), mask_bias
    )
    o, caches["attention_output"] = F.linear_forward(
        _merge(context), P["attention.output.dense.weight"], P["attention.output.dense.bias"]
    )
    a, caches["ln1"] = F.layernorm_forward(
        o + x, P["attention.output.LayerNorm.weight"], P["attention.output.LayerNorm.bias"]
    )
    h, caches["intermediate"] = F.linear_forward(
        a, P["intermediate.dense.weight"], P["intermediate.dense.bias"]
    )
    g, caches["gelu"] = F.gelu_forward(h)
    f, caches["output"] = F.linear_forward(g, P["output.dense.weight"], P["output.dense.bias"])
    y, caches["ln2"] = F.layernorm_forward(
        f + a, P["output.LayerNorm.weight"], P["output.LayerNorm.bias"]
    )
    caches["num_heads"] = A
    return y, caches


def _encoder_backward(dy, c, grads, mistake=None):
    """The backward in reverse order; ``mistake`` plants one of the classic slips, for the
    diagnosis."""
    G = grads
    A = c["num_heads"]
    dsum2 = F.layernorm_backward(
        dy, c["ln2"], G["output.LayerNorm.weight"], G["output.LayerNorm.bias"]
    )
    dg = F.linear_backward(dsum2, c["output"], G["output.dense.weight"], G["output.dense.bias"])
    dh = F.gelu_backward(dg, c["gelu"])
    da = F.linear_backward(
        dh, c["intermediate"], G["intermediate.dense.weight"], G["intermediate.dense.bias"]
    )
    if mistake != "ffn_residual":
        da = da + dsum2  # a fed the feed-forward and the residual
    dsum1 = F.layernorm_backward(
        da, c["ln1"], G["attention.output.LayerNorm.weight"], G["attention.output.LayerNorm.bias"]
    )
    dmerged = F.linear_backward(
        dsum1,
        c["attention_output"],
        G["attention.output.dense.weight"],
        G["attention.output.dense.bias"],
    )
    dq, dk, dv = F.attention_backward(_split(dmerged, A), c["attention"])
    parts = [
        F.linear_backward(
            _merge(d), c[n], G[f"attention.self.{key}.weight"], G[f"attention.self.{key}.bias"]
        )
        for d, n, key in ((dq, "q", "query"), (dk, "k", "key"), (dv, "v", "value"))
    ]
    if mistake == "last_projection":
        return parts[-1] + dsum1
    dx = parts[0] + parts[1] + parts[2]
    if mistake != "attention_residual":
        dx = dx + dsum1  # x fed the attention and the residual
    return dx


def _grade_encoder(m, r: Report):
    rng = np.random.default_rng(7)
    B, T, H, A, I = 2, 5, 6, 2, 10
    x = rng.standard_normal((B, T, H))
    mask_bias = np.zeros((B, T))
    mask_bias[1, 3:] = F.MASK_BIAS
    params = _encoder_params(rng, H, I)
    y, cache = _encoder_forward(x, mask_bias, params, A)
    dy = rng.standard_normal(y.shape)

    def run(mistake=None):
        g = {k: np.zeros_like(v) for k, v in params.items()}
        return _encoder_backward(dy, cache, g, mistake), g

    ref_dx, ref_grads = run()
    # The learner's backward reads the cache of the template's forward, which the grader rebuilds
    # from the learner's own file when it is still there (so a learner who changed the cache layout
    # is graded on it), else from the same code here.
    forward = getattr(m, "encoder_layer_forward", None)
    if callable(forward):
        _, cache = unpack(
            call(m, "encoder_layer_forward", x, mask_bias, params, A), 2, "encoder_layer_forward"
        )
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dx = call(m, "encoder_layer_backward", dy, cache, grads)
    if not compare(r, "backward: dx, x (2, 5, 6), 2 heads, one padded sequence", "dx", dx, ref_dx):
        fail_with_diagnosis(r, dx, {
            "the feed-forward's residual is missing: a feeds the feed-forward AND the second "
            "residual, so da is the sum of both":
                lambda: run("ffn_residual")[0],
            "the attention's residual is missing: dx needs the first layer norm's gradient too":
                lambda: run("attention_residual")[0],
            "x feeds q, k and v: dx must add the three projections' gradients, not keep the last":
                lambda: run("last_projection")[0]})
    for name, want in ref_grads.items():
        if not compare(r, f"backward: {name}", name, grads.get(name), want):
            break  # the first parameter that differs is named; enough

    def loss():
        return float(np.sum(_encoder_forward(x, mask_bias, params, A)[0] * dy))

    gradient_check(
        r,
        "gradients agree with finite differences (first disagreement named)",
        loss,
        {"x": x, **params},
        {"x": dx, **grads},
    )
    grads1 = {k: np.full_like(v, 0.5) for k, v in params.items()}
    call(m, "encoder_layer_backward", dy, cache, grads1)
    name = "intermediate.dense.weight"
    check_accumulates(
        r,
        "backward adds into the gradient buffers (+=)",
        f"grads[{name!r}]",
        grads1[name],
        0.5,
        ref_grads[name],
    )


# --------------------------------------------------------------------------------- tied MLM decoder
MLM = '''
import numpy as np


def mlm_decoder_forward(h, word_embeddings, bias):
    """The MLM decoder, tied to the input embeddings: logits = h E^T + b.
    h (P, H) the transformed hidden states at the P masked positions; word_embeddings E (V, H),
    the very matrix the input lookup uses; bias (V,). Returns (logits (P, V), cache)."""
    raise NotImplementedError


def mlm_decoder_backward(dlogits, cache, dword_embeddings, dbias):
    """Return dh (P, H); ADD (+=) into dword_embeddings (V, H) and dbias (V,).
    dword_embeddings already holds the gradient of the input lookup when this runs: E is used
    twice, so its gradient is the sum of both uses.
    Starting point: logits[p, v] = sum_i h[p, i] E[v, i] + b[v]."""
    raise NotImplementedError
'''


def _grade_mlm(m, r: Report):
    rng = np.random.default_rng(8)
    P, H, V = 5, 4, 9
    h, E, b = rng.standard_normal((P, H)), rng.standard_normal((V, H)), rng.standard_normal(V)
    logits, cache = unpack(call(m, "mlm_decoder_forward", h, E, b), 2, "mlm_decoder_forward")
    if not compare(
        r, "forward: logits = h E^T + b, h (5, 4), E (9, 4)", "logits", logits, h @ E.T + b
    ):
        fail_with_diagnosis(r, logits, {"the bias is missing": lambda: h @ E.T})
    dlogits = rng.standard_normal((P, V))
    ids = rng.integers(0, V, (2, 6))
    lookup = np.zeros_like(E)  # the input lookup's part, already in the buffer
    F.embedding_backward(rng.standard_normal((2, 6, H)), ids, lookup)
    dE, db = lookup.copy(), np.zeros(V)
    dh = call(m, "mlm_decoder_backward", dlogits, cache, dE, db)
    ref_dE, ref_db = np.zeros_like(E), np.zeros(V)
    ref_dh = F.linear_backward(dlogits, F.linear_forward(h, E, b)[1], ref_dE, ref_db)
    compare(r, "backward: dh", "dh", dh, ref_dh)
    check_accumulates(
        r,
        "the tied weight's gradient is lookup + decoder (+=)",
        "dword_embeddings",
        dE,
        lookup,
        ref_dE,
    )
    compare(r, "backward: dbias", "dbias", db, ref_db)
    gradient_check(r, "gradients agree with finite differences",
                   weighted_sum(m, "mlm_decoder_forward", dlogits, h, E, b),
                   {"h": h, "bias": b},
                   {"h": dh, "bias": db})


EXERCISES = [
    Exercise(
        "attention_head",
        "one head of scaled dot-product attention",
        "04",
        HEAD,
        (
            "Scores are q @ k.swapaxes(-1, -2) times 1/sqrt(D), D = q.shape[-1]; softmax over the "
            "last axis "
            "(subtract the row max). Cache q, k, v and P.",
            "Backward: dv = P^T dC and dP = dC v^T; dS = P * (dP - sum(dP * P, last axis)).",
            "Then dq = s dS k and dk = s dS^T q (dS^T: swap the last two axes).",
        ),
        _grade_head,
    ),
    Exercise(
        "multihead_attention",
        "multi-head self-attention with a padding mask",
        "04",
        MULTIHEAD,
        (
            "Split: t.reshape(B, T, A, D).transpose(0, 2, 1, 3); merge: the inverse. The mask "
            "becomes a bias "
            "(1 - attention_mask) * MASK_BIAS of shape (B, T).",
            "The bias hides KEYS: add it as bias[:, None, None, :] to scores (B, A, T, T), so "
            "every query row "
            "of batch b sees the same padded columns.",
            "Backward: merge-inverse (split) dcontext, go back through P v and the softmax and the "
            "scale, merge "
            "dq, dk, dv, then each projection's linear backward; dx is the sum of the three.",
        ),
        _grade_multihead,
    ),
    Exercise(
        "encoder_backward",
        "the encoder layer's backward, in order",
        "05",
        ENCODER,
        (
            "Start at the top: dsum2 = layernorm_backward(dy, cache['ln2'], ...). The sum f + a "
            "sends dsum2 "
            "unchanged to both f and a.",
            "Then output.dense, GELU, intermediate.dense give da from the feed-forward; add dsum2 "
            "(the "
            "residual) before the first layer norm's backward.",
            "Attention: split the output projection's dx into heads, F.attention_backward, merge "
            "dq, dk, dv, "
            "three linear backwards; dx = their sum + the first layer norm's dx (the residual).",
        ),
        _grade_encoder,
    ),
    Exercise(
        "mlm_tied",
        "the MLM decoder tied to the word embeddings (the +=)",
        "08",
        MLM,
        (
            "The forward is a linear layer whose weight is E (V, H): logits = h @ E.T + b.",
            "dh = dlogits E; the decoder's part of dE is dlogits^T h, shape (V, H).",
            "dword_embeddings += dlogits.T @ h (with =, the lookup's gradient would be lost); "
            "dbias += "
            "dlogits.sum(axis=0).",
        ),
        _grade_mlm,
    ),
]
