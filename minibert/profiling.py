"""Where one training step's time and memory go, operation by operation.

    minibert bench profile [--preset mini] [--batch-size 32] [--seq-len 128] [--corpus] [--repeats
    5]

Time: every forward and backward of every module class (``minibert.nn`` and ``minibert.models``) and
every function of ``minibert.functional`` and of the Numba kernels is wrapped, for the profile only,
in a timer that charges each call its *exclusive* time (its own time minus the wrapped calls inside
it). So ``Linear.forward`` is its matrix product, ``attention_forward`` is attention's batched
products and dropout (its softmax is charged to ``softmax_forward``), and
``BertSelfAttention.forward`` is what it does itself: splitting and merging heads. The wrappers cost
about a microsecond a call, which is noise next to these operations.

Memory: the arrays the modules hold between forward and backward (their caches), measured after a
forward and summed per module class and attribute, each buffer counted once (views are traced back
to the array that owns the memory); and the peak of NumPy's allocations during a whole step, as
``tracemalloc`` sees them (NumPy reports its data buffers to it).
"""
from __future__ import annotations

import contextlib
import functools
import statistics
import time
import tracemalloc
from collections import Counter, defaultdict

import numpy as np


class OpTimer:
    """Exclusive wall-clock time and call counts per wrapped name."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = Counter()
        self._children = []          # per active call: time spent in wrapped calls below it

    def wrap(self, name, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._children.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = self._children.pop()
                self.seconds[name] += elapsed - inner
                self.calls[name] += 1
                if self._children:
                    self._children[-1] += elapsed
        return timed

    def reset(self):
        self.seconds.clear()
        self.calls.clear()


def _module_classes():
    from minibert import nn
    import minibert.models  # noqa: F401  (registers the model classes as subclasses)

    seen, todo = [], [nn.Module]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return seen


@contextlib.contextmanager
def instrumented(timer: OpTimer):
    """Wrap the module methods and the operation functions in ``timer`` for the block; restore."""
    import importlib

    from minibert import functional

    patched = []

    def patch(owner, attr, name):
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        patched.append((owner, attr, original))
        setattr(owner, attr, timer.wrap(name, original))

    for cls in _module_classes():
        for attr in ("forward", "backward"):
            if attr in cls.__dict__:
                patch(cls, attr, f"{cls.__name__}.{attr}")
    modules = [functional]
    with contextlib.suppress(ImportError):
        modules.append(importlib.import_module("minibert.kernels.numba_kernels"))
    for module in modules:
        for attr, value in list(vars(module).items()):
            own = getattr(value, "__module__", None) == module.__name__
            if callable(value) and own and not attr.startswith("_") and not isinstance(value, type):
                patch(module, attr, attr)
    try:
        yield timer
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def held_arrays(model) -> dict[str, int]:
    """Bytes of the arrays each module holds besides its parameters, keyed "Class.attribute"; each
    buffer counted once, under the first module (in registration order) that holds it."""
    from minibert.nn import Parameter

    counted, out = set(), Counter()
    params = {id(_owner(p.data)) for _, p in model.named_parameter_objects()}
    params |= {id(_owner(p.grad)) for _, p in model.named_parameter_objects()}

    def walk(value, key, depth=0):
        if isinstance(value, np.ndarray):
            owner = _owner(value)
            if id(owner) not in counted and id(owner) not in params:
                counted.add(id(owner))
                out[key] += owner.nbytes
        elif isinstance(value, (tuple, list)) and depth < 4:
            for item in value:
                walk(item, key, depth + 1)
        elif isinstance(value, dict) and depth < 4:
            for item in value.values():
                walk(item, key, depth + 1)
        elif hasattr(value, "__dataclass_fields__") and depth < 4:
            for name in value.__dataclass_fields__:
                walk(getattr(value, name), key, depth + 1)

    for module in model.modules():
        for attr, value in vars(module).items():
            if not isinstance(value, Parameter) and not hasattr(value, "named_parameter_objects"):
                walk(value, f"{type(module).__name__}.{attr}")
    return dict(out)


def profile_step(step, repeats: int) -> tuple[OpTimer, float]:
    """Run ``step()`` once to warm up, then ``repeats`` times instrumented; returns the timer
    (totals over the repeats) and the median instrumented step time in seconds."""
    step()
    timer = OpTimer()
    times = []
    with instrumented(timer):
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return timer, statistics.median(times)


def peak_traced_bytes(step) -> int:
    """Peak of the memory NumPy (and Python) allocate during ``step()``, above what was allocated
    before it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before
