"""AdamW with decoupled weight decay (bias correction on or off), global-norm clipping, warmup + linear decay.

BERT's original optimiser (google-research/bert ``AdamWeightDecayOptimizer``) is Adam without bias
correction plus decoupled weight decay, with LayerNorm parameters and biases excluded from the decay.
``AdamW(..., correct_bias=False)`` reproduces it; ``correct_bias=True`` (the default) is the bias-corrected
update of ``torch.optim.AdamW``, which Mosbach et al. (2021) found makes fine-tuning more stable.

Parameters are given as ``(name, param, grad)`` triples of numpy arrays. The optimiser keeps references to
both arrays: ``step`` reads ``grad`` and updates ``param`` in place, so the model must zero its gradients in
place (``grad.fill(0)``) and never rebind them to new arrays.

Each parameter's update is ``kernels.adamw_update``: the NumPy reference (``functional.adamw_update``,
the formula one elementwise pass at a time) or one Numba pass with the same bits.
"""
from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from minibert import kernels


def default_no_decay(name: str) -> bool:
    """True for parameters BERT excludes from weight decay: LayerNorm weights/biases and every bias.

    Covers the old ``LayerNorm.gamma``/``LayerNorm.beta`` names too (they contain ``LayerNorm``).
    """
    return "LayerNorm" in name or name.endswith("bias")


def triples_from_model(model) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Zip ``model.named_parameters()`` with ``model.named_grads()`` into ``(name, param, grad)`` triples.

    Raises ValueError if the two sequences do not list the same names in the same order, so that no
    gradient is paired with the wrong parameter or left out.
    """
    params = list(model.named_parameters())
    grads = list(model.named_grads())
    p_names = [n for n, _ in params]
    g_names = [n for n, _ in grads]
    if p_names != g_names:
        only_p = sorted(set(p_names) - set(g_names))
        only_g = sorted(set(g_names) - set(p_names))
        raise ValueError(
            "named_parameters() and named_grads() disagree: "
            f"{len(p_names)} vs {len(g_names)} names; only in parameters: {only_p}; only in grads: {only_g}"
            + ("; same names in a different order" if not (only_p or only_g) else ""))
    return [(n, p, g) for (n, p), (_, g) in zip(params, grads)]


class AdamW:
    """Adam with decoupled weight decay, updating parameters in place.

    For each parameter w with gradient g, at step t = 1, 2, ... (b1, b2 = betas, lr = learning rate):

        m = b1 * m + (1 - b1) * g                 first moment  (m, v start at 0)
        v = b2 * v + (1 - b2) * g * g             second moment
        correct_bias=True:   m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)
        correct_bias=False:  m_hat = m,               v_hat = v        (BERT's original optimiser)
        update = m_hat / (sqrt(v_hat) + eps) + wd * w      (wd = 0 for names where no_decay(name))
        w = w - lr * update

    eps is added to sqrt(v_hat), the bias-corrected root, exactly as ``torch.optim.AdamW`` does. The
    (deprecated) Hugging Face ``transformers.AdamW`` instead applies the step size lr * sqrt(1-b2^t)/(1-b1^t)
    to m / (sqrt(v) + eps), which equals lr * m_hat / (sqrt(v_hat) + eps / sqrt(1-b2^t)): its effective eps is
    larger early on (31.6x at t=1). The two agree wherever eps is negligible against sqrt(v_hat). HF also
    decays the already-updated w; here (as in BERT and torch) the decay uses w from before the step.

    Without bias correction, an early step is larger than the corrected one by the factor
    (1 - b1^t) / sqrt(1 - b2^t) (ignoring eps): about 3.2x at t=1, 6.5x at t=10, 1.26x at t=1000 for the
    default betas, because m and v both start at 0 and v is the slower to fill.

    The decay term is applied as ``w *= 1 - lr * wd`` followed by ``w -= lr * adam_term``, which is the formula
    above rearranged (both use the pre-step w) and needs no extra temporary array.

    Args:
        params: iterable of ``(name, param, grad)`` triples, or a mapping ``name -> (param, grad)``.
            param and grad must have the same shape and floating dtype; the moments get that dtype.
        lr: base learning rate, used when ``step()`` gets no lr.
        betas: (b1, b2), each in [0, 1).
        eps: added to sqrt(v_hat); BERT uses 1e-6, torch defaults to 1e-8.
        weight_decay: wd, applied to parameters whose name is not excluded by ``no_decay``.
        correct_bias: whether to divide the moments by (1 - b^t).
        no_decay: ``name -> bool``; True excludes the parameter from weight decay.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, correct_bias: bool = True,
                 no_decay=default_no_decay):
        _check_lr(lr)
        b1, b2 = betas
        for label, b in (("betas[0]", b1), ("betas[1]", b2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{label} must be in [0, 1), got {b!r}")
        if not (eps >= 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        if not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        self.lr, self.b1, self.b2, self.eps = float(lr), float(b1), float(b2), float(eps)
        self.weight_decay, self.correct_bias = float(weight_decay), bool(correct_bias)

        if isinstance(params, Mapping):
            params = [(name, p, g) for name, (p, g) in params.items()]
        self.names: list[str] = []
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        self.decay: list[bool] = []
        for name, p, g in params:
            _check_pair(name, p, g)
            if name in self.names:
                raise ValueError(f"parameter name {name!r} given twice")
            for other, q in zip(self.names, self.params):
                # A tied weight listed twice would be updated twice per step.
                if np.may_share_memory(p, q):
                    raise ValueError(f"parameters {other!r} and {name!r} share memory; list a tied weight once")
            self.names.append(name)
            self.params.append(p)
            self.grads.append(g)
            self.decay.append(not no_decay(name))
        if not self.names:
            raise ValueError("AdamW got no parameters")
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0  # number of steps taken
        # One flat scratch buffer per dtype, as large as the largest parameter: the hot loop allocates nothing.
        sizes: dict[np.dtype, int] = {}
        for p in self.params:
            sizes[p.dtype] = max(sizes.get(p.dtype, 0), p.size)
        self._scratch = {dtype: np.empty(size, dtype=dtype) for dtype, size in sizes.items()}
        # The update is elementwise: each core takes a share of every parameter's elements (see PARALLEL_FROM).
        self._shares = _shares([(p, g, m, v) for p, g, m, v in zip(self.params, self.grads, self.m, self.v)])
        self._thread_scratch = [None]   # each thread's scratch (the NumPy path's temporary); one: the above
        if len(self._shares) > 1:
            longest = [max((hi - lo for _, lo, hi in share), default=0) for share in self._shares]
            self._thread_scratch = [np.empty(n, self.params[0].dtype) for n in longest]

    def step(self, lr: float | None = None) -> None:
        """Take one AdamW step on every parameter, in place; ``lr`` is the scheduled rate (None: base lr)."""
        constants = self.advance(lr)
        kernels.on_threads(lambda r: self.update(constants, self._shares[r], self._thread_scratch[r]),
                           range(len(self._shares)))

    def advance(self, lr: float | None = None) -> tuple[float, float, float]:
        """Count one step (t += 1) and return its constants for ``update``: (lr c1, c2, lr)."""
        lr = self.lr if lr is None else lr
        _check_lr(lr)
        self.t += 1
        b1, b2, t = self.b1, self.b2, self.t
        if self.correct_bias:
            # m_hat / (sqrt(v_hat) + eps) = (m * c1) / (sqrt(v) * c2 + eps)
            c1, c2 = 1.0 / (1.0 - b1 ** t), 1.0 / math.sqrt(1.0 - b2 ** t)
        else:
            c1 = c2 = 1.0
        return lr * c1, c2, lr

    def update(self, constants: tuple[float, float, float], pieces, scratch=None) -> None:
        """The step counted by ``advance``, which returned ``constants``, on ``pieces``: (i, lo, hi)
        triples that name the flat elements lo:hi of parameter i (a whole parameter takes any layout).

        The update is elementwise, so pieces that cover every element give the bits of the whole step:
        ``step`` gives each of its threads a share of the pieces, and each thread its own ``scratch`` (a
        flat array of the parameters' dtype, as long as its longest piece)."""
        lr_c1, c2, lr = constants
        decayed = 1.0 - lr * self.weight_decay if self.weight_decay else 1.0
        for i, lo, hi in pieces:
            p = self.params[i]
            arrays = (p, self.grads[i], self.m[i], self.v[i])
            if hi - lo != p.size:               # a piece of the parameter: views of the flat arrays
                try:
                    arrays = tuple(piece(a, lo, hi) for a in arrays)
                except ValueError as exc:
                    raise ValueError(f"{self.names[i]}: {exc}") from None
            buf = (self._scratch[p.dtype] if scratch is None else scratch)[:hi - lo].reshape(arrays[0].shape)
            kernels.adamw_update(*arrays, self.b1, self.b2, self.eps, lr_c1, c2,
                                 decayed if self.decay[i] else 1.0, buf)

    def state_dict(self) -> dict:
        """Copies of the optimiser state: ``{"step": t, "m.<name>": m, "v.<name>": v, ...}``.

        A flat dict of an int and numpy arrays: arrays can go to .npz/safetensors, ``step`` to JSON.
        Hyper-parameters are not included; they belong to the training config.
        """
        d: dict = {"step": self.t}
        for name, m, v in zip(self.names, self.m, self.v):
            d[f"m.{name}"] = m.copy()
            d[f"v.{name}"] = v.copy()
        return d

    def load_state_dict(self, d: Mapping) -> None:
        """Restore the state saved by ``state_dict``; raises ValueError listing every missing, unexpected or
        mis-shaped entry. Moments are copied into the existing buffers (cast to the parameter dtype)."""
        expected = {"step": None}
        for name, p in zip(self.names, self.params):
            expected[f"m.{name}"] = p.shape
            expected[f"v.{name}"] = p.shape
        problems = [f"missing {k!r}" for k in expected if k not in d]
        problems += [f"unexpected {k!r}" for k in d if k not in expected]
        for k, shape in expected.items():
            if shape is not None and k in d and np.shape(d[k]) != shape:
                problems.append(f"{k!r} has shape {np.shape(d[k])}, expected {shape}")
        if "step" in d:
            step = d["step"]
            if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or step < 0:
                problems.append(f"'step' must be a non-negative integer, got {step!r}")
        if problems:
            raise ValueError("optimizer state does not match the parameters: " + "; ".join(problems))
        for name, m, v in zip(self.names, self.m, self.v):
            m[...] = d[f"m.{name}"]
            v[...] = d[f"v.{name}"]
        self.t = int(d["step"])


def piece(a: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The flat elements lo:hi of ``a``, as a view to update in place: ``a`` itself when that is all
    of it (any layout), else a slice of a C-contiguous array (of another layout, reshape would copy)."""
    if (lo, hi) == (0, a.size):
        return a
    if not a.flags.c_contiguous:
        raise ValueError("a piece of an array needs a C-contiguous array")
    return a.reshape(-1)[lo:hi]


def clip_grad_norm(grads: Iterable[np.ndarray], max_norm: float, norm: float | None = None) -> float:
    """Scale gradients in place so that their global L2 norm is at most ``max_norm``; return the norm before.

        norm = sqrt(sum over all grads of sum(g^2))          (accumulated in float64)
        if norm > max_norm:  g *= max_norm / (norm + 1e-6)   (the formula of torch/HF clip_grad_norm_)

    A non-finite norm (inf/nan gradients) is returned as is and the gradients are left untouched: the
    training loop decides whether to skip the step. ``norm``: the norm, when the caller has it already
    (``distributed.Workers`` sums it with the gradients).
    """
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"max_norm must be a finite positive number, got {max_norm!r}")
    grads = list(grads)
    shares = _shares([(g,) for g in grads])
    if norm is None:
        def squares(share):
            return [(i, square_sums(piece(grads[i], lo, hi).reshape(-1))) for i, lo, hi in share]
        chunks = [[] for _ in grads]
        for pieces in kernels.on_threads(squares, shares):
            for i, sums in pieces:          # each gradient's chunks, in order
                chunks[i] += sums
        norm = global_norm(chunks)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / (norm + 1e-6)

        def rescale(share):
            for i, lo, hi in share:
                g = piece(grads[i], lo, hi)
                g *= scale
        kernels.on_threads(rescale, shares)
    return norm


# Clipping and AdamW are elementwise passes over every parameter (AdamW reads four arrays and writes
# three, at memory speed), so they split over the cores: each thread takes a share of every
# parameter's elements (``element_shares``), and the bits are those of one thread. Measured on 2
# cores: clipping and AdamW over the mini model's 4.4 M parameters took 12.2 ms on one thread, 8.1 on
# two; over the tiny model's 1.0 M, 2.9 ms either way (the threads' hand-offs eat the gain).
PARALLEL_FROM = 1 << 21


def _shares(arrays: list[tuple[np.ndarray, ...]]) -> list[list[tuple[int, int, int]]]:
    """The ``element_shares`` of some parameters, given one tuple of same-shaped arrays per parameter
    (its grad alone, or param, grad and moments): one share per core from ``PARALLEL_FROM`` elements.
    One share of everything below that, with mixed dtypes, or if an array is not C-contiguous (a piece
    of it would be a copy)."""
    sizes = [group[0].size for group in arrays]
    flat = [a for group in arrays for a in group]
    one = sum(sizes) < PARALLEL_FROM or len({a.dtype for a in flat}) > 1 or \
        not all(a.flags.c_contiguous for a in flat)
    return element_shares(sizes, 1 if one else kernels.cores())


def element_shares(sizes: Sequence[int], n: int) -> list[list[tuple[int, int, int]]]:
    """n shares of the elements of arrays of these sizes, taken flat and in order: share r is a list of
    pieces (i, lo, hi), the elements lo:hi of array i. The shares are contiguous and about equal; a
    cut inside an array falls at a multiple of ``CHUNK`` (or at its end), so that each piece's
    sums of squares are chunks of the whole array's (``square_sums``)."""
    starts = list(itertools.accumulate(sizes, initial=0))
    cuts = [0]
    for r in range(1, n):
        at = starts[-1] * r // n                            # where an equal share would end
        i = bisect.bisect_right(starts, at) - 1             # the array that falls in
        if i < len(sizes):                                  # its nearest chunk boundary, or its end
            at = starts[i] + min(round((at - starts[i]) / CHUNK) * CHUNK, sizes[i])
        cuts.append(max(cuts[-1], at))
    cuts.append(starts[-1])
    shares = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        pieces = [(i, max(lo, start) - start, min(hi, start + size) - start)
                  for i, (start, size) in enumerate(zip(starts, sizes))]
        shares.append([(i, a, b) for i, a, b in pieces if a < b])
    return shares


def global_norm(chunk_sums: Iterable[Iterable[float]]) -> float:
    """sqrt(sum of squares) from each gradient's ``square_sums``: each gradient's chunks added in
    order, then the gradients in order. Whoever computed the chunks, the sums and so the bits are
    those of ``clip_grad_norm``."""
    return math.sqrt(sum(sum(sums) for sums in chunk_sums))


CHUNK = 1 << 16         # elements converted to float64 at a time by square_sums


def square_sums(flat: np.ndarray) -> list[float]:
    """sum(c^2) in float64 of each ``CHUNK``-element chunk c of the 1-D array ``flat``, in order.

    Chunks bound the float64 temporary. A piece of a gradient that starts at a multiple of ``CHUNK``
    has the chunks of the whole gradient: ``distributed.Workers`` sums a gradient's pieces on
    several threads and ``global_norm`` adds their chunks in order, so the norm has the same bits.

    NumPy's own loop (``einsum``), not the BLAS dot product (``c @ c``): OpenBLAS splits a dot of 64 K
    elements over its threads, so each chunk woke its sleeping second thread. The sum over the mini
    model's 4.4 M gradients took 7.7 ms that way and takes 3.1 ms now (``clip_grad_norm`` after two
    data-parallel workers' corpus step of 180 ms: 8.2 -> 6.0 ms), and its last bits no longer depend
    on the number of BLAS threads. In a script that imports NumPy before minibert (so that OpenBLAS's
    woken thread spins for 0.1 s instead of sleeping: minibert/__init__.py), the dot also took a core
    from the workers' next step: 215 ms per mini corpus step then, 177 ms now, either import order."""
    sums = []
    for i in range(0, flat.size, CHUNK):
        c = flat[i:i + CHUNK].astype(np.float64)
        sums.append(float(np.einsum("i,i->", c, c)))
    return sums


def linear_warmup_decay(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for update number ``step`` (0-based: the first update has step=0).

        step < warmup_steps:  base_lr * step / warmup_steps
        otherwise:            base_lr * max(0, (total_steps - step) / max(1, total_steps - warmup_steps))

    This is Hugging Face's ``get_linear_schedule_with_warmup`` (its scheduler starts at step 0), so with
    warmup the first update uses lr = 0, the rate reaches base_lr at step = warmup_steps and 0 at
    step = total_steps. BERT's original code also starts at 0 but decays as base_lr * (1 - step/total_steps)
    after warmup (a drop at the end of warmup); we follow HF.
    """
    for label, value in (("step", step), ("warmup_steps", warmup_steps), ("total_steps", total_steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {value!r}")
    if total_steps == 0:
        raise ValueError("total_steps must be positive, got 0")
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps})")
    _check_lr(base_lr, "base_lr")
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def _check_lr(lr, label: str = "lr") -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)) \
            or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"{label} must be a finite number >= 0, got {lr!r}")


def _check_pair(name, p, g) -> None:
    if not isinstance(name, str):
        raise ValueError(f"parameter names must be strings, got {name!r}")
    if not isinstance(p, np.ndarray) or not isinstance(g, np.ndarray):
        raise ValueError(f"{name}: param and grad must be numpy arrays, got {type(p).__name__}, {type(g).__name__}")
    if p.shape != g.shape:
        raise ValueError(f"{name}: grad shape {g.shape} does not match param shape {p.shape}")
    if p.dtype != g.dtype or p.dtype.kind != "f":
        raise ValueError(f"{name}: param and grad must share one floating dtype, got {p.dtype} and {g.dtype}")
    if not p.flags.writeable:
        raise ValueError(f"{name}: param array is read-only and cannot be updated in place")
