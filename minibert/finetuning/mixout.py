"""Mixout (Lee, Cho and Kang, ICLR 2020): dropout towards the pretrained weights instead of towards zero.

Dropout before a Linear layer zeroes input unit j, which is the same as zeroing column j of the weight
matrix W (out, in) for that forward. Mixout replaces the dropped column by the column of a *target*
matrix u -- the pretrained weight -- instead of by zeros. For each forward in training mode, draw one mask
value per input unit (column), shared by every row of the batch,

    m_j ~ Bernoulli(1 - p)                   j = 1 .. in      (1 = keep the fine-tuned column)

and use

    w_tilde = u + (m / (1 - p)) * (w - u)    (out, in); m (in,) broadcast over the rows

so a kept column is u + (w - u) / (1 - p) and a dropped one is u. Rescaling by 1/(1 - p) makes the mix
unbiased, as inverted dropout does: E[m_j] = 1 - p, hence

    E[w_tilde] = u + (w - u) = w,

and evaluation (``eval()``) uses w itself. Three facts follow directly:
- with u = 0 this is dropout on the layer's inputs (DropConnect by columns);
- at the start of fine-tuning w = u, so w_tilde = u for every mask: the network computes exactly the
  pretrained function, with no dropout noise, until w moves away from u;
- the noise grows with the distance from u. For squared loss on one linear output y_hat = w_tilde . x,
  E_m[(y - y_hat)^2] = (y - w . x)^2 + Var(y_hat) and, the m_j being independent with variance p(1 - p),

      Var(y_hat) = sum_j p(1-p) / (1-p)^2 * (w_j - u_j)^2 x_j^2 = p/(1-p) * sum_j x_j^2 (w_j - u_j)^2,

  an L2 penalty pulling w towards u, of strength p/(1-p) (9 at p = 0.9), exact for this loss.
  ``tests/test_mixout.py`` checks the direction on a small regression. (The paper's Theorem 1 is a
  different statement: for a strongly convex loss and one mask per weight, it bounds the expected loss
  from below by the loss at w plus a multiple of ||w - u||^2.)

Forward and backward of the layer y = x w_tilde^T + b, with x flattened to (N, in), N = B*T rows:

    y      = x w_tilde^T + b                     (N, in) @ (in, out) -> (N, out)
    dx     = dy w_tilde                          (N, out) @ (out, in): the weights the forward used
    dw_tilde = dy^T x                            (out, N) @ (N, in): the ordinary Linear gradient
    dw     = dw_tilde * m / (1 - p)              chain rule: d w_tilde_ij / d w_ij = m_j / (1 - p)
    db     = sum_n dy[n]                         the bias is not mixed
    du     = (none)                              u is a constant, not a parameter

``reference_weight_gradient`` is the weight gradient WITHOUT the 1/(1 - p) factor, ``dw_tilde * m``: (1 - p)
times the exact one on kept columns, so a gradient check finds a relative error of exactly p on the mixed
weights. ``check_mixout_reference`` runs that check, and ``MixoutLinear.reference_gradient = True``
trains with it; both exist for lesson 12, which shows where this gradient comes from and what it changes
under SGD and Adam. minibert trains with the exact gradient. p must be in [0, 1) (p = 1 would be
w_tilde = u: frozen weights).

Memory: each MixoutLinear keeps its target, a second copy of its weight, and its forward cache holds
w_tilde (one weight-sized array per layer between forward and backward). The weight-gradient scratch
buffer is allocated per backward and freed after it, so it is not a third persistent copy.

Shapes: B batch, T tokens, H hidden, I intermediate, N = B*T flattened rows, in/out the Linear's sizes.
"""
from __future__ import annotations

import math
import numbers
import numpy as np

from minibert import gradcheck
from minibert.gradcheck import CheckResult
from minibert.models import BertModel
from minibert.nn import Dropout, Linear, Module, Parameter, dense_backward, dense_forward
from minibert.validation import generator


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p):
        raise ValueError(f"mixout probability p must be a finite number in [0, 1), got {p!r}")
    if not 0.0 <= p < 1.0:
        hint = " (p = 1 would replace w by its target every step: freeze the weights instead)" if p == 1 else ""
        raise ValueError(f"mixout probability p must be in [0, 1), got {p!r}{hint}")
    return float(p)


def reference_weight_gradient(dw_tilde: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The weight gradient without the forward's 1/(1 - p): ``dw_tilde * m`` with m the 0/1 keep mask
    (in,), broadcast over the rows of dw_tilde (out, in). The exact gradient is ``dw_tilde * m / (1 - p)``;
    this one is (1 - p) times it on kept columns. It is the gradient of the authors' reference code
    (lesson 12); not used in training unless a MixoutLinear's ``reference_gradient`` is set."""
    return dw_tilde * np.asarray(mask, dtype=dw_tilde.dtype)


class MixoutLinear(Linear):
    """A Linear whose weight is mixed with a target during training: y = x w_tilde^T + b with
    w_tilde = u + (m / (1 - p)) * (w - u), one m_j ~ Bernoulli(1 - p) per input column per forward.

    Built from an existing Linear, it shares that layer's Parameter objects (``weight``, ``bias``), so the
    parameter names, the state dict and any optimiser holding the arrays are unchanged. The target u is a
    plain array attribute, not a Parameter: it is not trained, not listed by ``named_parameters`` and not
    saved in ``state_dict`` (to resume, pass the pretrained weights again as ``targets`` to
    ``apply_mixout``). ``astype`` converts only Parameters, so ``target`` follows the weight's dtype
    lazily: it is converted when first read after the weight's dtype changed.

    ``rng`` is the model's shared Generator, as for Dropout: restoring ``rng.bit_generator.state`` replays
    the same masks (gradient checks, FreeLB's ascent steps). In eval mode or with p = 0 the layer is a
    plain Linear and draws nothing.

    After a training forward ``cache`` is ``((x, w_tilde), keep, scale)``: the Linear cache, the boolean
    keep mask m (in,) and ``scale = m / (1 - p)`` (in,) in the weight's dtype; in the plain case it is
    ``((x, w), None, None)``.

    ``reference_gradient = True`` switches the backward to the reference implementation's weight gradient
    ``dw_tilde * m`` (see the module docstring); it exists for the lesson, to be caught by a gradient check.
    """

    def __init__(self, linear: Linear, p: float, rng: np.random.Generator, target: np.ndarray | None = None):
        if not isinstance(linear, Linear) or isinstance(linear, MixoutLinear):
            raise ValueError(f"MixoutLinear wraps a plain Linear, got {type(linear).__name__}")
        generator("rng", rng)
        self.weight: Parameter = linear.weight      # the same objects: names and optimiser references stay
        self.bias: Parameter | None = linear.bias
        self.activation = linear.activation
        self.p = _check_p(p)
        self.rng = rng
        w = self.weight.data
        u = w if target is None else np.asarray(target)
        if u.shape != w.shape:
            raise ValueError(f"mixout target must have the weight's shape {w.shape}, got {u.shape}")
        self._target = np.array(u, dtype=w.dtype, copy=True)   # a copy: w moves, u must not
        self.reference_gradient = False
        self.training = linear.training
        self.cache = None

    @property
    def in_features(self) -> int:
        return self.weight.data.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.data.shape[0]

    @property
    def target(self) -> np.ndarray:
        """u (out, in), in the weight's current dtype."""
        dtype = self.weight.data.dtype
        if self._target.dtype != dtype:
            self._target = self._target.astype(dtype)
        return self._target

    def mixed_weight(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(w_tilde, scale) for a boolean keep mask (in,): w_tilde = u + scale * (w - u), scale = keep / (1 - p)."""
        w, u = self.weight.data, self.target
        scale = keep * w.dtype.type(1.0 / (1.0 - self.p))      # (in,), 0 or 1/(1-p), weight dtype
        w_tilde = w - u                                        # (out, in), one new array, then in place
        w_tilde *= scale                                       # column j scaled by scale_j
        w_tilde += u
        return w_tilde, scale

    def forward(self, x):
        """x (..., in) -> (..., out), e.g. (B, T, H) -> (B, T, I); GELU after it if the wrapped Linear had
        that activation (the intermediate dense layer)."""
        w = self.weight.data
        if not self.training or self.p == 0.0:
            y, dense_cache = dense_forward(x, w, self.bias, self.activation)
            self.cache = (dense_cache, None, None)
            return y
        # One uniform draw per input column, shared by every row of the batch.
        keep = self.rng.random(w.shape[1]) >= self.p          # (in,) True with probability 1 - p
        w_tilde, scale = self.mixed_weight(keep)
        y, dense_cache = dense_forward(x, w_tilde, self.bias, self.activation)  # keeps w_tilde: dx needs it
        self.cache = (dense_cache, keep, scale)
        return y

    def backward(self, dy):
        """dy (..., out) -> dx (..., in). Adds dw = dw_tilde * m / (1 - p) into ``weight.grad`` (accumulating,
        like every backward here) and the bias gradient."""
        dense_cache, keep, scale = self.take_cache()
        if keep is None:
            return dense_backward(dy, dense_cache, self.weight.grad, self.bias, self.activation)
        # dw_tilde goes to a scratch buffer first: weight.grad may already hold other contributions (+=),
        # and only this layer's part is to be multiplied by the mask.
        dw_tilde = np.zeros_like(self.weight.grad)             # (out, in)
        dx = dense_backward(dy, dense_cache, dw_tilde, self.bias, self.activation)   # dw_tilde = dy^T x
        if self.reference_gradient:
            dw_tilde = reference_weight_gradient(dw_tilde, keep)
        else:
            dw_tilde *= scale                                  # (out, in) * (in,): column j times m_j/(1-p)
        self.weight.grad += dw_tilde
        return dx


def _parameter_uses(model: Module) -> dict[int, int]:
    """id(Parameter) -> how many module attributes hold it (a tied weight counts once per holder)."""
    uses: dict[int, int] = {}
    for m in model.modules():
        for value in vars(m).values():
            if isinstance(value, Parameter):
                uses[id(value)] = uses.get(id(value), 0) + 1
    return uses


def _linear_slots(module: Module):
    """Yield (owner, attribute, list index or None, Linear) for every Linear in the tree, walking attributes
    and lists of modules as ``Module._children`` does."""
    for attr, value in list(vars(module).items()):
        items = [(None, value)] if isinstance(value, Module) else \
            list(enumerate(value)) if isinstance(value, list) else []
        for index, item in items:
            if isinstance(item, Linear):
                yield module, attr, index, item
            elif isinstance(item, Module):
                yield from _linear_slots(item)


def apply_mixout(model: Module, p: float, rng: np.random.Generator | None = None,
                 targets: dict[str, np.ndarray] | None = None) -> list[str]:
    """Replace every Linear of ``model`` by a MixoutLinear with probability ``p`` and set every Dropout's p to 0
    (mixout replaces dropout, as in the paper's fine-tuning runs). Returns the names of the mixed weights, in
    ``named_parameters`` order, e.g. ``"bert.encoder.layer.0.attention.self.query.weight"``.

    Which Linears: all of them, except a Linear whose weight Parameter is also held by another module (a
    tied weight: the MLM decoder of BertForPreTraining shares the word-embedding matrix). Mixing it would
    mix only one of its two uses -- the embedding lookup would still read w -- and the paper mixes Linear
    weights, not embeddings. Biases, LayerNorm and embeddings are never mixed. In BERT this is six weights
    per layer (query, key, value, attention output, intermediate, output) plus the pooler, plus any head.

    Target of each weight: ``targets[name]`` if given, else a copy of its current value -- the pretrained
    weight for a model just loaded, its own initialisation for a freshly initialised classifier, as the
    paper does. ``targets`` may be a whole state dict: keys of parameters that are not mixed (biases,
    embeddings) are ignored; keys that are not parameter names of ``model`` and shape mismatches are errors.

    ``rng`` defaults to ``model.rng``, the Generator the model's Dropouts share, so one seed still controls
    everything and restoring its state replays mixout masks too. Applying mixout to a model that already
    has MixoutLinear layers is an error: a second call would silently re-target the fine-tuned weights.
    The model's config is not changed (it still records the dropout rates the model was built with).
    """
    p = _check_p(p)
    if rng is None:
        rng = getattr(model, "rng", None)
        if rng is None:
            raise ValueError(f"{type(model).__name__} has no rng attribute; pass rng= explicitly")
    generator("rng", rng)
    if any(isinstance(m, MixoutLinear) for m in model.modules()):
        raise ValueError("mixout is already applied to this model; apply it once, to a freshly built or "
                         "loaded model (change a layer's p attribute to change its probability)")

    params = list(model.named_parameter_objects())
    name_of = {id(param): name for name, param in params}
    order = {name: i for i, (name, _) in enumerate(params)}
    targets = dict(targets or {})
    unknown = sorted(k for k in targets if k not in order)
    if unknown:
        raise ValueError(f"mixout targets name parameters that {type(model).__name__} does not have: "
                         + ", ".join(unknown))

    uses = _parameter_uses(model)
    plan = []
    for owner, attr, index, linear in _linear_slots(model):
        if uses[id(linear.weight)] > 1:
            continue   # tied weight (see the docstring)
        name = name_of[id(linear.weight)]
        target = targets.get(name)
        if target is not None and np.shape(target) != linear.weight.data.shape:
            raise ValueError(f"mixout target {name}: expected shape {linear.weight.data.shape}, "
                             f"got {np.shape(target)}")
        plan.append((owner, attr, index, linear, name, target))
    if not plan:
        raise ValueError(f"{type(model).__name__} has no (untied) Linear layer to apply mixout to")

    # Everything is validated above, so a bad call leaves the model untouched.
    for owner, attr, index, linear, name, target in plan:
        mixed = MixoutLinear(linear, p, rng, target)
        if index is None:
            setattr(owner, attr, mixed)
        else:
            getattr(owner, attr)[index] = mixed
    for m in model.modules():
        if isinstance(m, Dropout):
            m.p = 0.0
    return sorted((name for *_, name, _ in plan), key=order.__getitem__)


# ----------------------------------------------------------------------------------------------
# Gradient checks (float64, tolerance gradcheck.TOLERANCE), for minibert gradcheck and lesson 12
# ----------------------------------------------------------------------------------------------
CHECK_P = 0.6
_IN, _OUT = 13, 5     # small odd sizes


def _mixout_linear(rng: np.random.Generator) -> tuple[MixoutLinear, dict]:
    """A float64 MixoutLinear (in 13, out 5) with target != w and a random bias, in training mode, whose
    Generator's next mask keeps at least one column and drops at least one; and inputs x (B, T, in)."""

    B, T = gradcheck.B, gradcheck.T
    for _ in range(1000):
        mask_rng = np.random.default_rng(rng.integers(1 << 31))
        state = mask_rng.bit_generator.state
        keep = mask_rng.random(_IN) >= CHECK_P            # the mask the first forward will draw...
        mask_rng.bit_generator.state = state               # ...once the state is rewound
        if keep.any() and not keep.all():
            break
    linear = Linear(_IN, _OUT, rng, std=0.5).astype(np.float64)
    linear.bias.data[...] = rng.standard_normal(_OUT)
    target = linear.weight.data + 0.5 * rng.standard_normal(linear.weight.data.shape)
    layer = MixoutLinear(linear, CHECK_P, mask_rng, target).train()
    return layer, {"x": rng.standard_normal((B, T, _IN))}


def _linear_check(name: str, layer: MixoutLinear, inputs: dict, rng: np.random.Generator):

    return gradcheck.check_module(name, layer, lambda: layer.forward(inputs["x"]),
                                  lambda g: {"x": layer.backward(g)}, inputs, rng, max_entries=_IN * _OUT)


def _model_check(name: str, rng: np.random.Generator, reference: bool):
    """A tiny float64 BertModel (``gradcheck.tiny_config``) after ``apply_mixout(p = 0.6)`` with targets != w,
    in training mode, every parameter checked through ``gradcheck.check_module`` (masks replayed)."""

    model = BertModel(gradcheck.tiny_config(), np.random.default_rng(rng.integers(1 << 31)))
    model.astype(np.float64).train()
    # Targets away from w: at w = u every mask gives w_tilde = w and the check would not see the mask.
    # (The dict also holds the embedding matrices; apply_mixout ignores targets of weights it does not mix.)
    targets = {n: w + 0.1 * rng.standard_normal(w.shape) for n, w in model.named_parameters() if w.ndim == 2}
    apply_mixout(model, CHECK_P, targets=targets)
    for m in model.modules():
        if isinstance(m, MixoutLinear):
            m.reference_gradient = reference
    return gradcheck.check_encoder(name, model, rng)


def check_mixout(rng: np.random.Generator) -> list[CheckResult]:
    """Finite-difference checks, in float64, of (1) a MixoutLinear (in 13, out 5) with p = 0.6, target != w
    and one fixed mask (replayed through its Generator), inputs (B, T, in): gradients of x, weight, bias;
    (2) a tiny BertModel after ``apply_mixout``, in training mode: every parameter. Check names
    "MixoutLinear" and "BertModel+mixout"; all pass at ``gradcheck.TOLERANCE``."""
    layer, inputs = _mixout_linear(rng)
    return _linear_check("MixoutLinear", layer, inputs, rng) + _model_check("BertModel+mixout", rng, False)


def check_mixout_reference(rng: np.random.Generator) -> list[CheckResult]:
    """The same two checks with the reference implementation's weight gradient ``dw_tilde * m``
    (``reference_gradient = True``), named "MixoutLinear(reference)" and "BertModel+mixout(reference)".
    Expected: every mixed weight FAILS with a relative error of p = 0.6 (its analytic gradient is (1 - p)
    times the finite difference on every kept column, and both are 0 on dropped ones); inputs, biases,
    LayerNorm and embeddings pass, because the reference's dx and bias gradients are right."""
    layer, inputs = _mixout_linear(rng)
    layer.reference_gradient = True
    return (_linear_check("MixoutLinear(reference)", layer, inputs, rng)
            + _model_check("BertModel+mixout(reference)", rng, True))
