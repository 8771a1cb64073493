"""Adversarial fine-tuning on the word embeddings: FreeLB (Zhu et al., ICLR 2020) and SMART (Jiang et al.,
ACL 2020).

Both perturb the word-embedding output of BERT (before position and segment embeddings are added, as
``BertForSequenceClassification.forward(..., inputs_embeds_delta=delta)`` does) with delta (B, T, H),
zero at padding, and both train on a worst case found by gradient ascent on delta. A step function
replaces the plain ``model.forward(...); model.backward()``: it runs every pass it needs, leaves the
gradient of its objective in the parameter gradients (which the caller zeroed) and returns a dict of
floats for the log.

FreeLB: the average loss over K ascent steps
--------------------------------------------
    delta_0 = U(-1, 1) * mask * init_mag / sqrt(T_real * H)        per example, T_real = real tokens
    for k = 0 .. K-1:
        L_k = loss(x + delta_k)                                    same dropout masks for every k
        grads += d(L_k / K) / d theta                              parameter gradients accumulate
        g = d L_k / d delta_k (masked)
        delta_{k+1} = delta_k + alpha * g / ||g||_F                per example, ||.||_F over (T, H)
        if eps > 0: delta_{k+1} *= min(1, eps / ||delta_{k+1}||_F)

so one optimiser step follows the gradient of (1/K) sum_k L_k: K-1 "free" ascent steps whose parameter
gradients are not wasted. ``freelb_step`` returns ``loss`` = L_0 (the clean loss when init_mag = 0, the
loss at the small random start otherwise) and ``adv_loss`` = mean_k L_k (the objective, and what the
authors' code logs), plus ``delta_norm`` = the largest ||delta||_F of the last pass.

SMART: a smoothness regulariser and a proximal (teacher) term
-------------------------------------------------------------
    objective = L(theta) + lambda_s * R_s + mu * D_breg
    R_s    = l_s(f(x + delta; theta), f(x; theta))     delta = one ascent step, ||delta||_inf <= eps
    D_breg = l_s(f(x; theta), f(x; theta_tilde))       theta_tilde: a slow moving average of theta
    l_s(a, b) = mean over the batch of KL(P||Q) + KL(Q||P),  P = softmax(a), Q = softmax(b)

(for regression, num_labels = 1, l_s is the squared difference of the outputs, as in the paper). delta
comes from delta_0 ~ N(0, sigma^2) (masked) by one normalised ascent step on l_s(f(x + delta_0), f(x)):
g = d l_s / d delta_0 with f(x) held fixed, delta = delta_0 + eta * g / ||g||_inf (per example), then
projected on the ball ||delta||_inf <= eps (clipping every entry). delta is then a constant: the
parameter gradient of R_s goes through both forwards, the perturbed one AND the clean one (the full
symmetric gradient below on both logits).

Order of the passes. A module keeps the cache of its last forward only, so every backward must follow
its own forward before the next forward. ``smart_step`` runs, with one saved random state S restored
before each (so every pass draws the same dropout and Mixout masks):
    (t) teacher forward (if mu > 0 and a teacher is given)        -> teacher logits, constant
    (a) clean forward                                             -> clean logits c, a constant target
    (b) noisy forward at delta_0, backward of l_s(., c)           -> g; its parameter gradients are
        discarded (the gradients are restored to what they were before the call)
    (c) adversarial forward at delta, backward of lambda_s * l_s(., c) w.r.t. the adversarial logits
    (d) clean forward with labels, backward of loss + lambda_s * d l_s / d c + mu * d D_breg / d c
The clean logits are needed before the search (b) and their gradient only after the adversarial forward
(c), so the clean forward runs twice: (a) and (d) give identical logits (same parameters, same masks).
Cost: 4 forwards + 3 backwards (+ 1 teacher forward) per step, against 1 + 1 for a plain step.
With lambda_s = 0 only (t) and (d) run; with lambda_s = 0 and no Bregman term the step is the plain one.

Same dropout masks. Every pass of a step replays the masks: R_s measures the perturbation alone,
not the difference between two dropout samples, and the ascent direction (b) is that of delta_0's
effect, not of dropout noise (which, at sigma = 1e-5, would dwarf it). The teacher replays the same
masks too (its generator is set to S), so D_breg(theta, theta) = 0 exactly: the term measures how
far the parameters moved, not dropout noise. After a step, ``model.rng`` is where one plain step
would have left it.

The symmetric KL and its gradient
---------------------------------
With r = log P - log Q (per class), KL(P||Q) + KL(Q||P) = sum_c (P_c - Q_c) r_c. Using
dP_c/da_j = P_c (delta_cj - P_j) and d log P_c/da_j = delta_cj - P_j:

    d/da_j = sum_c P_c (delta_cj - P_j) r_c + sum_c (P_c - Q_c)(delta_cj - P_j)
           = P_j r_j - P_j KL(P||Q) + (P_j - Q_j) - P_j sum_c (P_c - Q_c)
           = P_j (log P_j - log Q_j - KL(P||Q)) + (P_j - Q_j)           (sum_c (P_c - Q_c) = 0)

and by symmetry d/db_j = Q_j (log Q_j - log P_j - KL(Q||P)) + (Q_j - P_j); both divided by B (the
mean over the batch). Near P = Q the two terms are equal to first order (P r ~ P - Q ~ Q r), so the
full gradient is about 2 (P - Q).

SMART compares two nearly equal distributions (delta ~ 1e-5), so ``symmetric_kl`` computes r from the
logit difference d = a - b, not as a difference of two log-softmaxes: r = d - log(sum_c Q_c exp(d_c))
= d - log1p(sum_c Q_c expm1(d_c)), and P - Q = Q expm1(r). Each is then accurate to float32 precision
relative to its own (tiny) size, where log P - log Q would carry an absolute error of ~1e-7 (relative
error 1e-7 / |d|).

Defaults: sigma = 1e-5, eta = 1e-3, eps = 1e-5 for the perturbation; ``BregmanTeacher`` updates
theta_tilde <- (1 - beta) theta + beta theta_tilde with beta = 0.99 after every optimiser step,
starting from the initial theta. Lesson 14 compares this code with the authors' FreeLB and SMART
code.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
import numpy as np

from minibert.gradcheck import CheckResult, check_function, compare, ids_and_types, padding_mask, tiny_config
from minibert.models import BertForSequenceClassification
from minibert.validation import generator

# The gradient norm is clamped below at this value before dividing by it (as FreeLB's code does).
_NORM_FLOOR = 1e-8


# ----------------------------------------------------------------------------------------------
# The symmetric KL divergence between two batches of logits
# ----------------------------------------------------------------------------------------------
def _logsumexp(x):
    """log sum_c exp(x_c) by row, shifted by the row's max so nothing overflows. (B, C) -> (B, 1)"""
    m = x.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def symmetric_kl(p_logits, q_logits):
    """l_s = mean_b [KL(P_b||Q_b) + KL(Q_b||P_b)], P = softmax(p_logits), Q = softmax(q_logits) by row.

    p_logits, q_logits: (B, C) floating arrays of the same shape. Returns (value, cache): value is a 0-d
    array in the inputs' dtype (float32 in, float32 out), >= 0, zero iff P = Q for every row (logits
    equal up to a constant per row), and symmetric in its arguments. Computed in log space from the
    logit difference (see the module docstring), so nearly equal distributions keep their precision.
    """
    a, b = np.asarray(p_logits), np.asarray(q_logits)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"symmetric_kl needs two (B, C) arrays of one shape with B, C >= 1; got {a.shape} "
                         f"and {b.shape}")
    dtype = np.result_type(a.dtype, b.dtype)
    if dtype.kind != "f":
        raise ValueError(f"symmetric_kl needs floating logits, got {a.dtype} and {b.dtype}")
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    d = a - b                                                       # (B, C)
    lse_b = _logsumexp(b)
    log_q = b - lse_b
    q = np.exp(log_q)
    # log sum_c Q_c exp(d_c) = lse(a) - lse(b). For rows with small d the log1p/expm1 form keeps the
    # relative precision of a tiny result; elsewhere the plain difference of log-sum-exps is as
    # accurate (the clip only keeps the unused branch from overflowing).
    small = np.abs(d).max(axis=-1, keepdims=True) <= 1.0            # (B, 1)
    shift_small = np.log1p((q * np.expm1(np.clip(d, -1.0, 1.0))).sum(axis=-1, keepdims=True))
    r = d - np.where(small, shift_small, _logsumexp(a) - lse_b)    # log P - log Q   (B, C)
    p = np.exp(log_q + r)
    p_minus_q = np.where(small, q * np.expm1(np.clip(r, -3.0, 3.0)), p - q)
    kl_pq = (p * r).sum(axis=-1)                                    # (B,)
    kl_qp = -(q * r).sum(axis=-1)
    per_row = (p_minus_q * r).sum(axis=-1)                          # = kl_pq + kl_qp, each term >= 0
    value = np.asarray(per_row.mean(), dtype=dtype)
    return value, (p, q, r, p_minus_q, kl_pq, kl_qp)


def symmetric_kl_backward(dvalue, cache):
    """Gradients of ``symmetric_kl`` (derived in the module docstring), each (B, C):

        d p_logits = dvalue / B * (P * (log P - log Q - KL(P||Q)) + (P - Q))
        d q_logits = dvalue / B * (Q * (log Q - log P - KL(Q||P)) + (Q - P))
    """
    p, q, r, p_minus_q, kl_pq, kl_qp = cache
    scale = p.dtype.type(float(dvalue) / p.shape[0])
    dp = (p * (r - kl_pq[:, None]) + p_minus_q) * scale
    dq = (q * (-r - kl_qp[:, None]) - p_minus_q) * scale
    return dp, dq


def _divergence_forward(a, b):
    """SMART's l_s: the symmetric KL for classification, mean_b sum_c (a - b)^2 for regression (C = 1),
    where a softmax over one class would make every divergence 0."""
    if a.shape[-1] == 1:
        diff = a - b
        return np.asarray((diff * diff).sum(axis=-1).mean(), dtype=diff.dtype), ("squared", diff)
    value, cache = symmetric_kl(a, b)
    return value, ("kl", cache)


def _divergence_backward(dvalue, cache):
    kind, c = cache
    if kind == "squared":
        g = c * c.dtype.type(2 * float(dvalue) / c.shape[0])
        return g, -g
    return symmetric_kl_backward(dvalue, c)


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------
def _check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_rng(rng):
    generator("rng", rng)


def _unpack(model, batch):
    """(input_ids, token_type_ids, attention_mask, labels) validated by the model; the mask as (B, T, 1)
    in the model's dtype, to multiply perturbations with."""
    if not isinstance(batch, Mapping):
        raise ValueError(f"batch must be a dict with input_ids, token_type_ids, attention_mask, labels; "
                         f"got {type(batch).__name__}")
    missing = [k for k in ("input_ids", "labels") if batch.get(k) is None]
    if missing:
        raise ValueError(f"batch is missing {', '.join(missing)}; it has {sorted(batch)}")
    ids, types, mask = model.bert.check_inputs(batch["input_ids"], batch.get("token_type_ids"),
                                               batch.get("attention_mask"))
    return ids, types, mask, batch["labels"], mask[:, :, None].astype(model.dtype)


def _check_delta(model, ids, delta):
    shape = ids.shape + (model.config.hidden_size,)
    if np.shape(delta) != shape:
        raise ValueError(f"delta must have shape (B, T, H) = {shape}, got {np.shape(delta)}")


def _replay(model, state):
    """Restore the model's generator, so the next forward draws the same dropout (and Mixout) masks."""
    model.rng.bit_generator.state = state


def _save_grads(model):
    """What the parameter gradients hold now: None if all zero (the usual case: the caller just zeroed
    them), else copies (the caller is accumulating gradients over several batches)."""
    params = [p for _, p in model.named_parameter_objects()]
    if not any(p.grad.any() for p in params):
        return None
    return [p.grad.copy() for p in params]


def _restore_grads(model, saved):
    for i, (_, p) in enumerate(model.named_parameter_objects()):
        if saved is None:
            p.grad.fill(0)
        else:
            p.grad[...] = saved[i]


def _per_example_norm(x, order):
    """||x_b|| over (T, H) for each example: Frobenius (order 2) or max-abs (order inf). (B,) -> (B, 1, 1)."""
    flat = x.reshape(x.shape[0], -1)
    n = np.sqrt((flat * flat).sum(axis=1)) if order == 2 else np.abs(flat).max(axis=1, initial=0.0)
    return n[:, None, None]


# ----------------------------------------------------------------------------------------------
# FreeLB
# ----------------------------------------------------------------------------------------------
def freelb_init(attention_mask, hidden_size: int, init_mag: float, rng: np.random.Generator,
                dtype=np.float32) -> np.ndarray:
    """FreeLB's random start (B, T, H): U(-1, 1) * mask * init_mag / sqrt(T_real * H) per example, T_real
    its number of real tokens, so E||delta||_F^2 = init_mag^2 / 3. Zeros (and no draw) if init_mag = 0."""
    mask = np.asarray(attention_mask)
    init_mag = _check_number("init_mag", init_mag)
    B, T = mask.shape
    if init_mag == 0:
        return np.zeros((B, T, hidden_size), dtype=dtype)
    _check_rng(rng)
    u = rng.uniform(-1.0, 1.0, (B, T, hidden_size)) * mask[:, :, None]
    scale = init_mag / np.sqrt(np.maximum(mask.sum(axis=1), 1) * hidden_size)     # (B,)
    return (u * scale[:, None, None]).astype(dtype)


def freelb_ascent(delta, grad, mask, alpha: float, eps: float) -> np.ndarray:
    """One FreeLB ascent step, per example: delta + alpha * g / ||g||_F with g = grad * mask, then, if
    eps > 0, rescaled onto ||delta||_F <= eps when it is outside. mask: (B, T, 1) or (B, T) of 0/1."""
    mask = np.asarray(mask)
    if mask.ndim == 2:
        mask = mask[:, :, None]
    mask = mask.astype(delta.dtype)
    g = grad * mask
    delta = delta + alpha * g / np.maximum(_per_example_norm(g, 2), _NORM_FLOOR)
    if eps > 0:
        norm = _per_example_norm(delta, 2)
        delta = delta * np.where(norm > eps, eps / np.maximum(norm, _NORM_FLOOR), 1.0)
    return (delta * mask).astype(grad.dtype, copy=False)


def _perturbed_pass(model, ids, types, mask, labels, mask3, delta, dloss):
    """Forward at x + delta with labels, backward of dloss * loss (parameter gradients accumulate).
    Returns (loss, d loss / d delta * dloss masked at padding)."""
    out = model.forward(ids, types, mask, labels, inputs_embeds_delta=delta)
    return float(out.loss), model.backward(dloss) * mask3


def perturbation_gradient(model, batch, delta) -> np.ndarray:
    """d loss / d delta (B, T, H) at the word-embedding perturbation ``delta``, zero at padding.

    One forward and backward; the dropout masks come from ``model.rng`` as in any forward (restore its
    state first to replay a pass). The parameter gradients are left as they were."""
    ids, types, mask, labels, mask3 = _unpack(model, batch)
    _check_delta(model, ids, delta)
    saved = _save_grads(model)
    _, g = _perturbed_pass(model, ids, types, mask, labels, mask3, np.asarray(delta, dtype=model.dtype), 1.0)
    _restore_grads(model, saved)
    return g


def freelb_step(model, batch, *, steps: int, alpha: float, eps: float, init_mag: float,
                rng: np.random.Generator) -> dict:
    """One FreeLB update's gradients (see the module docstring): K = ``steps`` passes at delta_0 ..
    delta_{K-1} with the same dropout masks, each adding d(loss/K)/d theta into the parameter gradients.

    alpha: the ascent step (adv_lr); eps: the bound on ||delta||_F per example (0: none); init_mag: the
    random start's size (0: start at zero); rng: draws the random start, separate from ``model.rng``.
    Returns {"loss": L_0, "adv_loss": mean_k L_k, "delta_norm": max_b ||delta_{K-1, b}||_F}.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps (K) must be an integer >= 1, got {steps!r}")
    alpha, eps = _check_number("alpha", alpha), _check_number("eps", eps)
    init_mag = _check_number("init_mag", init_mag)
    _check_rng(rng)
    ids, types, mask, labels, mask3 = _unpack(model, batch)
    delta = freelb_init(mask, model.config.hidden_size, init_mag, rng, model.dtype)
    state = model.rng.bit_generator.state
    losses = []
    for k in range(steps):
        _replay(model, state)
        loss, g = _perturbed_pass(model, ids, types, mask, labels, mask3, delta, 1.0 / steps)
        losses.append(loss)
        if k < steps - 1:      # the last pass's delta gradient would only serve a pass that never runs
            delta = freelb_ascent(delta, g, mask3, alpha, eps)
    return {"loss": losses[0], "adv_loss": float(np.mean(losses)),
            "delta_norm": float(_per_example_norm(delta, 2).max())}


# ----------------------------------------------------------------------------------------------
# SMART
# ----------------------------------------------------------------------------------------------
class BregmanTeacher:
    """theta_tilde of SMART's momentum Bregman proximal point method: a copy of the model (deep-copied,
    so Mixout layers, the classifier head and a generator of its own come along), moved after every
    optimiser step by ``update(model)``:

        theta_tilde <- (1 - beta) * theta + beta * theta_tilde

    beta in [0, 1]: 0 makes the teacher the current model, 1 freezes it at the initial parameters."""

    def __init__(self, model, beta: float = 0.99):
        beta = _check_number("beta", beta)
        if beta > 1:
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
        self.beta = beta
        self.model = copy.deepcopy(model)

    def update(self, model) -> None:
        ours = list(self.model.named_parameter_objects())
        theirs = list(model.named_parameter_objects())
        if [(n, p.data.shape) for n, p in ours] != [(n, p.data.shape) for n, p in theirs]:
            raise ValueError("the model's parameters (names and shapes) differ from the teacher's copy")
        for (_, t), (_, p) in zip(ours, theirs):
            t.data *= self.beta
            t.data += (1.0 - self.beta) * p.data

    def logits(self, input_ids, token_type_ids, attention_mask, rng_state, training: bool) -> np.ndarray:
        """f(x; theta_tilde) (B, num_labels), in the model's mode, with the masks the state ``rng_state``
        of the model's generator draws (the teacher has the same modules in the same order)."""
        self.model.train(training)
        self.model.rng.bit_generator.state = rng_state
        return self.model.forward(input_ids, token_type_ids, attention_mask).logits


def smart_ascent(delta0, grad, mask, eta: float, eps: float) -> np.ndarray:
    """SMART's ascent step, per example: delta0 + eta * g / ||g||_inf (g = grad * mask; no step where
    g = 0), then clipped to [-eps, eps] (the projection on the inf-ball) when eps > 0, masked."""
    mask = np.asarray(mask)
    if mask.ndim == 2:
        mask = mask[:, :, None]
    mask = mask.astype(delta0.dtype)
    g = grad * mask
    norm = _per_example_norm(g, np.inf)
    delta = delta0 + eta * np.where(norm > 0, g / np.where(norm > 0, norm, 1), 0)
    if eps > 0:
        delta = np.clip(delta, -eps, eps)
    return (delta * mask).astype(delta0.dtype, copy=False)


def _smart_search(model, ids, types, mask, state, delta0, clean_logits):
    """d l_s(f(x + delta0), clean_logits) / d delta0, the clean logits held fixed. The backward also
    adds this pass's parameter gradients; they are not part of the objective, so they are undone."""
    saved = _save_grads(model)
    _replay(model, state)
    noisy = model.forward(ids, types, mask, inputs_embeds_delta=delta0).logits
    _, cache = _divergence_forward(noisy, clean_logits)
    d_noisy, _ = _divergence_backward(1.0, cache)
    g = model.backward(dlogits=d_noisy)
    _restore_grads(model, saved)
    return g


def _smart_objective(model, ids, types, mask, labels, state, lambda_s, delta, clean_logits, mu,
                     teacher_logits):
    """Passes (c) and (d) of the module docstring: add the parameter gradient of
    loss + lambda_s * l_s(f(x + delta), f(x)) + mu * l_s(f(x), teacher_logits), delta constant; return
    the values. ``clean_logits`` are f(x) from a forward with the same masks (state) and parameters."""
    d_clean, reg, bregman = None, 0.0, 0.0
    if lambda_s > 0:
        _replay(model, state)
        adv = model.forward(ids, types, mask, inputs_embeds_delta=delta).logits
        value, cache = _divergence_forward(adv, clean_logits)
        d_adv, d_clean = _divergence_backward(lambda_s, cache)
        model.backward(dlogits=d_adv)
        reg = float(value)
    _replay(model, state)
    out = model.forward(ids, types, mask, labels)
    if teacher_logits is not None and mu > 0:
        value, cache = _divergence_forward(out.logits, teacher_logits)
        d_breg, _ = _divergence_backward(mu, cache)
        d_clean = d_breg if d_clean is None else d_clean + d_breg
        bregman = float(value)
    model.backward(1.0, d_clean)
    loss = float(out.loss)
    return {"loss": loss, "reg": reg, "bregman": bregman, "objective": loss + lambda_s * reg + mu * bregman}


def smart_step(model, batch, *, lambda_s: float, rng: np.random.Generator, sigma: float = 1e-5,
               eta: float = 1e-3, eps: float = 1e-5, mu: float = 1.0,
               teacher: BregmanTeacher | None = None) -> dict:
    """The gradient of SMART's objective loss + lambda_s * R_s + mu * D_breg for one batch (see the module
    docstring for the definitions and the order of the passes), added into the parameter gradients.

    sigma: std of the random start delta_0; eta: ascent step; eps: bound on ||delta||_inf (0: none);
    mu: weight of the Bregman term, used when a ``teacher`` (BregmanTeacher) is given; rng: draws
    delta_0, separate from ``model.rng``. Returns {"loss": clean task loss, "reg": R_s, "bregman": D_breg,
    "objective": the weighted sum, "delta_max": max |delta|} (R_s, D_breg are 0 when switched off).
    """
    lambda_s = _check_number("lambda_s", lambda_s)
    sigma, eta = _check_number("sigma", sigma), _check_number("eta", eta)
    eps, mu = _check_number("eps", eps), _check_number("mu", mu)
    if teacher is not None and not isinstance(teacher, BregmanTeacher):
        raise ValueError(f"teacher must be a BregmanTeacher or None, got {type(teacher).__name__}")
    _check_rng(rng)
    ids, types, mask, labels, mask3 = _unpack(model, batch)
    state = model.rng.bit_generator.state
    teacher_logits = None
    if teacher is not None and mu > 0:
        teacher_logits = teacher.logits(ids, types, mask, state, model.training)
    delta = clean = None
    if lambda_s > 0:
        _replay(model, state)
        clean = model.forward(ids, types, mask).logits
        delta0 = (sigma * rng.standard_normal(mask3.shape[:2] + (model.config.hidden_size,))).astype(
            model.dtype) * mask3
        g = _smart_search(model, ids, types, mask, state, delta0, clean)
        delta = smart_ascent(delta0, g, mask3, eta, eps)
    record = _smart_objective(model, ids, types, mask, labels, state, lambda_s, delta, clean, mu,
                              teacher_logits)
    record["delta_max"] = 0.0 if delta is None else float(np.abs(delta).max())
    return record


# ----------------------------------------------------------------------------------------------
# Gradient checks (float64, tiny model, dropout on with replayed masks)
# ----------------------------------------------------------------------------------------------
def _check_model_and_batch(rng, num_labels=3):
    config = tiny_config(num_labels=num_labels)
    model = BertForSequenceClassification(config, np.random.default_rng(rng.integers(1 << 31)))
    model.astype(np.float64).train()
    ids, types = ids_and_types()
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": padding_mask(),
             "labels": rng.integers(0, num_labels, len(ids))}
    return model, batch


def check_freelb(rng: np.random.Generator) -> list[CheckResult]:
    """``perturbation_gradient`` against central differences of the loss in every entry of delta,
    padded positions included (there delta is nonzero, the loss does not change and the gradient
    returned is 0)."""

    model, batch = _check_model_and_batch(rng)
    delta = 0.3 * rng.standard_normal(batch["input_ids"].shape + (model.config.hidden_size,))
    state = model.rng.bit_generator.state
    analytic = perturbation_gradient(model, batch, delta)

    def loss():
        _replay(model, state)
        return float(model.forward(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                                   batch["labels"], inputs_embeds_delta=delta).loss)
    return compare("FreeLB perturbation gradient", loss, {"delta": analytic}, {"delta": delta}, rng,
                   max_entries=delta.size)


def check_symmetric_kl(rng: np.random.Generator) -> list[CheckResult]:
    """Both arguments of ``symmetric_kl``; rows far apart, close (the log1p path) and equal."""

    a = 2.0 * rng.standard_normal((5, 4))
    b = 2.0 * rng.standard_normal((5, 4))
    b[1] = a[1] + 0.05 * rng.standard_normal(4)
    b[2] = a[2] + 3.0            # the same distribution: value and gradients 0 in that row

    def backward(g):
        return dict(zip(("p_logits", "q_logits"), symmetric_kl_backward(g, symmetric_kl(a, b)[1])))
    return check_function("symmetric KL", lambda: symmetric_kl(a, b)[0], backward,
                          {"p_logits": a, "q_logits": b}, rng)


def check_smart(rng: np.random.Generator) -> list[CheckResult]:
    """The parameter gradient that ``smart_step`` accumulates for a fixed perturbation delta, against
    central differences of loss + lambda_s * l_s(f(x + delta), f(x)) + mu * l_s(f(x), f(x; theta_tilde)):
    checks the order of the passes and that the regulariser's gradient reaches both forwards. A sample
    of tensors from the embeddings to the classifier."""

    model, batch = _check_model_and_batch(rng)
    teacher = BregmanTeacher(model, beta=0.5)
    for _, p in teacher.model.named_parameter_objects():
        p.data += 0.05 * rng.standard_normal(p.data.shape)
    ids, types, mask, labels, mask3 = _unpack(model, batch)
    delta = 0.2 * rng.standard_normal(ids.shape + (model.config.hidden_size,)) * mask3
    lambda_s, mu = 1.7, 0.6
    state = model.rng.bit_generator.state
    teacher_logits = teacher.logits(ids, types, mask, state, True)

    model.zero_grad()
    _replay(model, state)
    clean = model.forward(ids, types, mask).logits
    _smart_objective(model, ids, types, mask, labels, state, lambda_s, delta, clean, mu, teacher_logits)
    names = ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight",
             "bert.encoder.layer.1.output.LayerNorm.weight", "bert.pooler.dense.bias", "classifier.weight")
    params = dict(model.named_parameter_objects())
    tensors = {n: params[n].data for n in names}
    analytic = {n: params[n].grad.copy() for n in names}

    def objective():
        _replay(model, state)
        out = model.forward(ids, types, mask, labels)
        _replay(model, state)
        adv = model.forward(ids, types, mask, inputs_embeds_delta=delta).logits
        return float(out.loss + lambda_s * symmetric_kl(adv, out.logits)[0]
                     + mu * symmetric_kl(out.logits, teacher_logits)[0])
    return compare("SMART objective (fixed perturbation)", objective, analytic, tensors, rng, max_entries=20)
