"""One switch between the NumPy reference pairs and their Numba kernels.

Model code calls the hot non-matmul operations through this module::

    from minibert import kernels
    y, cache = kernels.layernorm_forward(x, gamma, beta, eps)

and gets ``minibert.functional`` (NumPy) or ``minibert.kernels.numba_kernels`` (Numba), which have the
same signatures and agree to rounding. The choice comes from the environment variable
``MINIBERT_KERNELS=numpy|numba`` (Numba by default) and can be changed in code::

    kernels.use("numpy")            # from now on
    with kernels.using("numpy"):    # for a block (tests, lessons, benchmarks)
        ...
"""
from __future__ import annotations

import contextlib
import importlib
import os

BACKENDS = {"numpy": "minibert.functional", "numba": "minibert.kernels.numba_kernels"}

# The operations that have a Numba kernel. Everything else (matmuls, dropout, ...) is NumPy on both paths.
KERNEL_NAMES = (
    "softmax_forward", "softmax_backward",
    "layernorm_forward", "layernorm_backward",
    "bias_gelu_forward", "bias_gelu_backward",
    "embedding_backward",
    "cross_entropy_forward", "cross_entropy_backward",
)

_active = None  # the module in use; resolved on first call so importing minibert does not import Numba


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; expected one of {sorted(BACKENDS)}")
    return name


def use(name: str) -> None:
    """Select the backend ("numpy" or "numba") for every following call."""
    global _active
    _active = importlib.import_module(BACKENDS[_check(name)])


def backend() -> str:
    """The name of the backend in use."""
    module = _module()
    return next(name for name, path in BACKENDS.items() if path == module.__name__)


@contextlib.contextmanager
def using(name: str):
    """Run a block with the given backend, then restore the previous one."""
    global _active
    previous = _active
    use(name)
    try:
        yield
    finally:
        _active = previous


def _module():
    if _active is None:
        use(os.environ.get("MINIBERT_KERNELS", "numba").strip().lower() or "numba")
    return _active


def _dispatcher(name):
    def call(*args, **kwargs):
        return getattr(_module(), name)(*args, **kwargs)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{name}`` of the active backend (see minibert.functional.{name})."
    return call


for _name in KERNEL_NAMES:
    globals()[_name] = _dispatcher(_name)
del _name
