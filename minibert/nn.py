"""Modules: thin shells that own parameters and gradients, call the forward/backward pairs, and keep the
cache of their last forward.

There is no autograd. A module's ``forward`` stores what its ``backward`` needs in ``self.cache``; a
model's ``backward`` calls its children's ``backward`` in reverse order, by hand. A module therefore
supports one forward per backward: calling ``forward`` twice before ``backward`` overwrites the cache.

Parameter names are the attribute paths, which are chosen to be the Hugging Face BERT state-dict keys
(``encoder.layer.0.attention.self.query.weight``), so checkpoints convert without a renaming table.
"""
from __future__ import annotations

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


class Module:
    training = True

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
    """y = x W^T + b with W of shape (out, in), as in PyTorch and the Hugging Face checkpoints."""

    def __init__(self, in_features: int, out_features: int, rng: np.random.Generator, std: float = 0.02,
                 bias: bool = True):
        self.weight = Parameter(normal_init(rng, (out_features, in_features), std))
        self.bias = Parameter(np.zeros(out_features, np.float32)) if bias else None

    @classmethod
    def tied(cls, weight: Parameter) -> "Linear":
        """A bias-free Linear whose weight is an existing Parameter (the MLM decoder and the word
        embeddings share one matrix)."""
        linear = cls.__new__(cls)
        linear.weight, linear.bias = weight, None
        return linear

    def forward(self, x, add_bias: bool = True):
        """``add_bias=False`` leaves the bias to the caller (BERT adds it inside the fused bias+GELU
        kernel); the bias gradient is then the caller's too."""
        self.bias_added = add_bias and self.bias is not None
        y, self.cache = F.linear_forward(x, self.weight.data, self.bias.data if self.bias_added else None)
        return y

    def backward(self, dy):
        return F.linear_backward(dy, self.cache, self.weight.grad, self.bias.grad if self.bias_added else None)


class LayerNorm(Module):
    def __init__(self, size: int, eps: float = 1e-12):
        self.weight = Parameter(np.ones(size, np.float32))   # gamma
        self.bias = Parameter(np.zeros(size, np.float32))    # beta
        self.eps = eps

    def forward(self, x):
        y, self.cache = kernels.layernorm_forward(x, self.weight.data, self.bias.data, self.eps)
        return y

    def backward(self, dy):
        return kernels.layernorm_backward(dy, self.cache, self.weight.grad, self.bias.grad)


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
        kernels.embedding_backward(dy, self.cache, self.weight.grad)


class Dropout(Module):
    """Inverted dropout. ``rng`` is shared with the rest of the model: restoring its state
    (``rng.bit_generator.state = saved``) replays exactly the same masks, which gradient checks and
    FreeLB's repeated passes rely on."""

    def __init__(self, p: float, rng: np.random.Generator):
        self.p = p
        self.rng = rng

    def forward(self, x):
        y, self.cache = F.dropout_forward(x, self.p if self.training else 0.0, self.rng)
        return y

    def backward(self, dy):
        return F.dropout_backward(dy, self.cache)
