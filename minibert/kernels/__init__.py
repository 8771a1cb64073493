"""One switch between the NumPy reference pairs and their Numba kernels.

Model code calls the hot non-matmul operations through this module::

    from minibert import kernels
    y, cache = kernels.layernorm_forward(x, gamma, beta, eps)
    dx = kernels.layernorm_backward(dy, cache, dgamma, dbeta)

Each function below is written out: it asks which backend is active, calls that backend's function of the
same name (``minibert.functional``, the NumPy reference, or ``minibert.kernels.numba_kernels``), and
returns the cache as ``(backend name, cache)``. The backward unpacks it and calls the SAME backend,
whatever is active by then, so a forward under ``kernels.using("numpy")`` followed by a backward outside it is still
one backend's pair (the two backends keep differently shaped caches).

The choice comes from the environment variable ``MINIBERT_KERNELS=numpy|numba`` (Numba by default) and can
be changed in code::

    kernels.use("numpy")            # from now on
    with kernels.using("numpy"):    # for a block (tests, lessons, benchmarks)
        ...

Matmuls and the embedding lookup are NumPy on both paths. ``adamw_update`` (the optimiser's per-parameter
update) and ``log_softmax_normaliser`` (held-out scores and probes) have no cache and no backward; they are
switched the same way.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait

BACKENDS = {"numpy": "minibert.functional", "numba": "minibert.kernels.numba_kernels"}

# The pairs both backends provide, dispatched below (tests check each exists on both sides and agrees).
KERNEL_NAMES = (
    "softmax_forward", "softmax_backward",
    "layernorm_forward", "layernorm_backward",
    "linear_gelu_forward", "linear_gelu_backward",
    "dropout_forward", "dropout_backward",
    "dropout_add_layernorm_forward", "dropout_add_layernorm_backward",
    "attention_forward", "attention_backward",
    "unpadded_attention_forward", "unpadded_attention_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "embedding_backward",
    "adamw_update",
    "log_softmax_normaliser",
)

_active = None  # the name of the backend in use; read from the environment on first call


def use(name: str) -> None:
    """Select the backend ("numpy" or "numba") for every following call."""
    global _active
    _impl(name)
    _active = name


def backend() -> str:
    """The name of the backend in use."""
    if _active is None:
        use(os.environ.get("MINIBERT_KERNELS", "numba").strip().lower() or "numba")
    return _active


def active():
    """The backend module in use (``minibert.functional`` or ``minibert.kernels.numba_kernels``)."""
    return _impl(backend())


def _impl(name: str):
    """The module of backend ``name``, imported on first use (so importing minibert does not load Numba)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; expected one of {sorted(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


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


# ----------------------------------------------------------------------------------------------
# One thread per computation, for Python threads that each run their own (data-parallel workers)
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def single_threaded():
    """Run a block with every kernel on its calling thread and the BLAS on one thread, then restore both.

    For Python threads that each run a computation of their own at the same time, one per core
    (``minibert.distributed.Workers``): each then has a core to itself. Without it, two threads' matmuls
    would each ask the BLAS for every core, and the Numba kernels' thread pool (the workqueue layer)
    cannot serve two threads at once. Sets the process-wide settings, so one block at a time: use it
    around the threads, not inside them. The BLAS is NumPy's OpenBLAS; with another BLAS (Accelerate,
    MKL) its thread count stays as it is, which is slower but gives the same results."""
    numba_module = _impl("numba") if backend() == "numba" else None
    serial_up_to = numba_module.SERIAL_UP_TO if numba_module else None
    blas = _openblas_threads()
    blas_threads = blas[0]() if blas else None
    if numba_module:
        numba_module.SERIAL_UP_TO = sys.maxsize
    if blas:
        blas[1](1)
    try:
        yield
    finally:
        if numba_module:
            numba_module.SERIAL_UP_TO = serial_up_to
        if blas:
            blas[1](blas_threads)


def cores() -> int:
    """How many threads minibert's own thread pool fills (``on_threads``): ``NUMBA_NUM_THREADS`` when
    set, as the kernels' threads do (MPI ranks sharing a machine set it to 1), else the cores this
    process may run on."""
    if os.environ.get("NUMBA_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["NUMBA_NUM_THREADS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_pool: ThreadPoolExecutor | None = None
_pool_threads = 0
_in_item = threading.local()     # .active: this thread is running an item of on_threads


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there, so the child makes its own."""
    global _pool, _pool_threads
    _pool, _pool_threads = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def on_threads(fn, items) -> list:
    """[fn(item) for item in items], all at once: item 0 on the calling thread, each other on a thread
    of minibert's one pool (made on first use with ``cores() - 1`` threads, or as many as the items
    need), inside ``single_threaded()`` so that each has a core to itself. Waits for every item, even
    after an error in one, then raises the first error in item order. A single item runs as a plain
    call, and so do the items of a call made from inside an item: the pool's threads are busy with
    the outer call's items, and waiting for them there would never end."""
    global _pool, _pool_threads
    items = list(items)
    if len(items) <= 1 or getattr(_in_item, "active", False):
        return [fn(item) for item in items]
    if _pool_threads < len(items) - 1:
        if _pool is not None:
            _pool.shutdown(wait=False)     # idle: every call waits for its items before it returns
        _pool_threads = max(len(items), cores()) - 1
        _pool = ThreadPoolExecutor(_pool_threads, thread_name_prefix="minibert")

    def item_call(item):
        _in_item.active = True
        try:
            return fn(item)
        finally:
            _in_item.active = False
    with single_threaded():
        futures = [_pool.submit(item_call, item) for item in items[1:]]
        try:
            first = item_call(items[0])
        finally:
            wait(futures)
        return [first] + [f.result() for f in futures]


@functools.cache
def _openblas_threads():
    """(get_num_threads, set_num_threads) of the OpenBLAS that NumPy loaded, or None (another BLAS, or
    a system without /proc/self/maps). NumPy's wheels bundle OpenBLAS under a prefixed name."""
    import numpy as np

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:
        return None
    numpy_root = os.path.dirname(os.path.dirname(np.__file__))
    for path in sorted(paths, key=lambda p: (not p.startswith(numpy_root), "numpy" not in p, p)):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                               ("openblas", "")):
            get = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
            set_ = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes, set_.restype, set_.argtypes = ctypes.c_int, [], None, [ctypes.c_int]
                return get, set_
    return None


# ----------------------------------------------------------------------------------------------
# The dispatched pairs. Signatures and shapes: see the reference of the same name in functional.py.
# ----------------------------------------------------------------------------------------------
def softmax_forward(x, mask_bias=None):
    name = backend()
    p, cache = _impl(name).softmax_forward(x, mask_bias)
    return p, (name, cache)


def softmax_backward(dp, cache):
    name, cache = cache
    return _impl(name).softmax_backward(dp, cache)


def layernorm_forward(x, gamma, beta, eps=1e-12):
    name = backend()
    y, cache = _impl(name).layernorm_forward(x, gamma, beta, eps)
    return y, (name, cache)


def layernorm_backward(dy, cache, dgamma, dbeta):
    name, cache = cache
    return _impl(name).layernorm_backward(dy, cache, dgamma, dbeta)


def dropout_add_layernorm_forward(x, residual, p, rng, gamma, beta, eps=1e-12, drawn_rows=None):
    name = backend()
    y, cache = _impl(name).dropout_add_layernorm_forward(x, residual, p, rng, gamma, beta, eps, drawn_rows)
    return y, (name, cache)


def dropout_add_layernorm_backward(dy, cache, dgamma, dbeta):
    name, cache = cache
    return _impl(name).dropout_add_layernorm_backward(dy, cache, dgamma, dbeta)


def linear_gelu_forward(x, weight, bias, approximate=False):
    name = backend()
    h, cache = _impl(name).linear_gelu_forward(x, weight, bias, approximate)
    return h, (name, cache)


def linear_gelu_backward(dh, cache, dweight, dbias):
    name, cache = cache
    return _impl(name).linear_gelu_backward(dh, cache, dweight, dbias)


def dropout_forward(x, p, rng):
    name = backend()
    y, cache = _impl(name).dropout_forward(x, p, rng)
    return y, (name, cache)


def dropout_backward(dy, cache):
    name, cache = cache
    return _impl(name).dropout_backward(dy, cache)


def attention_forward(q, k, v, mask_bias, dropout_p=0.0, rng=None, dropout_mask=None):
    name = backend()
    context, probs, cache = _impl(name).attention_forward(q, k, v, mask_bias, dropout_p, rng, dropout_mask)
    return context, probs, (name, cache)


def attention_backward(dcontext, cache):
    name, cache = cache
    return _impl(name).attention_backward(dcontext, cache)


def unpadded_attention_forward(q, k, v, groups, num_heads, dropout_p=0.0, rng=None, queries=None):
    name = backend()
    context, probs, cache = _impl(name).unpadded_attention_forward(q, k, v, groups, num_heads, dropout_p, rng,
                                                                    queries)
    return context, probs, (name, cache)


def unpadded_attention_backward(dcontext, cache):
    name, cache = cache
    return _impl(name).unpadded_attention_backward(dcontext, cache)


def cross_entropy_forward(logits, targets, weights=None):
    name = backend()
    loss, cache = _impl(name).cross_entropy_forward(logits, targets, weights)
    return loss, (name, cache)


def cross_entropy_backward(dloss, cache):
    name, cache = cache
    return _impl(name).cross_entropy_backward(dloss, cache)


def embedding_backward(dout, ids, dweight):
    """The lookup's backward needs only the ids, the same on both backends, so there is no cache to bind."""
    active().embedding_backward(dout, ids, dweight)


def adamw_update(p, g, m, v, b1, b2, eps, lr_c1, c2, decay, buf):
    """An in-place update with no cache to bind: the active backend does it."""
    active().adamw_update(p, g, m, v, b1, b2, eps, lr_c1, c2, decay, buf)


def log_softmax_normaliser(logits):
    """Inference only (no cache, no backward): the active backend's."""
    return active().log_softmax_normaliser(logits)

