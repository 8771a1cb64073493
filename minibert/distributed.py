"""Data parallelism over MPI: N processes (ranks) share every global batch and sum their gradients.

    mpiexec -n N minibert pretrain ...
        every rank: its share of the batch -> forward -> backward
                    -> ONE Allreduce of all gradients -> the same AdamW step

Every rank holds the whole model and the whole prepared data set. The order of an epoch is a pure
function of (seed, epoch), so every rank knows every global batch; rank r runs only its share (a
contiguous slice of the batch's rows, cut so that the shares hold about equal numbers of real
tokens: ``shard``), then the ranks sum their gradients and each applies the same
optimiser step, so the weights stay identical everywhere without ever being sent again.

Why the sum of the shards' gradients is the big batch's gradient (and a plain average is not):
the pretraining loss of a global batch of B sequences with masked-prediction weights w_p is

    L = sum_p w_p l_p / (W + eps)  +  (1/B) sum_b n_b          W = sum_p w_p over the whole batch,

with l_p the masked-LM negative log-likelihoods and n_b the next-sentence ones. Split the batch into
shards S_1..S_N with W_r predictions and b_r sequences. Both terms are sums over rows, so

    L = sum_r L_r,     L_r = sum_{p in S_r} w_p l_p / (W + eps)  +  (1/B) sum_{b in S_r} n_b,

and, the gradient being linear, grad L = sum_r grad L_r: each rank differentiates its part L_r, and
one Allreduce(SUM) gives every rank the exact gradient of the whole batch. The loss a rank would
compute by itself on its shard is normalised by ITS counts, W_r + eps and b_r. Averaging those,
(1/N) sum_r grad L_r^own, weighs shard r's masked-LM term by (W + eps) / (N (W_r + eps)) and its
next-sentence term by B / (N b_r), which are 1 only when every shard holds exactly W/N predictions
and B/N sequences; with 15% of variable-length sequences masked, shards hold different numbers of
predictions, and the average is a slightly different (and N-dependent) gradient.
So each rank's loss is normalised by the GLOBAL counts W and B, which it can count without any
communication because it knows the global batch. With dropout off, N ranks then reproduce one
process with batch B to float32 summation-order rounding (tests/test_distributed.py checks it under
``mpiexec -n 2``).

Without MPI (no launcher in the environment) ``world()`` is ``SingleProcess``: rank 0 of 1, and
every collective is the identity, so a plain ``minibert pretrain`` runs exactly as before.
``Workers`` takes the same N-rank step as N threads of one process (``minibert pretrain --workers
N``), and gives the ``mpiexec -n N`` run to the bit.

    pip install "minibert[mpi]"        # mpi4py and MPICH, both as wheels from PyPI
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Iterable, Sequence

import numpy as np

from minibert import kernels, optim
from minibert.pretraining.data import trim_columns

# Set by the launchers: MPICH's and Intel MPI's Hydra (and Slurm's PMI) set PMI_SIZE, Open MPI sets
# OMPI_COMM_WORLD_SIZE. Looking at them first means a plain run never initialises MPI.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
INSTALL_HINT = 'pip install "minibert[mpi]" (or: pip install mpi4py mpich)'
EPS = 1e-5          # the masked-LM denominator's epsilon, as in functional.cross_entropy_row_scale


class MPIUnavailable(RuntimeError):
    """Started by an MPI launcher, but mpi4py cannot be imported."""


def launcher_world_size() -> int | None:
    """The number of ranks an MPI launcher started; None when no launcher started this process."""
    for name in LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


class SingleProcess:
    """One process alone: rank 0 of 1; every collective returns its input unchanged."""
    rank = 0
    size = 1
    is_root = True
    comm_seconds = 0.0     # time spent in collectives (none here)

    def allreduce_sum(self, arrays: Sequence[np.ndarray]) -> None:
        """The sum over one rank is the array itself."""

    def broadcast_arrays(self, arrays: Sequence[np.ndarray], root: int = 0) -> None:
        """Nothing to send."""

    def bcast(self, obj, root: int = 0):
        return obj

    def gather(self, obj, root: int = 0) -> list:
        return [obj]

    def barrier(self) -> None:
        """Nothing to wait for."""

    def describe(self) -> str:
        return "1 process"


class FlatBuffer:
    """Packs a list of same-dtype arrays into one contiguous buffer and back.

    One collective over a flat buffer costs one latency; one call per tensor (a BERT has ~200) would
    pay it ~200 times. The buffer is reused across steps, so packing allocates nothing."""

    def __init__(self):
        self.buffer = None

    def pack(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        arrays = list(arrays)
        if not arrays:
            raise ValueError("FlatBuffer.pack needs at least one array")
        dtype = arrays[0].dtype
        for a in arrays:
            if a.dtype != dtype:
                raise ValueError(f"all arrays of one flat buffer must share a dtype; got {dtype} "
                                 f"and {a.dtype}")
        n = sum(a.size for a in arrays)
        if self.buffer is None or self.buffer.size != n or self.buffer.dtype != dtype:
            self.buffer = np.empty(n, dtype=dtype)
        offset = 0
        for a in arrays:
            self.buffer[offset:offset + a.size] = a.reshape(-1)
            offset += a.size
        return self.buffer

    def unpack(self, arrays: Sequence[np.ndarray]) -> None:
        """Copy the buffer's slices back into ``arrays``, in place (they may be a model's grads)."""
        offset = 0
        for a in arrays:
            a[...] = self.buffer[offset:offset + a.size].reshape(a.shape)
            offset += a.size


class MPICommunicator:
    """The ranks of an mpi4py communicator (``MPI.COMM_WORLD`` by default)."""

    def __init__(self, comm=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        self.comm_seconds = 0.0
        self._flat = FlatBuffer()

    def allreduce_sum(self, arrays: Sequence[np.ndarray]) -> None:
        """Replace every array by its sum over the ranks, with ONE Allreduce of a flat buffer."""
        arrays = list(arrays)
        buffer = self._flat.pack(arrays)
        t0 = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        self.comm_seconds += time.perf_counter() - t0
        self._flat.unpack(arrays)

    def broadcast_arrays(self, arrays: Sequence[np.ndarray], root: int = 0) -> None:
        """Overwrite every rank's arrays with the root's (one Bcast of a flat buffer)."""
        arrays = list(arrays)
        buffer = self._flat.pack(arrays)
        t0 = time.perf_counter()
        self.comm.Bcast(buffer, root=root)
        self.comm_seconds += time.perf_counter() - t0
        self._flat.unpack(arrays)

    def bcast(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def gather(self, obj, root: int = 0):
        """Every rank's ``obj`` as a list on the root (None on the others)."""
        return self.comm.gather(obj, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def describe(self) -> str:
        return f"{self.size} MPI ranks"


_WORLD = None


def world():
    """This run's communicator: ``MPICommunicator`` under an MPI launcher, else a SingleProcess."""
    global _WORLD
    if _WORLD is None:
        size = launcher_world_size()
        if size is None:
            _WORLD = SingleProcess()
        else:
            try:
                import mpi4py  # noqa: F401
            except ImportError:
                raise MPIUnavailable(f"this process was started by an MPI launcher ({size} ranks) "
                                     f"but mpi4py is not installed; install it with {INSTALL_HINT}"
                                     ) from None
            _WORLD = MPICommunicator()
    return _WORLD


def rank_generator(seed: int, comm) -> np.random.Generator:
    """Rank ``comm.rank``'s own stream (dropout) as a pure function of (seed, rank, N).

    Ranks must not share a stream: equal dropout masks on every shard would correlate the shards.
    One process keeps ``default_rng(seed)``, so a run without MPI is unchanged."""
    return _rank_stream(seed, comm.rank, comm.size)


def _rank_stream(seed: int, rank: int, size: int) -> np.random.Generator:
    if size == 1:
        return np.random.default_rng(seed)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(size, rank)))


def shard(indices: np.ndarray, lengths: np.ndarray, rank: int, size: int) -> np.ndarray:
    """Rank ``rank``'s share of a global batch's rows ``indices``, whose sequences hold ``lengths``
    real tokens: a contiguous slice, cut where the ranks' real tokens come closest to equal shares,
    each rank at least one row.

    Equal numbers of sequences are not equal work: a rank's time goes with its real tokens, and every
    rank waits for the slowest. On the bundled corpus (mini, batches of 32, 2 workers), the larger
    half of a batch held 6.5% more real tokens than the mean in a typical step (15% in one step of
    ten), and the slower worker took 5% longer than the mean; cut by tokens, 1.7% and 1.4%, and the
    step took about 5% less time. (At tiny, where Python's part of the step is larger, no change.)
    Every rank knows the global batch, so every rank computes the same cuts."""
    indices, lengths = np.asarray(indices), np.asarray(lengths)
    if lengths.shape != indices.shape:
        raise ValueError(f"shard needs one length per row: {lengths.shape} lengths for {indices.shape} rows")
    if len(indices) < size:
        raise ValueError(f"a global batch of {len(indices)} sequences cannot be shared by {size} "
                         f"ranks; use a --batch-size of at least {size}")
    ends = np.cumsum(lengths)               # ends[i]: real tokens in rows 0 .. i
    before, total = ends[:-1], ends[-1]     # before: the tokens ahead of a cut after 1 .. B - 1 rows
    cuts = [0]
    for r in range(1, size):
        nearest = 1 + int(np.argmin(np.abs(before - total * r / size)))     # ties: fewer rows
        cuts.append(min(max(nearest, cuts[-1] + 1), len(indices) - (size - r)))
    cuts.append(len(indices))
    return indices[cuts[rank]:cuts[rank + 1]]


@dataclasses.dataclass(frozen=True)
class BatchTotals:
    """The global batch's normalisers, W (sum of masked-LM weights) and B (sequences), and its real
    (non-padding) tokens for the throughput."""
    predictions: float
    sequences: int
    tokens: int = 0

    @classmethod
    def of(cls, masked_lm_weights: np.ndarray, dtype=np.float32,
           attention_mask=None) -> "BatchTotals":
        """Counted in the model's dtype, as the one-process loss counts them (0/1 sum exactly)."""
        w = np.asarray(masked_lm_weights)
        tokens = 0 if attention_mask is None else int(np.asarray(attention_mask).sum())
        return cls(float(w.astype(dtype).sum()), int(w.shape[0]), tokens)


@dataclasses.dataclass(frozen=True)
class ShardLoss:
    """A shard's share of the global batch's loss: the upstream gradient of each of its two losses (for
    ``model.backward``) and its parts of the two global losses (their sums over the ranks)."""
    dmlm_loss: float
    dnsp_loss: float
    mlm_part: float
    nsp_part: float


def renormalise(shard_weights: np.ndarray, totals: BatchTotals, out) -> ShardLoss:
    """Make the shard's own loss its part of the global batch's loss.

    After ``model.forward`` on a shard, its masked-LM loss is sum_p w_p nll_p / (W_r + eps) and its
    next-sentence loss sum_b nll_b / b_r, normalised by the shard's own counts. The global batch's loss
    counts the same rows as sum_p w_p nll_p / (W + eps) and sum_b nll_b / B, that is, the shard's losses
    times c_mlm = (W_r + eps) / (W + eps) and c_nsp = b_r / B. These factors are the losses' upstream
    gradients: ``model.backward(dmlm_loss=c_mlm, dnsp_loss=c_nsp)`` gives the shard's part of the global
    gradient, and summing over the ranks gives the whole (up to float rounding in the order of sums)."""
    if out.mlm_loss is None or out.nsp_loss is None:
        raise RuntimeError("renormalising a shard's loss needs a forward() with labels")
    dtype = np.asarray(out.mlm_loss).dtype
    w = np.asarray(shard_weights).reshape(-1).astype(dtype)
    own, total = w.sum(dtype=dtype) + dtype.type(EPS), dtype.type(totals.predictions) + dtype.type(EPS)
    c_mlm = float(own) / float(total)
    c_nsp = len(out.seq_relationship_logits) / totals.sequences
    return ShardLoss(c_mlm, c_nsp, float(out.mlm_loss) * c_mlm, float(out.nsp_loss) * c_nsp)


BATCH_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
              "masked_lm_ids", "masked_lm_weights", "next_sentence_labels")


def forward_backward(model, batch: dict, totals: BatchTotals, comm, stop: bool = False,
                     timings: dict | None = None) -> dict:
    """One rank's share of a data-parallel step: zero_grad, forward and backward on ``batch`` (this
    rank's shard), then one Allreduce that sums the gradients, the two loss parts and the stop
    flags.

    Afterwards every rank holds the global batch's gradient and losses; ``stop`` is true on every
    rank when any rank asked to stop (Ctrl-C reaches the ranks at slightly different moments, and
    all must leave the loop at the same step). With one process this is forward + backward,
    unchanged.

    ``timings`` (a dict), when given, receives this step's seconds of "compute" (forward +
    backward), "wait" (a Barrier before the Allreduce: the time this rank waits for the slowest,
    which would otherwise be counted as communication) and "allreduce"; training passes None and
    pays no Barrier."""
    t0 = time.perf_counter()
    if comm.size == 1:
        model.zero_grad()
        out = model.forward(**{k: batch[k] for k in BATCH_KEYS})
        model.backward()
        if timings is not None:
            timings.update(compute=time.perf_counter() - t0, wait=0.0, allreduce=0.0)
        return {"loss": float(out.loss), "mlm_loss": float(out.mlm_loss),
                "nsp_loss": float(out.nsp_loss), "stop": stop}
    share = shard_forward_backward(model, batch, totals)
    grads = [g for _, g in model.named_grads()]
    # The loss parts and the flag travel in the gradients' buffer: still one message per step.
    extra = np.array([share.mlm_part, share.nsp_part, float(stop)], dtype=grads[0].dtype)
    if timings is not None:
        t1 = time.perf_counter()
        comm.barrier()
        t2 = time.perf_counter()
        timings.update(compute=t1 - t0, wait=t2 - t1)
    comm.allreduce_sum(grads + [extra])
    if timings is not None:
        timings["allreduce"] = time.perf_counter() - t2
    mlm, nsp = float(extra[0]), float(extra[1])
    return {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp, "stop": bool(extra[2] > 0)}


def shard_forward_backward(model, batch: dict, totals: BatchTotals) -> ShardLoss:
    """zero_grad, forward and backward on one shard of a global batch, its loss normalised by the
    global batch's counts (``renormalise``): the shard's part of the global gradient, in its grads."""
    model.zero_grad()
    out = model.forward(**{k: batch[k] for k in BATCH_KEYS})
    share = renormalise(batch["masked_lm_weights"], totals, out)
    model.backward(dmlm_loss=share.dmlm_loss, dnsp_loss=share.dnsp_loss)
    return share


class Workers:
    """N data-parallel workers in one process: Python threads, each with a replica of the model.

    The step of N MPI ranks (above), with threads for processes: worker r runs shard r of the global
    batch (``shard``) with its own dropout stream (``rank_generator`` of rank r of N) and its loss
    normalised by the global counts, then the gradients are summed, in worker order, into the model's
    own. The replicas compute with the model's weight arrays (``Module.replica``), so the one AdamW
    step that follows updates every worker at once. A run with N workers is therefore the run of
    ``mpiexec -n N`` with the same seed, and its checkpoints record the same N.

    Why threads in one process are faster than one process on every core: the workers run inside
    ``kernels.single_threaded()``, so each has a core to itself, with its own caches and no hand-offs.
    On every core, each matmul, Numba kernel and attention block is split across the cores and joined
    again, hundreds of times a step, and attention's small per-head products cannot use more than one.
    The matmuls and kernels release the GIL; the Python between them does not, which is the part
    left on one core. (Measured: README, "Performance".)
    """

    def __init__(self, model, n: int, seed: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of workers must be a positive integer, got {n!r}")
        self.size = n
        self.models = [model] + [model.replica() for _ in range(n - 1)]
        for r, m in enumerate(self.models):
            m.rng.bit_generator.state = _rank_stream(seed, r, n).bit_generator.state
        self._grads = [[g for _, g in m.named_grads()] for m in self.models]      # worker, parameter
        sizes = [g.size for g in self._grads[0]]      # the sum below, on every thread from PARALLEL_FROM on
        self._grad_shares = optim.element_shares(sizes, n if sum(sizes) >= optim.PARALLEL_FROM else 1)

    def forward_backward(self, batch: dict, timings: dict | None = None) -> dict:
        """Every worker's shard of the global ``batch`` at once; afterwards the model's grads hold the
        global batch's gradient. Returns the global losses, summed in the gradients' dtype as the
        Allreduce sums them, and "grad_norm", the gradient's global norm as ``clip_grad_norm`` computes
        it (for ``clip_grad_norm(..., norm=)``). ``timings`` as in ``forward_backward``: "compute" (the
        threads' forward and backward), "wait" (0: the step waits for the slowest thread inside
        compute) and "allreduce" (the sum of the gradients, with their squares for the norm)."""
        t0 = time.perf_counter()
        shards, totals = split_batch(batch, self.size)
        shares = kernels.on_threads(lambda r: shard_forward_backward(self.models[r], shards[r], totals),
                                    range(self.size))
        t1 = time.perf_counter()
        squares = kernels.on_threads(self._sum_grads, self._grad_shares)
        by_grad = [[] for _ in self._grads[0]]
        for i, sums in (piece for thread in squares for piece in thread):   # each gradient's chunks, in order
            by_grad[i] += sums
        if timings is not None:
            timings.update(compute=t1 - t0, wait=0.0, allreduce=time.perf_counter() - t1)
        total = np.zeros(2, dtype=self._grads[0][0].dtype)
        for share in shares:
            total += np.array([share.mlm_part, share.nsp_part], dtype=total.dtype)
        mlm, nsp = float(total[0]), float(total[1])
        return {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp, "grad_norm": optim.global_norm(by_grad)}

    def _sum_grads(self, pieces) -> list:
        """Add the other workers' gradients into the model's, in worker order, on ``pieces`` (i, lo, hi)
        of the flat gradients; return each piece's (i, chunk sums of squares) (``optim.square_sums``)."""
        out = []
        for i, lo, hi in pieces:
            own = optim.piece(self._grads[0][i], lo, hi)
            for grads in self._grads[1:]:
                own += optim.piece(grads[i], lo, hi)
            out.append((i, optim.square_sums(own.reshape(-1))))
        return out

    def rng_states(self) -> list:
        return [m.rng.bit_generator.state for m in self.models]

    def set_rng_states(self, states: Sequence) -> None:
        for m, state in zip(self.models, states, strict=True):
            m.rng.bit_generator.state = state


def split_batch(batch: dict, n: int) -> tuple[list[dict], BatchTotals]:
    """A global batch's n shards, each trimmed to its own longest sequence (the batch rank r takes
    from the data set: the rows ``shard(r)``), and the global batch's totals."""
    totals = BatchTotals.of(batch["masked_lm_weights"], attention_mask=batch["attention_mask"])
    rows, lengths = np.arange(len(batch["input_ids"])), batch["attention_mask"].sum(axis=1)
    shards = [trim_columns({k: v[shard(rows, lengths, r, n)] for k, v in batch.items()}) for r in range(n)]
    return shards, totals


def on_root(comm, fn):
    """``fn()`` on the root alone (writing files); every rank returns its result or raises its
    error.

    Without this, an error on the root (a full disk, a refused output folder) would leave the other
    ranks waiting forever in their next collective: MPI has no notion of an exception."""
    if comm.size == 1:
        return fn()
    result = error = None
    if comm.is_root:
        try:
            result = fn()
        except Exception as exc:        # handed to every rank, which all raise it
            error = exc
    result, error = comm.bcast((result, error))
    if error is not None:
        raise error
    return result


def in_turn(comm, fn):
    """``fn()`` on every rank, one rank after the other, an error on any rank raised on all of them.

    For preparing data into a folder: the first rank to reach a file system writes it, and the ranks
    after it, on the same machine or a shared file system, find it ready instead of racing to write
    it."""
    result = None
    for turn in range(comm.size):
        error = None
        if comm.rank == turn:
            try:
                result = fn()
            except Exception as exc:
                error = exc
        error = comm.bcast(error, root=turn)
        if error is not None:
            raise error
    return result


def gather_results(comm, fn) -> list | None:
    """``fn()`` on every rank; the root gets the ranks' results in rank order (the others None).

    An error on any rank is raised on the root too (the first in rank order), and on its own rank,
    so no rank is left waiting for another that failed."""
    try:
        value, error = fn(), None
    except Exception as exc:
        value, error = None, exc
    parts = comm.gather((value, error))
    if error is not None:
        raise error
    if parts is None:
        return None
    for _, other in parts:
        if other is not None:
            raise other
    return [v for v, _ in parts]


def broadcast_model(model, comm, root: int = 0) -> None:
    """Make every rank's weights the root's (the ranks build the same weights from the same seed;
    this makes it so, whatever the platform's rounding)."""
    if comm.size > 1:
        comm.broadcast_arrays([p for _, p in model.named_parameters()], root)


def gradient_bytes(model) -> int:
    """Bytes of one rank's gradient message per step: every parameter once (tied weights once)."""
    return int(sum(p.nbytes for _, p in model.named_parameters()))


def ring_allreduce_seconds(nbytes: float, n: int, latency_s: float,
                           bandwidth_bytes_s: float) -> float:
    """The cost model of a ring all-reduce of ``nbytes`` over ``n`` ranks.

    Reduce-scatter then all-gather: each takes n - 1 steps, and in each step every rank sends one
    chunk of nbytes / n to its neighbour, all links busy at once. So
        t(n) = 2 (n - 1) * latency  +  2 (n - 1) / n * nbytes / bandwidth,
    and the bandwidth term tends to 2 * nbytes / bandwidth: it does not grow with n."""
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * latency_s + 2 * (n - 1) / n * nbytes / bandwidth_bytes_s


def share(items: Iterable, comm) -> list:
    """This rank's share of independent jobs: items rank, rank + N, rank + 2N, ... (round robin, so
    a list ordered by size spreads its big jobs over all ranks)."""
    return list(items)[comm.rank::comm.size]


def gather_shares(results: list, comm) -> list | None:
    """Undo ``share``: on the root, every rank's results back in the original order of the items
    (None on the other ranks)."""
    parts = comm.gather(results)
    if parts is None:
        return None
    merged = [None] * sum(len(p) for p in parts)
    for r, part in enumerate(parts):
        merged[r::len(parts)] = part
    return merged
