"""Modules: thin shells that own parameters and gradients, call the forward/backward pairs, and keep the
cache of their last forward.

There is no autograd. One convention holds for every module:

* ``forward(...)`` computes its output and stores everything its backward needs in ONE attribute,
  ``self.cache`` (a tuple, or the cache returned by a pair). Nothing else is written during a forward.
* ``backward(dout)`` reads ``self.cache``, ADDS the parameter gradients into ``Parameter.grad`` and
  returns the gradient of its input(s). A module whose forward saw a tensor twice (a residual, three
  projections of one x) adds the gradients of every use.
* A child module keeps its own cache; a parent's backward calls its children's backward in reverse order,
  by hand. So a module supports one forward per backward: a second forward overwrites the cache.
* A backward takes its cache (``take_cache``): the module lets go of it, so each layer's saved
  activations are freed as soon as the backward has passed that layer, and a second backward without a
  forward is an error instead of gradients silently added twice.

Caches made by ``minibert.kernels`` carry the backend that made them (NumPy reference or Numba), so a
backward always runs the matching pair, whichever backend is active by then.

Parameter names are the attribute paths, which are chosen to be the Hugging Face BERT state-dict keys
(``encoder.layer.0.attention.self.query.weight``), so checkpoints convert without a renaming table.
"""
from __future__ import annotations

import copy
from typing import Iterator

import numpy as np

from minibert import functional as F
from minibert import kernels


class Parameter:
    """A tensor and its gradient, the same shape and dtype. Sharing one Parameter between two modules
    ties them (the MLM decoder and the word embeddings): both backward passes add into ``grad``."""

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        self.data = data
        self.grad = np.zeros_like(data)

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


_TAKEN = object()       # the cache of a module whose backward has run


class Module:
    training = True
    cache = None        # what the last forward saved for the backward; None before any forward

    def take_cache(self):
        """The last forward's cache, for this module's backward, which reads it once.

        Holding every cache until the step ended kept all L layers' activations alive while the backward
        allocated each layer's gradients on top; released as the backward passes them, they free the
        memory that the next layers' gradients reuse. With the MLM head's (B P, V) arrays also let go
        before the encoder's backward, the peak of ``minibert bench train`` (mini) fell from 552 to
        463 MiB."""
        cache = self.cache
        if cache is _TAKEN:
            raise RuntimeError(f"{type(self).__name__}.backward: the last forward's cache was already used by a "
                               "backward and released; run forward again before another backward")
        self.cache = _TAKEN
        return cache

    def _children(self) -> Iterator[tuple[str, "Module"]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def modules(self) -> Iterator["Module"]:
        yield self
        for _, child in self._children():
            yield from child.modules()

    def named_parameter_objects(self, prefix: str = "", _seen=None) -> Iterator[tuple[str, Parameter]]:
        """(name, Parameter) in registration order; a tied Parameter appears once, under its first name."""
        seen = set() if _seen is None else _seen
        for name, value in vars(self).items():
            if isinstance(value, Parameter) and id(value) not in seen:
                seen.add(id(value))
                yield prefix + name, value
        for name, child in self._children():
            yield from child.named_parameter_objects(prefix + name + ".", seen)

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        for name, p in self.named_parameter_objects():
            yield name, p.data

    def named_grads(self) -> Iterator[tuple[str, np.ndarray]]:
        for name, p in self.named_parameter_objects():
            yield name, p.grad

    def num_parameters(self) -> int:
        return sum(p.data.size for _, p in self.named_parameter_objects())

    def zero_grad(self) -> None:
        # In place: the optimiser holds references to these arrays.
        for _, p in self.named_parameter_objects():
            p.grad.fill(0)

    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    @property
    def dtype(self) -> np.dtype:
        return next(self.named_parameters())[1].dtype

    def astype(self, dtype):
        """Convert every parameter and gradient to ``dtype`` in place (float64 for gradient checks).
        Tied parameters stay tied: the Parameter objects are kept, only their arrays change."""
        for _, p in self.named_parameter_objects():
            p.data = p.data.astype(dtype)
            p.grad = np.zeros_like(p.data)
        return self

    def replica(self):
        """A copy that computes with this module's weights, the same ``Parameter.data`` arrays (an update
        of either is an update of both), but has gradients, caches and a random generator of its own (the
        generator a copy of this one's, in the same state): a data-parallel worker's model
        (``minibert.distributed.Workers``), whose forward and backward run beside this module's."""
        memo = {id(p.data): p.data for _, p in self.named_parameter_objects()}      # shared, not copied
        memo.update((id(vars(m)["cache"]), None) for m in self.modules() if "cache" in vars(m))
        twin = copy.deepcopy(self, memo)
        for _, p in twin.named_parameter_objects():
            p.grad = np.zeros_like(p.data)
        return twin

    def state_dict(self) -> dict[str, np.ndarray]:
        """Name -> array (the live arrays, not copies, as in PyTorch)."""
        return dict(self.named_parameters())

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters. Every missing or unexpected key and every shape mismatch is
        reported in one ValueError; with ``strict=False`` missing and unexpected keys are allowed (shapes
        are always checked). Values are cast to the model's dtype."""
        params = dict(self.named_parameter_objects())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        wrong = [f"{k}: expected {params[k].data.shape}, got {np.shape(v)}"
                 for k, v in state.items() if k in params and np.shape(v) != params[k].data.shape]
        problems = []
        if wrong:
            problems.append("shape mismatch for " + "; ".join(wrong))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ValueError("cannot load state dict: " + " | ".join(problems))
        for k, v in state.items():
            if k in params:
                params[k].data[...] = np.asarray(v, dtype=params[k].data.dtype)


def normal_init(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    """N(0, std^2) in float32 (BERT's initialiser; the original TF code truncated at 2 std)."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


class Linear(Module):
    """y = x W^T + b with W of shape (out, in), as in PyTorch and the Hugging Face checkpoints.

    ``activation="gelu"`` (exact, erf) or ``"gelu_new"`` (tanh form) makes it GELU(x W^T + b): BERT's
    feed-forward and its MLM head transform each follow a dense layer with GELU, and this is the one
    place that pair is computed (``kernels.linear_gelu_*``; the Numba backend fuses the bias into GELU).
    """

    def __init__(self, in_features: int, out_features: int, rng: np.random.Generator, std: float = 0.02,
                 bias: bool = True, activation: str | None = None):
        self.weight = Parameter(normal_init(rng, (out_features, in_features), std))
        self.bias = Parameter(np.zeros(out_features, np.float32)) if bias else None
        self.activation = _check_activation(activation, bias)

    def forward(self, x):
        y, self.cache = dense_forward(x, self.weight.data, self.bias, self.activation)
        return y

    def backward(self, dy):
        return dense_backward(dy, self.take_cache(), self.weight.grad, self.bias, self.activation)


class TiedLinear(Linear):
    """y = x W^T + b with Parameters that another module holds too: the MLM decoder reads the word-embedding
    matrix (and the head's bias). Both uses' backward passes add into the same ``grad``."""

    def __init__(self, weight: Parameter, bias: Parameter | None = None):
        self.weight, self.bias, self.activation = weight, bias, None


def _check_activation(activation, bias):
    if activation not in (None, "gelu", "gelu_new"):
        raise ValueError(f"activation must be None, 'gelu' or 'gelu_new', got {activation!r}")
    if activation is not None and not bias:
        raise ValueError("a Linear with a GELU activation needs its bias (the fused kernel adds it)")
    return activation


def dense_forward(x, weight, bias: Parameter | None, activation: str | None):
    """x W^T + b, then GELU if ``activation`` is set. Shared by Linear and Mixout's linear layer, which
    passes its mixed weight. The plain matmul is NumPy (BLAS) on both backends."""
    if activation is None:
        return F.linear_forward(x, weight, None if bias is None else bias.data)
    return kernels.linear_gelu_forward(x, weight, bias.data, activation == "gelu_new")


def dense_backward(dy, cache, dweight, bias: Parameter | None, activation: str | None):
    """Gradients of ``dense_forward``: adds into ``dweight`` and ``bias.grad``, returns dx."""
    if activation is None:
        return F.linear_backward(dy, cache, dweight, None if bias is None else bias.grad)
    return kernels.linear_gelu_backward(dy, cache, dweight, bias.grad)


class LayerNorm(Module):
    def __init__(self, size: int, eps: float = 1e-12):
        self.weight = Parameter(np.ones(size, np.float32))   # gamma
        self.bias = Parameter(np.zeros(size, np.float32))    # beta
        self.eps = eps

    def forward(self, x):
        y, self.cache = kernels.layernorm_forward(x, self.weight.data, self.bias.data, self.eps)
        return y

    def backward(self, dy):
        return kernels.layernorm_backward(dy, self.take_cache(), self.weight.grad, self.bias.grad)


class Embedding(Module):
    def __init__(self, num_embeddings: int, dim: int, rng: np.random.Generator, std: float = 0.02,
                 padding_idx: int | None = None):
        self.weight = Parameter(normal_init(rng, (num_embeddings, dim), std))
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0  # as Hugging Face initialises the [PAD] row
        self.num_embeddings = num_embeddings

    def forward(self, ids):
        y, self.cache = F.embedding_forward(ids, self.weight.data)
        return y

    def backward(self, dy):
        kernels.embedding_backward(dy, self.take_cache(), self.weight.grad)


class Dropout(Module):
    """Inverted dropout. ``rng`` is shared with the rest of the model: restoring its state
    (``rng.bit_generator.state = saved``) replays exactly the same masks, which gradient checks and
    FreeLB's repeated passes rely on."""

    def __init__(self, p: float, rng: np.random.Generator):
        self.p = p
        self.rng = rng

    def forward(self, x):
        y, self.cache = kernels.dropout_forward(x, self.p if self.training else 0.0, self.rng)
        return y

    def backward(self, dy):
        return kernels.dropout_backward(dy, self.take_cache())


class ScalarMix(Module):
    """A learned weighted average of every layer's representation (ELMo; Tenney et al. 2019).

    For N = L + 1 hidden states X_0 (the embedding output) ... X_L, each (B, H) (e.g. the [CLS] vectors):

        s = softmax(w)                      w: (N,) learned, starts at 0 (equal weights)
        h = gamma * sum_l s_l X_l           gamma: a learned scale, starts at 1

    Layer dropout (Kondratyuk and Straka 2019) sets w_l to -inf with probability ``layer_dropout`` during
    training, so the classifier cannot lean on one layer alone. (If every layer is dropped, none is.)

    Backward, with G = dL/dh (B, H) and <., .> the sum over batch and features:

        dX_l = gamma s_l G                  h is linear in each X_l
        dgamma = sum_l s_l <G, X_l>         h is linear in gamma
        ds_l = gamma <G, X_l>
        dw = s * (ds - <ds, s>)             the softmax Jacobian diag(s) - s s^T applied to ds

    A dropped layer has s_l = 0, so it receives no gradient, and neither does its weight.
    """

    def __init__(self, num_layers: int, layer_dropout: float, rng: np.random.Generator):
        if num_layers < 1:
            raise ValueError(f"a scalar mix needs at least one layer, got {num_layers}")
        if not 0.0 <= layer_dropout < 1.0:
            raise ValueError(f"layer_dropout must be in [0, 1), got {layer_dropout!r}")
        self.weights = Parameter(np.zeros(num_layers, np.float32))    # w
        self.gamma = Parameter(np.ones(1, np.float32))
        self.layer_dropout = layer_dropout
        self.rng = rng

    def forward(self, states):
        """states: N arrays (B, H) -> (B, H)."""
        if len(states) != self.weights.data.size:
            raise ValueError(f"scalar mix of {self.weights.data.size} layers got {len(states)} states")
        w = self.weights.data
        keep = np.ones(w.size, dtype=bool)
        if self.training and self.layer_dropout > 0:
            keep = self.rng.random(w.size) >= self.layer_dropout
            if not keep.any():
                keep[:] = True
        e = np.where(keep, np.exp(w - w[keep].max()), 0).astype(w.dtype)
        s = e / e.sum()                                                     # (N,)
        X = np.stack(states)                                                # (N, B, H)
        self.cache = (X, s)
        return self.gamma.data[0] * np.tensordot(s, X, axes=1)

    def backward(self, G):
        """G (B, H) -> list of N gradients (B, H), one per state."""
        X, s = self.take_cache()
        gamma = self.gamma.data[0]
        inner = np.tensordot(X, G, axes=([1, 2], [0, 1]))                  # (N,) <G, X_l>
        self.gamma.grad[0] += s @ inner
        ds = gamma * inner
        self.weights.grad += s * (ds - ds @ s)
        return [gamma * s_l * G for s_l in s]

    def mixing_weights(self) -> np.ndarray:
        """softmax(w) without layer dropout: how much each layer counts at evaluation."""
        e = np.exp(self.weights.data - self.weights.data.max())
        return e / e.sum()
