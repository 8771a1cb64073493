# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 17 — Data parallelism: one batch on N machines, one all-reduce per step
#
# **Run time:** about 2-3 minutes on a 2-core laptop (quick mode `MINIBERT_QUICK=1`: 30-60 s).
# The last section runs `mpiexec -n 2`, which needs the optional `mpi` extra (`pip install
# ".[mpi]"`: mpi4py and MPICH, both wheels from PyPI); without it that section says so and the rest
# runs as usual. Builds on lesson 08 (the pretraining loss, AdamW, warmup).
#
# BERT was pretrained on 16 TPU chips at once; every chip held the whole model and a sixteenth of
# every batch. That is **data parallelism**: N processes (MPI calls them *ranks*), each with a full
# copy of the weights, each running forward and backward on its own share of the global batch; then
# they add up their gradients, and every rank applies the same optimiser step, so the copies never
# drift apart. In this lesson we derive why the shards' gradients add up to the big batch's gradient
# (and why a plain average of what each shard computes on its own does not quite), build the
# all-reduce that adds them up, count what it costs on N machines, see what changes in the
# optimisation when N grows, run `mpiexec -n 2 minibert pretrain`, and finally take the same two
# ranks as two threads of one process (`minibert pretrain --workers 2`).

# %%
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minibert import distributed as D
from minibert import lessons
from minibert.checkpoint import load_weights
from minibert.config import BertConfig
from minibert.models import BertForPreTraining
from minibert.paths import data_path
from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
from minibert.tokenization import BertTokenizer

QUICK, FIGURES = lessons.setup(globals().get("__file__"))
SEED = 0
WORK = tempfile.TemporaryDirectory(prefix="minibert-lesson17-")
work = Path(WORK.name)

N_LINES = 1_500 if QUICK else 6_000
tokenizer = BertTokenizer.from_pretrained(data_path("vocab.txt"))
V = tokenizer.vocab_size
lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()
end = lines.index("", N_LINES)                       # stop at a document boundary
(work / "corpus.txt").write_text("\n".join(lines[:end + 1]) + "\n", encoding="utf-8")
prepare([work / "corpus.txt"], tokenizer, work / "data", DataConfig(dupe_factor=1), seed=SEED,
        log=lambda *a: None)
data = PretrainingDataset(work / "data")
print(f"first {end + 1:,} lines of train.txt -> {len(data):,} instances; quick mode: {QUICK}")


def tiny_model(dtype=np.float32):
    """The tiny preset with dropout off: every difference below is arithmetic, not randomness."""
    config = BertConfig.preset("tiny", vocab_size=V, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)
    return BertForPreTraining(config, np.random.default_rng(SEED)).astype(dtype)


def loss_and_grads(model, batch):
    model.zero_grad()
    out = model.forward(**{k: batch[k] for k in D.BATCH_KEYS})
    model.backward()
    return out, {n: g.copy() for n, g in model.named_grads()}


def relative_error(a, b):
    """max |a - b| over all gradients, relative to the largest entry of b."""
    return max(np.abs(a[n] - b[n]).max() for n in b) / max(np.abs(g).max() for g in b.values())


# %% [markdown]
# ## 1. The big batch's gradient is a sum over the shards
#
# Lesson 08's loss for a batch of B sequences, with masked-prediction weights w_p (1 for a real
# prediction, 0 for padding), is
#
#     L = sum_p w_p l_p / (W + eps)  +  (1/B) sum_b n_b,        W = sum_p w_p,   eps = 1e-5,
#
# l_p the masked-LM negative log-likelihoods, n_b the next-sentence ones. Cut the batch into N
# shards S_1..S_N of b_r sequences holding W_r real predictions. Both terms are sums over rows, so
# the loss is a sum of per-shard parts, and so is its gradient (the gradient is linear):
#
#     L = sum_r L_r,   L_r = sum_{p in S_r} w_p l_p / (W + eps) + (1/B) sum_{b in S_r} n_b,
#     grad L = sum_r grad L_r.
#
# Rank r can compute grad L_r alone: it needs only its rows and the two **global** counts W and B.
# One collective operation, a sum over the ranks (an *all-reduce*), then gives every rank grad L.
#
# What a rank computes if it just calls the model on its shard is different: the model normalises by
# the shard's own counts, L_r^own = sum_{S_r} w_p l_p / (W_r + eps) + (1/b_r) sum_{S_r} n_b. The
# textbook recipe "average the ranks' gradients", (1/N) sum_r grad L_r^own, gives shard r's
# masked-LM rows the weight w_p / (N (W_r + eps)) instead of w_p / (W + eps), and its next-sentence
# rows 1 / (N b_r) instead of 1 / B. The two agree only when every shard holds exactly W/N
# predictions and B/N sequences. With 15% of variable-length sequences masked they never quite do,
# so the plain average is a different gradient, and a different one for every N. Let's measure both
# on a real batch of 16 split over 2 ranks.

# %%
B = 16
rows = data.order(SEED)[:B]
big = data.batch(rows, trim_padding=True)
lengths = big["attention_mask"].sum(axis=1)        # real tokens per sequence: the shards share them
shards = [data.batch(D.shard(rows, lengths, r, 2), trim_padding=True) for r in range(2)]
W = big["masked_lm_weights"].sum()
print(f"global batch: B = {B}, W = {W:.0f} real predictions; shards: "
      + ", ".join(f"b_{r} = {len(s['next_sentence_labels'])}, "
                  f"W_{r} = {s['masked_lm_weights'].sum():.0f}" for r, s in enumerate(shards)))

model = tiny_model()
out, full = loss_and_grads(model, big)
averaged = {n: np.zeros_like(g) for n, g in full.items()}
for s in shards:
    _, g = loss_and_grads(model, s)
    for n in g:
        averaged[n] += g[n] / 2
print(f"big batch loss {float(out.loss):.6f}; plain average of the shards' own gradients: "
      f"relative error {relative_error(averaged, full):.1e}")

# %% [markdown]
# Now by hand, at the loss's input, where the difference lives. The gradient of the masked-LM loss
# with respect to one prediction's logits is (softmax - onehot) * w_p / denominator (lesson 02); so
# a row of the shard's own gradient is the big batch's row times (W + eps) / (W_r + eps). Rescaling
# each shard's rows by (W_r + eps) / (W + eps) must give back the big batch's rows exactly.

# %%
def mlm_dlogits(batch, denominator):
    """(softmax - onehot) * w / denominator for every prediction row of ``batch`` (B*P, V)."""
    logits = model.forward(**{k: batch[k] for k in D.BATCH_KEYS}).prediction_logits
    logits = logits.reshape(-1, V).astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(p)), batch["masked_lm_ids"].reshape(-1)] -= 1
    return p * (batch["masked_lm_weights"].reshape(-1, 1) / denominator)


eps = 1e-5
rows_big = mlm_dlogits(big, W + eps)
rows_own = [mlm_dlogits(s, s["masked_lm_weights"].sum() + eps) for s in shards]
rows_fixed = np.concatenate([r * (s["masked_lm_weights"].sum() + eps) / (W + eps)
                             for r, s in zip(rows_own, shards)])
print(f"shard rows as computed alone vs the big batch's: max ratio "
      f"{max(np.abs(r).max() for r in rows_own) / np.abs(rows_big).max():.3f}; after rescaling: "
      f"max difference {np.abs(rows_fixed - rows_big).max():.1e} (float32 logits)")

# %% [markdown]
# The package does exactly this, for both losses: `distributed.renormalise(weights, totals, out)`,
# called between a shard's forward and its backward, returns the two factors (W_r + eps) / (W + eps)
# and b_r / B, and `model.backward(dmlm_loss=..., dnsp_loss=...)` takes them as the upstream gradients
# of the shard's two losses, which produces grad L_r. Where do W and B come from?
# Every rank knows the whole global batch (the order of an epoch is a pure function of the seed), so
# it counts them itself, without communicating: `distributed.BatchTotals.of(weights of the global
# batch)`. Summing the renormalised shards' gradients, in float32 and in float64:

# %%
for dtype in (np.float32, np.float64):
    model = tiny_model(dtype)
    out, full = loss_and_grads(model, big)
    totals = D.BatchTotals.of(big["masked_lm_weights"], dtype)
    summed, loss_sum = {n: np.zeros_like(g) for n, g in full.items()}, 0.0
    for s in shards:
        model.zero_grad()
        o = model.forward(**{k: s[k] for k in D.BATCH_KEYS})
        share = D.renormalise(s["masked_lm_weights"], totals, o)
        loss_sum += share.mlm_part + share.nsp_part
        model.backward(dmlm_loss=share.dmlm_loss, dnsp_loss=share.dnsp_loss)
        for n, g in model.named_grads():
            summed[n] += g
    print(f"{np.dtype(dtype).name}: sum of renormalised shard gradients vs big batch: relative "
          f"error {relative_error(summed, full):.1e}; losses {loss_sum:.8f} vs "
          f"{float(out.loss):.8f}")

# %% [markdown]
# In float64 the two agree to the last digits: the derivation is exact, and what remains in float32
# is the order of the sums (rows added shard by shard, then across shards). That is the promise
# `mpiexec -n N minibert pretrain` keeps: with dropout off, N ranks with global batch B follow one
# process with batch B, within float32 summation-order rounding.
#
# ## 2. The all-reduce, by hand
#
# After the backward, rank r holds a gradient vector g_r of S bytes (all parameters, packed into one
# flat buffer). Every rank needs sum_r g_r. The obvious ways are expensive: everyone sends
# everything to rank 0, which adds and sends the sum back, puts 2 (N - 1) S bytes through rank 0's
# link. The **ring all-reduce** (Patarasuk and Yuan, 2009; the one Horovod and NCCL made standard
# for deep learning) uses every link at once. Cut each buffer into N chunks and arrange the ranks in
# a ring:
#
# - *reduce-scatter*, N - 1 steps: in step s, rank r sends chunk (r - s) mod N to rank r + 1, which
#   adds it to its own copy. After N - 1 steps rank r holds the complete sum of chunk (r + 1) mod N.
# - *all-gather*, N - 1 steps: each rank passes its completed chunk along the ring, and the receiver
#   overwrites its copy. After N - 1 steps everyone has every summed chunk.
#
# Each rank sends 2 (N - 1) chunks of S/N bytes: 2 (N - 1) / N * S, less than 2 S however large N
# is.

# %%
def ring_allreduce(buffers):
    """Simulate the ring on N ranks' buffers; return every rank's result and the bytes it sent."""
    n = len(buffers)
    chunks = [np.array_split(b.copy(), n) for b in buffers]
    sent = np.zeros(n, dtype=np.int64)
    for s in range(n - 1):                               # reduce-scatter
        messages = [(r, (r - s) % n, chunks[r][(r - s) % n].copy()) for r in range(n)]
        for r, c, payload in messages:                   # all sends of a step happen at once
            chunks[(r + 1) % n][c] += payload
            sent[r] += payload.nbytes
    for s in range(n - 1):                               # all-gather
        messages = [(r, (r + 1 - s) % n, chunks[r][(r + 1 - s) % n].copy()) for r in range(n)]
        for r, c, payload in messages:
            chunks[(r + 1) % n][c] = payload
            sent[r] += payload.nbytes
    return [np.concatenate(c) for c in chunks], sent


ring_rng = np.random.default_rng(SEED)
for n in (2, 3, 4, 8):
    buffers = [ring_rng.integers(-1000, 1000, 1_000_000).astype(np.float64) for _ in range(n)]
    results, sent = ring_allreduce(buffers)
    exact = all(np.array_equal(r, np.sum(buffers, axis=0)) for r in results)
    same = all(np.array_equal(r, results[0]) for r in results)
    S = buffers[0].nbytes
    print(f"N={n}: every rank has the sum: {exact}, identical copies: {same}; bytes sent per rank "
          f"{sent.max() / S:.3f} S (2(N-1)/N = {2 * (n - 1) / n:.3f}); through rank 0 it would be "
          f"{2 * (n - 1)} S")

# %% [markdown]
# (Integers stored as floats add exactly, so the check is `==`. With real gradients, every chunk is
# summed once, on one rank, in one order, then *copied*: the ranks get bit-identical sums, so their
# weights stay bit-identical, which `tests/test_distributed.py` checks on two real ranks.)
#
# **One buffer, not one call per tensor.** Each all-reduce pays 2 (N - 1) message latencies however
# small it is. The tiny BERT has 46 gradient arrays; one call per array would pay the latency 46
# times. `distributed.FlatBuffer` packs all of them into one contiguous buffer (reused every step),
# and the trainer makes **one** `Allreduce` per step. The loss parts and a stop flag ride along at
# the end of the same buffer.
#
# ## 3. What N machines would give: the arithmetic
#
# Time of a step on N ranks, global batch fixed: compute shrinks as 1/N, and the all-reduce of S
# bytes costs, with latency a and bandwidth beta per link (`distributed.ring_allreduce_seconds`),
#
#     t_comm(N) = 2 (N - 1) a + 2 (N - 1) / N * S / beta.
#
# The second term tends to 2 S / beta: the ring's cost hardly grows with N, while the compute per
# rank keeps shrinking, so at some N the all-reduce dominates. We time one tiny step here and apply
# the model to our presets and to BERT-base on a 10 Gb/s network.

# %%
model = tiny_model()
batch32 = data.batch(data.order(SEED)[:32], trim_padding=True)
loss_and_grads(model, batch32)                            # warm-up (Numba kernels load)
t0 = time.perf_counter()
repeats = 2 if QUICK else 5
for _ in range(repeats):
    loss_and_grads(model, batch32)
tiny_step = (time.perf_counter() - t0) / repeats
latency, bandwidth = 30e-6, 10e9 / 8
print(f"one forward + backward of the tiny model on 32 sequences here: {1e3 * tiny_step:.0f} ms")
sizes = {name: BertForPreTraining(BertConfig.preset(name, vocab_size=V),
                                  np.random.default_rng(0)).num_parameters()
         for name in ("tiny", "mini", "small")}
sizes["BERT-base"] = 110_000_000                 # 12 layers, H = 768, 30,522-token vocabulary
MACHINES = (2, 4, 16, 64)
print(f"{'model':10} {'parameters':>12} {'S (MB)':>8}  "
      + "  ".join(f"{'N=' + str(n):>8}" for n in MACHINES) + "   (ring all-reduce ms, 10 Gb/s)")
for name, count in sizes.items():
    S = 4 * count
    print(f"{name:10} {count:>12,} {S / 1e6:>8.1f}  "
          + "  ".join(f"{1e3 * D.ring_allreduce_seconds(S, n, latency, bandwidth):>8.2f}"
                      for n in MACHINES))
t_comm_tiny = D.ring_allreduce_seconds(4 * sizes["tiny"], 8, latency, bandwidth)
print(f"tiny on 8 machines: compute {1e3 * tiny_step / 8:.0f} ms per rank, all-reduce "
      f"{1e3 * t_comm_tiny:.1f} ms")

# %% [markdown]
# For the tiny model the all-reduce is a few milliseconds against a compute time of tens to
# hundreds: data parallelism pays until the shards become a handful of sequences. BERT-base's 440 MB
# of gradient take about 0.7 s per step on 10 Gb/s Ethernet whatever N is, which is why it was
# trained on TPU pods and GPU clusters with 100+ Gb/s interconnects, and why real systems overlap
# the all-reduce with the backward (the last layer's gradients are ready first and can travel while
# the earlier layers are still being differentiated). `minibert bench scaling` measures all of this
# on your machine: compute, the time a rank waits for the slower one, the all-reduce, the update,
# real tokens per second, and the same table.
#
# ## 4. What changes with N
#
# **Global batch fixed (strong scaling).** Section 1's result: the run is the same run. Same
# learning rate, same warmup, same number of steps, same losses; only the wall-clock time per step
# falls (until the all-reduce dominates). This is what `mpiexec -n N minibert pretrain --batch-size
# B` does: B is the global batch, each rank takes about B/N rows (`D.shard`: a contiguous slice,
# cut where the ranks' real tokens come closest to equal shares, since a rank's time goes with its
# tokens and every step waits for the slowest rank).
#
# **Per-rank batch fixed (weak scaling).** More often one keeps each machine busy with b sequences,
# so the global batch B = N b grows with N. Then the optimisation changes: an epoch has N times
# fewer steps, and each step's gradient is less noisy. How much less? The minibatch gradient g_B is
# an average of B per-example gradients, so its deviation from the full-data gradient G shrinks as
# 1/B: E |g_B - G|^2 = tr(Sigma) / B, Sigma the per-example gradient covariance. We measure it on a
# pool of sequences (taking their mean gradient as G) with the tiny model:

# %%
POOL = 48 if QUICK else 128
pool_rows = data.order(SEED + 1)[:POOL]
model = tiny_model()
_, G = loss_and_grads(model, data.batch(pool_rows, trim_padding=True))
G_flat = np.concatenate([g.ravel() for g in G.values()]).astype(np.float64)
noise_rng = np.random.default_rng(SEED)
draws = 4 if QUICK else 8
noise = {}
for b in (4, 8, 16):
    deviations = []
    for _ in range(draws):
        pick = noise_rng.choice(pool_rows, b, replace=False)
        _, g = loss_and_grads(model, data.batch(pick, trim_padding=True))
        g_flat = np.concatenate([x.ravel() for x in g.values()]).astype(np.float64)
        deviations.append(np.sum((g_flat - G_flat) ** 2))
    # Sampling without replacement from a pool of POOL: the variance carries (1 - b/POOL) / (1 -
    # 1/POOL).
    noise[b] = np.mean(deviations) / ((1 - b / POOL) / (1 - 1 / POOL))
    print(f"b = {b:2}: E|g_b - G|^2 = {noise[b]:.4f}   b x E|g_b - G|^2 = {b * noise[b]:.3f}")
trace_sigma = np.mean([b * v for b, v in noise.items()])
print(f"|G|^2 = {G_flat @ G_flat:.4f}; noise scale tr(Sigma) / |G|^2 = "
      f"{trace_sigma / (G_flat @ G_flat):.1f} sequences")

# %% [markdown]
# b x E|g_b - G|^2 stays roughly constant: the noise falls as 1/b. (The masked-LM loss normalises by
# the batch's predictions, not its sequences, so the per-example picture is approximate; and with
# few draws the estimates scatter by some 20-40%.) The ratio tr(Sigma) / |G|^2 is the **gradient
# noise scale** (McCandlish et al., 2018): batches much smaller than it are noise-dominated, and
# doubling them is almost as good as taking two steps; batches much larger waste computation, as the
# gradient barely improves.
#
# What to do with the learning rate when B grows N-fold:
#
# - **SGD: the linear scaling rule** (Goyal et al., 2017): multiply the learning rate by N. One step
#   with N b examples then moves the weights about as far as N steps with b examples would, while
#   the gradient hardly changes over those N steps. It breaks down early in training, when the
#   gradient changes fast: hence a **warmup** from a small learning rate (they used 5 epochs), and
#   it breaks down past the noise scale.
# - **Adam(W)**: its update is normalised by the root of the second moment, so its size does not
#   grow with the gradient's signal-to-noise ratio the way SGD's does; a **square-root rule**
#   (learning rate times sqrt(N)) is the usual starting point (Malladi et al., 2022, derive it from
#   a stochastic differential equation for Adam), with warmup kept in examples rather than steps.
# - **Very large batches**: BERT's own recipe went from 256 to 32,768 sequences with the LAMB
#   optimiser (You et al., 2019), which adds a per-layer trust ratio to Adam, plus a longer warmup.
#
# Counting warmup in steps hides a trap: `minibert pretrain --warmup 0.1` is 10% of the *steps*.
# With N times the global batch and the same number of examples, the run has N times fewer steps,
# and so N times fewer warmup steps, each covering N times more examples. For the tiny preset's
# shipped recipe (batch 32, 8,000 steps, warmup 10%, peak 1e-3), keeping the examples seen fixed:

# %%
print(f"{'ranks':>5} {'global B':>8} {'steps':>6} {'warmup steps':>12} {'lr linear':>10} "
      f"{'lr sqrt':>9}")
for n in (1, 2, 4, 8, 16):
    steps = 8000 // n
    print(f"{n:>5} {32 * n:>8} {steps:>6} {int(0.1 * steps):>12} {1e-3 * n:>10.1e} "
          f"{1e-3 * np.sqrt(n):>9.1e}")

# %% [markdown]
# Which column is right for your run is an experiment, not a formula: exercise 3 runs it.
#
# ## 5. A run on two ranks
#
# The pretraining command is data-parallel under an MPI launcher. With the `mpi` extra installed:
#
#     mpiexec -n 2 minibert pretrain --steps 200 --batch-size 32 --out runs/pretrain-2ranks
#
# Each rank takes its half of every global batch of 32; gradients are summed with one `Allreduce`
# per step; every rank applies the same AdamW step; rank 0 alone writes checkpoints, metrics and the
# figure. Dropout differs per rank (each rank draws its own masks, from a stream that is a pure
# function of the seed, its rank and N), so with dropout on, the 2-rank run is another sample of
# the same training, not the same numbers; resuming it needs the same N. With dropout off it is the
# 1-process run, to float32 rounding.
#
# First that claim, with a small script that trains the tiny model with dropout off through the
# package's `Trainer` (the class `minibert pretrain` uses), given the communicator of its process:
# run once as one process, once under `mpiexec -n 2`.

# %%
def find_mpiexec():
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


try:
    import mpi4py  # noqa: F401
    MPIEXEC = find_mpiexec()
except ImportError:
    MPIEXEC = None
# One BLAS and Numba thread per process: two ranks on two cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
       "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
STEPS = 6 if QUICK else 30
SCRIPT = f"""
import json, sys
import numpy as np
from minibert import checkpoint, distributed
from minibert.config import BertConfig
from minibert.models import BertForPreTraining
from minibert.pretraining.data import PretrainingDataset
from minibert.pretraining.trainer import Trainer, TrainConfig

comm = distributed.world()                  # SingleProcess, or this rank of the mpiexec run
data = PretrainingDataset({str(work / "data")!r})
config = BertConfig.preset("tiny", vocab_size=data.vocab_size, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
model = BertForPreTraining(config, np.random.default_rng({SEED}))
train = TrainConfig(steps={STEPS}, batch_size=16, lr=1e-3, seed={SEED}, save_every=1000,
                    log_every=1000)
Trainer(model, data, train, sys.argv[1], log=lambda *a: None, comm=comm).train()
"""
(work / "train_tiny.py").write_text(SCRIPT)
if MPIEXEC is None:
    print(f"mpi4py or mpiexec is not installed, so this section stops here. Install the extra "
          f"with\n    {D.INSTALL_HINT}\nand run the lesson again.")
else:
    runs = {}
    for label, launcher in (("1 process", []), ("2 ranks", [MPIEXEC, "-n", "2"])):
        folder = work / label.replace(" ", "-")
        t0 = time.perf_counter()
        subprocess.run(launcher + [sys.executable, str(work / "train_tiny.py"), str(folder)],
                       env=ENV, check=True, capture_output=True)
        runs[label] = ([json.loads(line) for line in open(folder / "metrics.jsonl")],
                       load_weights(folder / f"checkpoint-{STEPS:06d}"))
        print(f"{label}: {STEPS} steps of 16 in {time.perf_counter() - t0:.1f} s (with start-up)")
    (m1, w1), (m2, w2) = runs["1 process"], runs["2 ranks"]
    print("losses, 1 process:", " ".join(f"{r['loss']:.5f}" for r in m1[:6]), "...")
    print("losses, 2 ranks:  ", " ".join(f"{r['loss']:.5f}" for r in m2[:6]), "...")
    print(f"max |loss difference| over {STEPS} steps: "
          f"{max(abs(a['loss'] - b['loss']) for a, b in zip(m1, m2)):.1e}; max |weight difference| "
          f"after them: {max(np.abs(w1[n] - w2[n]).max() for n in w1):.1e}")

# %% [markdown]
# Now the command itself, with dropout on, on the same corpus slice: one process, then two ranks
# (quick mode: two ranks only). `--corpus` and `--dupe-factor 1` keep the data small; the lesson's
# folder is temporary.

# %%
if MPIEXEC is not None:
    PRETRAIN_STEPS = 6 if QUICK else 60
    curves = {}
    launchers = [("1 process", []), ("2 ranks", [MPIEXEC, "-n", "2"])]
    for label, launcher in launchers[1:] if QUICK else launchers:
        folder = work / ("pretrain-" + label.replace(" ", "-"))
        command = [sys.executable, "-m", "minibert.cli", "pretrain", "--corpus",
                   str(work / "corpus.txt"), "--dupe-factor", "1", "--steps", str(PRETRAIN_STEPS),
                   "--batch-size", "16", "--seed", str(SEED), "--out", str(folder)]
        done = subprocess.run(launcher + command, env=ENV, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        print(f"$ {'mpiexec -n 2 ' if launcher else ''}minibert pretrain ... --out {folder.name}")
        print("  " + "\n  ".join(line for line in done.stdout.splitlines()[-3:] if line.strip()))
        curves[label] = [json.loads(line) for line in open(folder / "metrics.jsonl")]
        print(f"  files written: {sorted(p.name for p in folder.iterdir())}")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, records in curves.items():
        ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (MLM + NSP)")
    ax.set_title("minibert pretrain, tiny, batch 16, dropout on")
    ax.legend()
    fig.tight_layout()
    fig.savefig(FIGURES / "17_two_ranks.png", dpi=120)
    plt.show()
    if len(curves) == 2:
        gap = max(abs(a["loss"] - b["loss"]) for a, b in zip(*curves.values()))
        print(f"largest gap between the two curves: {gap:.3f} (dropout masks differ; dropout off, "
              f"it would be the rounding above)")

# %% [markdown]
# ## 6. Two ranks as two threads of one process
#
# On one machine the ranks need not be processes. `minibert pretrain --workers 2` takes the 2-rank
# step in one process (`distributed.Workers`): two Python threads, each with a replica of the model
# (`Module.replica`: its own gradients, caches and dropout generator, but the same weight arrays),
# each running its shard with rank r's dropout stream; then the gradients are summed in rank order,
# as the `Allreduce` sums them, and one AdamW step updates the weights that both replicas read. The
# same shards, streams and sums: the 2-rank run, to the bit, and its checkpoints resume either way.
# (The sum, the clipping and AdamW are elementwise, so the cores share them too, each thread taking a
# part of every parameter's elements; only the gradient norm's partial sums meet on one thread, and
# they are added in the order one thread would add them.)
#
# The threads run at once because NumPy's matmuls and minibert's Numba kernels release Python's
# global interpreter lock (the kernels are compiled `nogil`); only the Python between them takes
# turns. Inside the step every matmul and kernel runs on its calling thread
# (`kernels.single_threaded()`), so each worker has a core, and its caches, to itself. One process
# on both cores instead splits every matmul, kernel and attention block across the cores and joins
# them again, hundreds of times a step, and attention's many small per-head products hardly use the
# second core at all: on 2 cores two workers take about 0.8x the time of one process per step
# (`minibert bench corpus` and `minibert bench train` print both).

# %%
WORKERS_STEPS = 6 if QUICK else 60
folder = work / "pretrain-2-workers"
command = [sys.executable, "-m", "minibert.cli", "pretrain", "--corpus", str(work / "corpus.txt"),
           "--dupe-factor", "1", "--steps", str(WORKERS_STEPS), "--batch-size", "16", "--seed",
           str(SEED), "--workers", "2", "--out", str(folder)]
done = subprocess.run(command, env=ENV, capture_output=True, text=True)
if done.returncode != 0:
    raise RuntimeError(done.stderr[-2000:])
print(f"$ minibert pretrain ... --workers 2 --out {folder.name}")
print("  " + "\n  ".join(line for line in done.stdout.splitlines()[-3:] if line.strip()))
threads = [json.loads(line) for line in open(folder / "metrics.jsonl")]
if MPIEXEC is not None and len(curves["2 ranks"]) == len(threads):
    gap = max(abs(a["loss"] - b["loss"]) for a, b in zip(curves["2 ranks"], threads))
    final = f"checkpoint-{WORKERS_STEPS:06d}"
    w_ranks = load_weights(work / "pretrain-2-ranks" / final)
    w_threads = load_weights(folder / final)
    same = all(np.array_equal(w_ranks[n], w_threads[n]) for n in w_ranks)
    print(f"2 workers against 2 ranks, dropout on, {WORKERS_STEPS} steps: max |loss difference| "
          f"{gap:.1e}; identical weights: {same}")
else:
    print("(with the mpi extra, this compares the run with section 5's `mpiexec -n 2` run)")

# %% [markdown]
# ## What you should see
#
# Seed 0, the tiny preset with dropout off in sections 1-5 except the last run. Float32 numbers move
# in their last digits with the BLAS and the machine; quick-mode values in brackets where they
# differ.
#
# - Data: the first 6,006 lines of `train.txt` give 1,415 instances [1,501 lines, 324]. The batch of
#   16 holds W = 111 real predictions, split 53 / 58 over the two shards [133: 66 / 67].
# - The plain average of the shards' own gradients differs from the big batch's by **2.3e-02**
#   relative [3.9e-03: the closer the shards' counts, the smaller the error, never zero]. Rescaled
#   by hand, the shards' logit-gradient rows equal the big batch's to about 1e-10.
# - The renormalised shards' gradients sum to the big batch's: relative error **4.1e-07** in float32
#   [6.3e-07] (anything below 1e-5 is summation order), **8e-16** in float64 [1e-15]; the losses
#   agree to 1e-6 and 1e-15.
# - The ring all-reduce gives every rank the exact sum for N = 2, 3, 4, 8, with bit-identical
#   copies, and each rank sends 1.000, 1.333, 1.500, 1.750 times the buffer (2(N-1)/N), against
#   2(N-1) times through rank 0.
# - Cost model, 10 Gb/s and 30 us: the tiny model's 3.9 MB take 3.18 / 4.86 / 6.75 / 9.92 ms for
#   N = 2 / 4 / 16 / 64; mini (4,378,114 parameters) 14-31 ms, small (15,305,730) 49-100 ms,
#   BERT-base's 440 MB 352-697 ms. One tiny forward + backward on 32 sequences took 0.5-1 s here
#   (it depends on the machine and its load).
# - Gradient noise: b x E|g_b - G|^2 stays between 65 and 77 for b = 4, 8, 16 [47-64, 4 draws]; the
#   noise scale is about 12 sequences [11] at initialisation.
# - The learning-rate table: 4 ranks of 32 give a global batch of 128, 2,000 steps, 200 warmup
#   steps, 4.0e-03 (linear) or 2.0e-03 (square root).
# - Two ranks against one process, dropout off, 30 steps of 16 [6]: the same losses printed to 5
#   decimals, the largest difference **1.3e-06** [8.3e-07], weights within **1.2e-07** [2.6e-07]
#   (1.7e-07 [5.1e-07] on an AVX-512 Xeon). With dropout on, `mpiexec -n 2 minibert pretrain` and
#   one process end 60 steps within about 0.01 of each other's loss (0.013 and held-out MLM loss
#   5.548 and 5.550 on an AVX-512 Xeon): two samples of the same training. Only rank 0 wrote the
#   folder: `.minibert.json`, the checkpoint, `data`, `latest`, `metrics.jsonl`, `pretraining.png`.
#   (Without the extra, section 5 prints how to install it.)
# - Two workers in one process against the two ranks, dropout on, 60 steps [6]: max |loss
#   difference| **0.0e+00** and identical weights: the same run. (Without the extra there is no
#   2-rank run to compare with, and section 6 says so.)
#
# ## Exercises
#
# 1. **Forget the global counts.** In `minibert/distributed.py`, make `forward_backward` skip
#    `renormalise` (each rank then backpropagates its shard's own loss) and divide the summed
#    gradients by N. Predict, from section 1, how far the 2-rank losses of section 5 drift from one
#    process's after 30 steps (closer to 1e-6 or to 1e-2?). Run section 5, then undo the change.
# 2. **Unequal shares.** Take a batch of 15 in section 1 (`D.shard` cuts it where the two ranks'
#    real tokens balance, so they cannot hold the same number of rows; print b_0 and b_1).
#    What weight does the plain average give a next-sentence row of each shard, against 1/15?
#    Predict which of the two losses' gradients the plain average now gets wrong, and measure both
#    errors (zero the batch's `masked_lm_weights` to isolate the NSP part).
# 3. **Weak scaling.** Keep 16 sequences per rank: `mpiexec -n 2 minibert pretrain --batch-size 32`
#    for half the steps of a one-process run with `--batch-size 16`, at `--lr` 1e-3, 1.4e-3 and
#    2e-3 (`--corpus` a slice, as in section 5). Which learning rate matches the one-process run's
#    held-out loss for the same number of examples? Does the answer change with `--warmup`?
# 4. **Where the network wins.** With your step time from section 3 and `minibert bench scaling
#    --preset mini`, find the N at which the mini model's all-reduce on 10 Gb/s Ethernet costs as
#    much as its compute per rank. How large must the global batch be to keep 8 sequences per rank
#    there?
