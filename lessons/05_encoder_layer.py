# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 05 — The encoder layer: feed-forward, residuals, post-LN; stacking layers; what Numba buys
#
# **Run time:** about 10 s on an idle 2-core laptop (up to a minute on a busy one), plus about 20 s the
# very first time, to compile the Numba kernels (quick mode `MINIBERT_QUICK=1`: about 4 s, with a smaller
# batch and fewer repeats). Builds on lessons 01-04: every piece of the layer has been
# derived and checked; now we assemble them.
#
# A BERT encoder layer is attention followed by a position-wise feed-forward network, each wrapped in a
# residual connection and a layer norm. We assemble one from the functional pairs, write its backward by
# hand (reading the forward in reverse, with `+=` wherever a value was used twice), check it, stack layers
# into `BertModel`, and finally time the NumPy reference against the Numba kernels.

# %%
import time

import numba
import numpy as np

from minibert import functional as F
from minibert import checks, gradcheck, kernels, lessons
from minibert.kernels import numba_kernels
from minibert.config import BertConfig
from minibert.models import BertModel
from minibert.models.bert import BertLayer

QUICK = lessons.quick()
np.set_printoptions(precision=4, suppress=True)
rng = np.random.default_rng(0)
kernels.use("numpy")                     # the reference path until section 4

# %% [markdown]
# ## 1. The layer, as BERT writes it (post-LN)
#
#     a = LayerNorm(x + Dropout(Attention(x)))                 attention sub-layer
#     y = LayerNorm(a + Dropout(W2 GELU(W1 a + b1) + b2))      feed-forward sub-layer
#
# - The **feed-forward** network acts on each token separately (the same `W1`, `W2` at every position):
#   H -> I = 4H -> H. It holds two thirds of a layer's parameters.
# - The **residual** `x + ...` lets each sub-layer learn a correction to its input instead of a whole new
#   representation, and gives the gradient a path around the sub-layer.
# - **Post-LN**: the layer norm comes *after* the residual sum, as in the original Transformer and BERT.
#   Many later models use pre-LN (`x + Attention(LayerNorm(x))`), which leaves an untouched identity path
#   from input to output and trains deep stacks more easily; minibert follows BERT, so its checkpoints load.
#
# We use the weights of a `BertLayer` module (Hugging Face names), in float64 and eval mode (no dropout),
# and compute the layer from the functional pairs of lessons 01-04.

# %%
config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=32, initializer_range=0.3)
B, T, H, A, I = 2, 5, config.hidden_size, config.num_attention_heads, config.intermediate_size
D = H // A
EPS = config.layer_norm_eps
layer = BertLayer(config, np.random.default_rng(1)).astype(np.float64).eval()
P = dict(layer.named_parameters())       # name -> the module's own arrays
print(f"{len(P)} parameter arrays, {layer.num_parameters()} numbers:")
for name, array in P.items():
    print(f"  {name:36} {array.shape}")

x = rng.standard_normal((B, T, H))
attention_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
mask_bias = (1 - attention_mask) * F.MASK_BIAS


def split(t):                            # (B, T, H) -> (B, A, T, D)
    return t.reshape(t.shape[0], t.shape[1], A, D).transpose(0, 2, 1, 3)


def merge(t):                            # (B, A, T, D) -> (B, T, H)
    return t.transpose(0, 2, 1, 3).reshape(t.shape[0], t.shape[2], H)


def layer_forward_by_hand(x, mask_bias):
    c = {}                               # every cache, by name: exactly what the backward will read
    q, c["q"] = F.linear_forward(x, P["attention.self.query.weight"], P["attention.self.query.bias"])
    k, c["k"] = F.linear_forward(x, P["attention.self.key.weight"], P["attention.self.key.bias"])
    v, c["v"] = F.linear_forward(x, P["attention.self.value.weight"], P["attention.self.value.bias"])
    context, _, c["attention"] = F.attention_forward(split(q), split(k), split(v), mask_bias)
    o, c["o"] = F.linear_forward(merge(context), P["attention.output.dense.weight"], P["attention.output.dense.bias"])
    a, c["ln1"] = F.layernorm_forward(x + o, P["attention.output.LayerNorm.weight"],
                                      P["attention.output.LayerNorm.bias"], EPS)
    u, c["ff1"] = F.linear_forward(a, P["intermediate.dense.weight"], P["intermediate.dense.bias"])
    h, c["gelu"] = F.gelu_forward(u)
    f, c["ff2"] = F.linear_forward(h, P["output.dense.weight"], P["output.dense.bias"])
    y, c["ln2"] = F.layernorm_forward(a + f, P["output.LayerNorm.weight"], P["output.LayerNorm.bias"], EPS)
    return y, c


y_hand, caches = layer_forward_by_hand(x, mask_bias)
y_module, _ = layer.forward(x, mask_bias)
print("max |module - by hand| =", np.abs(y_module - y_hand).max())

# %% [markdown]
# (The intermediate `Linear` carries the GELU: `Linear(H, I, ..., activation="gelu")` calls
# `kernels.linear_gelu_forward`, and the Numba backend adds the first bias inside its fused GELU kernel,
# `bias_gelu_forward(x W1^T, b1)`, which saves one pass over the `(B, T, I)` array; the arithmetic is the
# same, so the numbers are identical.)
#
# ## 2. The backward: the forward read in reverse
#
# Each line of the forward becomes a backward call, in the opposite order. Two values are used twice:
#
# - `a` feeds the feed-forward network **and** the second residual sum `a + f`, so
#   `da = d(a + f) + W1-backward(...)`: the residual passes the gradient through unchanged and the
#   feed-forward path adds its own.
# - `x` feeds the query, key and value projections **and** the first residual sum: four contributions.
#
# Forgetting one of these additions is the typical bug when writing a backward by hand, so the function
# below has a switch that commits it.

# %%
def layer_backward_by_hand(dy, c, grads, forget_residual=False, parts=None):
    # y = LN2(a + f)
    dsum2 = F.layernorm_backward(dy, c["ln2"], grads["output.LayerNorm.weight"], grads["output.LayerNorm.bias"])
    dh = F.linear_backward(dsum2, c["ff2"], grads["output.dense.weight"], grads["output.dense.bias"])
    du = F.gelu_backward(dh, c["gelu"])
    da_ffn = F.linear_backward(du, c["ff1"], grads["intermediate.dense.weight"], grads["intermediate.dense.bias"])
    da = da_ffn if forget_residual else dsum2 + da_ffn           # the residual passes dsum2 on unchanged
    # a = LN1(x + o)
    dsum1 = F.layernorm_backward(da, c["ln1"], grads["attention.output.LayerNorm.weight"],
                                 grads["attention.output.LayerNorm.bias"])
    dcontext = F.linear_backward(dsum1, c["o"], grads["attention.output.dense.weight"],
                                 grads["attention.output.dense.bias"])
    dq, dk, dv = F.attention_backward(split(dcontext), c["attention"])
    dx = np.zeros_like(dsum1) if forget_residual else dsum1.copy()   # the residual's share
    dx += F.linear_backward(merge(dq), c["q"], grads["attention.self.query.weight"], grads["attention.self.query.bias"])
    dx += F.linear_backward(merge(dk), c["k"], grads["attention.self.key.weight"], grads["attention.self.key.bias"])
    dx += F.linear_backward(merge(dv), c["v"], grads["attention.self.value.weight"], grads["attention.self.value.bias"])
    if parts is not None:                # the size of each contribution, for the printout below
        parts.update({"a: through the residual": np.linalg.norm(dsum2),
                      "a: through the feed-forward": np.linalg.norm(da_ffn),
                      "x: through the residual": np.linalg.norm(dsum1),
                      "x: through attention": np.linalg.norm(dx - dsum1)})
    return dx


dy = rng.standard_normal((B, T, H))
grads = {name: np.zeros_like(array) for name, array in P.items()}
parts = {}
dx_hand = layer_backward_by_hand(dy, caches, grads, parts=parts)

layer.zero_grad()
layer.forward(x, mask_bias)
dx_module = layer.backward(dy)
worst = max(np.abs(g - grads[name]).max() for name, g in layer.named_grads())
print(f"module vs by hand: max |dx diff| = {np.abs(dx_module - dx_hand).max():.1e}, "
      f"max |parameter gradient diff| = {worst:.1e}")
print("size (Frobenius norm) of each contribution:")
for name, value in parts.items():
    print(f"  {name:28} {value:.3f}")

# %% [markdown]
# Neither path is negligible: the residual carries as much gradient as the sub-layer it bypasses. Now the
# finite-difference check of the whole hand-written backward, for `x` and all 16 parameter arrays, and
# the same check with the residual additions forgotten:

# %%
G = rng.standard_normal((B, T, H))


def check(forget_residual, name):
    grads = {n: np.zeros_like(a) for n, a in P.items()}
    dx = layer_backward_by_hand(G, layer_forward_by_hand(x, mask_bias)[1], grads, forget_residual)
    loss = lambda: float(np.sum(layer_forward_by_hand(x, mask_bias)[0] * G))   # noqa: E731
    return gradcheck.compare(name, loss, {"x": dx, **grads}, {"x": x, **P}, rng, max_entries=30)


results = check(False, "layer by hand")
print(gradcheck.format_table(results))
bad = check(True, "no residual grad")
print("\nwith the residual gradients forgotten:")
print(gradcheck.format_table([r for r in bad if not r.ok]))
print(f"{sum(r.ok for r in bad)} of {len(bad)} tensors still pass")

# %% [markdown]
# Forgetting the residual at `a` breaks every tensor *below* it (the attention sub-layer and `x`), while
# the feed-forward sub-layer's own parameters, computed before the mistake, still pass (and so does the
# key bias, whose gradient is zero however wrong the gradient arriving at it is: lesson 04). The backward of a
# deep network fails downstream of a bug, which is how a per-tensor table helps you find it.
#
# ## 3. Stacking layers: BertModel
#
# The encoder is L copies of this layer, each with its own weights; the output of one is the input of the
# next, so the backward runs through them in reverse:
#
#     for layer in reversed(layers): dy = layer.backward(dy)
#
# Around the stack sit the embeddings (word + position + segment, then a layer norm; lessons 06-07 make
# the token ids) and the pooler (`tanh(W h_[CLS] + b)`, used for sentence-level tasks). `BertModel` is all
# of it, with Hugging Face parameter names, so a real checkpoint loads into it (lesson 15).

# %%
model = BertModel(config, np.random.default_rng(0))
ids = rng.integers(0, config.vocab_size, (B, T))
out = model.forward(ids, attention_mask=attention_mask, output_hidden_states=True, output_attentions=True)
print("last_hidden_state", out.last_hidden_state.shape, out.last_hidden_state.dtype,
      "| pooler_output", out.pooler_output.shape,
      "| hidden_states", len(out.hidden_states), "x", out.hidden_states[0].shape,
      "| attentions", len(out.attentions), "x", out.attentions[0].shape)
print(f"{model.num_parameters()} parameters in {len(list(model.named_parameters()))} arrays, e.g.",
      [n for n, _ in model.named_parameters()][5:8])

# %% [markdown]
# The package's own gradient checks cover the layer and the whole model, in float64, with dropout on
# (the masks are replayed for every finite-difference evaluation), padding, several heads, batch > 1:

# %%
layer_results = checks.run_check("BertLayer", seed=0)
print(gradcheck.format_table(layer_results))
model_results = checks.run_check("BertModel", seed=0)
worst_model = max(model_results, key=lambda r: r.max_rel_error)
print(f"\nBertModel: {sum(r.ok for r in model_results)} of {len(model_results)} tensors ok, worst "
      f"{worst_model.max_rel_error:.1e} ({worst_model.tensor})")

# %% [markdown]
# ## 4. Where the time goes
#
# Everything so far ran the NumPy reference. In a forward + backward of BERT the big matrix products
# (linear layers, `q k^T`, `P v`) go to BLAS, which is already fast and multi-threaded. The rest, softmax,
# layer norm, GELU, the embedding scatter-add, are elementwise or row-wise operations that NumPy runs as a
# chain of whole-array passes, each reading and writing memory and allocating a temporary. Their
# `minibert.kernels.numba_kernels` versions do each operation in one pass per row, compiled, on all cores;
# same signatures, switched with `kernels.using("numpy" | "numba")`.
#
# First, do the two paths agree? Same weights, float32, one forward and backward each:

# %%
def forward_backward(model, ids, mask, dy):
    model.zero_grad()
    out = model.forward(ids, attention_mask=mask)
    model.backward(dy)                   # no gradient for the pooled output: the pooler is not used here
    return out.last_hidden_state


bench_config = BertConfig.preset("tiny", vocab_size=1000)      # L2 H128 A2 I512
Bb, Tb = (2, 32) if QUICK else (8, 128)
op_repeats, step_repeats = (10, 5) if QUICK else (20, 10)
bench_ids = rng.integers(0, bench_config.vocab_size, (Bb, Tb))
bench_mask = np.ones((Bb, Tb), dtype=np.int64)
bench_mask[0, Tb // 2:] = 0                                       # one padded sequence
bench_dy = rng.standard_normal((Bb, Tb, bench_config.hidden_size)).astype(np.float32)

models, outputs, first_call = {}, {}, {}
for backend in ("numpy", "numba"):
    with kernels.using(backend):
        models[backend] = BertModel(bench_config, np.random.default_rng(0)).eval()   # same seed: same weights
        t0 = time.perf_counter()
        outputs[backend] = forward_backward(models[backend], bench_ids, bench_mask, bench_dy)
        first_call[backend] = time.perf_counter() - t0

# Compare each gradient relative to its largest entry. Left out: the pooler (no gradient reaches it here)
# and the key biases, whose exact gradient is zero (lesson 04): both paths return rounding noise there.
numba_grads = dict(models["numba"].named_grads())
grad_diff = max(np.abs(g - numba_grads[n]).max() / np.abs(g).max() for n, g in models["numpy"].named_grads()
                if not n.startswith("pooler") and not n.endswith("key.bias"))
print(f"numba vs numpy (float32): max |output diff| = {np.abs(outputs['numba'] - outputs['numpy']).max():.1e}, "
      f"worst gradient diff relative to that gradient's largest entry = {grad_diff:.1e}")
with kernels.using("numba"):
    numba_results = checks.run_check("BertLayer", seed=0)
print(f"gradient check of BertLayer on the Numba kernels (float64): "
      f"{sum(r.ok for r in numba_results)} of {len(numba_results)} ok, worst "
      f"{max(r.max_rel_error for r in numba_results):.1e}")
print(f"first call (includes loading or compiling the kernels): numpy {first_call['numpy']:.2f} s, "
      f"numba {first_call['numba']:.2f} s")

# %% [markdown]
# Float32 results differ in the last bits (the kernels sum in a different order, and in float64), and in
# float64 the kernels pass the same gradient check. The first Numba call pays for compilation, once per
# machine: `@njit(cache=True)` stores the compiled code next to the module, later runs only load it.
#
# ## 5. What Numba buys
#
# Timings on a shared laptop are noisy. We run the configurations in alternation, round after round, so
# that a burst of activity elsewhere slows all of them alike, keep each one's fastest run (the least
# disturbed), and report **ratios** between the paths, not seconds to take away. First the operations one
# at a time, forward + backward, at the model's shapes, with Numba on one thread and on all cores. Each
# kernel is compiled twice, with and without threads, and minibert runs calls of up to
# `numba_kernels.SERIAL_UP_TO` elements (262,144) on one thread, for reasons the end of this section
# gives; here the one-thread runs raise that bound above every call and the "all cores" runs set it
# to -1 (every call on the threads), beside `numba.set_num_threads`:

# %%
all_threads = numba.config.NUMBA_NUM_THREADS
serial_up_to = numba_kernels.SERIAL_UP_TO


def fastest(configs, repeats):
    """configs: label -> (backend, numba threads or None, fn). One warm-up call each, then `repeats`
    rounds in which every configuration runs once; returns label -> fastest time in seconds."""
    def run(backend, threads, fn):
        numba.set_num_threads(threads or all_threads)
        numba_kernels.SERIAL_UP_TO = 1 << 62 if threads == 1 else -1
        with kernels.using(backend):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

    for config in configs.values():
        run(*config)
    best = dict.fromkeys(configs, float("inf"))
    for _ in range(repeats):
        for label, config in configs.items():
            best[label] = min(best[label], run(*config))
    numba.set_num_threads(all_threads)
    numba_kernels.SERIAL_UP_TO = serial_up_to
    return best


PATHS = (("numpy", None), ("numba", 1), ("numba", all_threads))


Hb, Ab, Ib, L = (bench_config.hidden_size, bench_config.num_attention_heads, bench_config.intermediate_size,
                 bench_config.num_hidden_layers)
f32 = np.float32
scores = rng.standard_normal((Bb, Ab, Tb, Tb)).astype(f32)
mask_b = ((1 - bench_mask) * F.MASK_BIAS).astype(f32)
hidden = rng.standard_normal((Bb, Tb, Hb)).astype(f32)
inter = rng.standard_normal((Bb, Tb, Ib)).astype(f32)
ones_h, zeros_h, zeros_i = np.ones(Hb, f32), np.zeros(Hb, f32), np.zeros(Ib, f32)


def op_softmax():
    p, cache = kernels.softmax_forward(scores, mask_b)
    kernels.softmax_backward(scores, cache)


def op_layernorm():
    y, cache = kernels.layernorm_forward(hidden, ones_h, zeros_h)
    kernels.layernorm_backward(hidden, cache, zeros_h.copy(), zeros_h.copy())


def op_bias_gelu():
    y, cache = kernels.active().bias_gelu_forward(inter, zeros_i)
    kernels.active().bias_gelu_backward(inter, cache, zeros_i.copy())


# how many times one forward + backward of the model runs each operation
ops = {"softmax": (op_softmax, L), "layernorm": (op_layernorm, 2 * L + 1), "bias+GELU": (op_bias_gelu, L)}
timings = {}
for name, (fn, _) in ops.items():
    best = fastest({(backend, threads): (backend, threads, fn) for backend, threads in PATHS}, op_repeats)
    timings.update({(name, *path): t for path, t in best.items()})

print(f"B={Bb} T={Tb} H={Hb} A={Ab} I={Ib}, fastest of {op_repeats} runs, forward + backward, milliseconds:")
print(f"{'operation':10} {'numpy':>8} {'numba x1':>9} {'numba x' + str(all_threads):>9}   speed-up (1 thread, all)")
for name in ops:
    t_np, t_1, t_all = (timings[name, "numpy", None], timings[name, "numba", 1], timings[name, "numba", all_threads])
    print(f"{name:10} {1e3 * t_np:8.2f} {1e3 * t_1:9.2f} {1e3 * t_all:9.2f}   {t_np / t_1:5.1f}x {t_np / t_all:5.1f}x")

# %% [markdown]
# And the whole forward + backward, with everything else (the matmuls, the embedding lookups, the
# reshapes) identical on both paths. Again Numba on one thread and on all of them:

# %%
step = fastest({(backend, threads): (backend, threads,
                                     lambda m=models[backend]: forward_backward(m, bench_ids, bench_mask, bench_dy))
                 for backend, threads in PATHS}, step_repeats)

t_np = step["numpy", None]
print(f"forward + backward, {L} layers, B={Bb}, T={Tb}, fastest of {step_repeats} runs:")
print(f"  numpy            {1e3 * t_np:8.1f} ms")
for threads in (1, all_threads):
    t = step["numba", threads]
    print(f"  numba x{threads:<2}        {1e3 * t:8.1f} ms   speed-up {t_np / t:.2f}x")
share = sum(timings[name, "numpy", None] * count for name, (_, count) in ops.items()) / t_np
print(f"share of the numpy step spent in the three operations above: {100 * share:.0f}%")
if share < 1:
    print(f"bound on the speed-up if those operations took no time at all: {1 / (1 - share):.2f}x")
if step["numba", all_threads] > 1.5 * step["numba", 1]:
    print(f"numba on {all_threads} threads is {step['numba', all_threads] / step['numba', 1]:.0f}x slower than on 1: "
          "oversubscription (see below)")

# %% [markdown]
# Two lessons in these numbers.
#
# **Amdahl's law.** The kernels speed up only the part of the step they replace. Here the exact GELU (its
# erf series, forward and backward) is most of the NumPy step, so the gain is large; as H grows the
# matmuls' share grows (H^2 work per token against H), and the gain shrinks toward what BLAS allows. At
# the other extreme, in quick mode's tiny arrays, handing a kernel's rows to a second thread (about two
# tenths of a millisecond) costs more than the whole NumPy softmax: on the threads Numba loses, on one
# thread it still wins.
#
# **Threads are not free.** The matmuls already run on every core through BLAS (OpenBLAS here), and the
# parallel kernels bring a second pool of threads. With Numba's default OpenMP threading layer, a thread
# that has finished a kernel keeps spinning for a while in case more work comes, occupying a core that
# OpenBLAS needs for the next matmul. On 2 cores that made the whole step slower with the kernels than
# without them (we measured 136 ms against NumPy's 105 ms at full size, and 150 ms against 7 ms in quick
# mode), although every kernel alone was faster. So `minibert.kernels.numba_kernels` selects Numba's
# `workqueue` layer, whose idle threads sleep (unless you set `NUMBA_THREADING_LAYER` yourself); exercise
# 3 brings the problem back. A sleeping thread has its own cost: waking it took 60-150 microseconds per
# kernel call on our 2-core machine, more than a small kernel's whole work (quick mode shows it), so
# minibert keeps calls of up to `SERIAL_UP_TO` elements on one thread. Where to put that bound was
# measured on whole jobs, not on kernels: training steps were a little faster with it higher, probing
# (mostly inference) slower, and 262,144 suited both. The lesson: always time the whole step, not only
# the kernel.
#
# `minibert bench` measures this more carefully at several sizes; lesson 08 uses the Numba path (the
# default, `MINIBERT_KERNELS=numba`) to pretrain.
#
# ## What you should see
#
# Seed 0 (weights from `default_rng(1)` for the layer, `default_rng(0)` for the models), float64 unless
# stated, tolerance 1e-6 relative:
#
# - The layer by hand equals the module: `max |module - by hand|` **0.0**; `max |dx diff|` about 4e-16,
#   parameter gradients identical.
# - Contributions (Frobenius norms): at `a`, through the residual **5.491** and through the feed-forward
#   **10.214**; at `x`, through the residual **8.899** and through attention **9.350**.
# - `layer by hand`: all 17 tensors `ok`, the worst below 2e-7 (8.6e-08 on our machine). With the
#   residual gradients forgotten, **10 tensors fail** with errors of order 1 (`x` and the attention
#   side) and **7 of 17 still pass** (the six feed-forward-side arrays and
#   `attention.self.key.bias`).
# - BertModel: `last_hidden_state (2, 5, 16) float32`, `pooler_output (2, 16)`, 3 hidden states, 2 attention
#   maps `(2, 4, 5, 5)`; **8208 parameters in 39 arrays**.
# - `run_check("BertLayer")`: 17 of 17 `ok`; `BertModel`: **39 of 39** `ok`, the worst below 2e-7
#   (8.5e-08 on our machine).
# - Numba vs NumPy in float32: outputs within about 1e-6, gradients within about 1e-6 of each tensor's
#   largest entry; the Numba kernels pass the BertLayer check too (17 of 17, the worst below 2e-7:
#   5.2e-08 on our machine).
# - Timings (ratios, not seconds; they vary with the machine and with what else it runs). On a shared
#   2-core Intel Xeon (AVX-512), two runs, full mode (B=8, T=128): bias+GELU **12.0-12.5x** faster with
#   Numba on one thread and 11.7-12.2x on two, layernorm 2.5-2.7x and 1.0-1.4x, softmax 1.3x and 0.7-0.9x
#   (little to gain: NumPy's version is already a few passes over a small array); the whole step
#   **77-78 ms -> 24 ms, about 3.2x** on one thread or two, with the three operations taking 75-82% of
#   the NumPy step. Quick mode (B=2, T=32): on one thread bias+GELU 6-8x, layernorm 2.1x, softmax 1.3x
#   and the step about 1.8x; on two threads softmax and layernorm *slower* than NumPy (0.2-0.3x) and
#   the step level with it (0.99x).
#
# ## Exercises
#
# 1. **Pre-LN.** Change `layer_forward_by_hand` to pre-LN: `a = x + o(LN1(x))`, `y = a + f(LN2(a))`, and
#    its backward to match. Before running the check: in which order do the backward calls now come, and
#    where do the two residual additions go? Then check it with `gradcheck.compare`.
# 2. **Forget only half.** Change the backward so that only the residual at `x` is dropped (keep the one
#    at `a`). Predict which tensors fail now, and check.
# 3. **Spinning threads.** Run the lesson as `NUMBA_THREADING_LAYER=omp python lessons/05_encoder_layer.py`.
#    Predict which numbers of section 5 change: the per-operation table, the whole step on one thread, the
#    whole step on all threads? Then try `OMP_WAIT_POLICY=passive` as well.
# 4. **Amdahl at another size.** Re-run section 5 with `BertConfig.preset("mini")` (H = 256) and then with
#    T = 32. Predict, from the share printed above, which change makes Numba's whole-step gain larger.
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `embedding` (the scatter-add), `dropout` (inverted, with a replayable mask)
# and `encoder_backward` (the layer's backward in order).

# %% [markdown]
# ## Appendix — Unpadding: no work on padding
#
# **Why padding costs.** A batch is a (B, T) grid, T the longest sequence in it. Pretraining batches
# of the bundled corpus are about half padding: 32 instances hold about 1,700 real tokens in 32 x
# 109 = 3,500 slots, a *fill* of 0.48 (`minibert bench corpus` prints it). The padded computation
# multiplies every slot through every linear layer, GELU, layer norm and dropout, and attends over
# T x T per sequence; the mask only makes the padded results irrelevant, it does not make them free.
# So half of every step is spent on numbers no loss ever reads.
#
# **What unpadding changes** (MosaicBERT, ModernBERT). Everything in the layer except attention
# treats each token on its own: the linear layers, GELU, layer norm, dropout and the residual sums
# are *row-wise* on (tokens, H). So gather the N = `attention_mask.sum()` real tokens once into an
# (N, H) array and run all of that on N rows instead of B T. Attention is the one operation that
# mixes tokens, and only within a sequence: `Unpadded` orders the rows by sequence length, so the c
# sequences of one length n are c n consecutive rows, and the view `(c, n, H) -> (c, A, n, D)`
# attends as one batch with no mask at all (no query or key is padding). At the end the rows are
# scattered back to (B, T, H), zeros at padding. `BertModel` does this by default;
# `model.unpad = False` runs the padded computation, which is the one sections 1-3 wrote out and the
# reference the unpadded one is tested against.

# %%
from minibert.bench import batch_flops
from minibert.models.bert import Unpadded

mask = np.array([[1, 1, 1, 1, 1, 1],
                 [1, 1, 1, 0, 0, 0],
                 [1, 1, 1, 1, 1, 0],
                 [1, 1, 1, 0, 0, 0]])
layout = Unpadded.from_mask(mask)
print(f"fill {mask.mean():.2f}: N = {len(layout.index)} real tokens of B x T = {mask.size}")
print("rows -> flat position b*T + t:", layout.index)
print("length groups (first row, sequences, length):", layout.groups)

config_u = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=32, max_position_embeddings=8, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)
model_u = BertModel(config_u, np.random.default_rng(0)).astype(np.float64)
ids_u = np.random.default_rng(1).integers(1, 40, mask.shape) * mask
dy_u = np.random.default_rng(2).standard_normal((*mask.shape, 16)) * mask[..., None]
results = {}
for unpad in (False, True):
    model_u.unpad = unpad
    model_u.zero_grad()
    out_u = model_u.forward(ids_u, attention_mask=mask)
    model_u.backward(dy_u)
    results[unpad] = out_u.last_hidden_state, {n: g.copy() for n, g in model_u.named_grads()}
real = mask == 1
grad_diff = max(np.abs(results[True][1][n] - results[False][1][n]).max() for n in results[True][1])
print(f"padded vs unpadded: max |output diff| at real positions = "
      f"{np.abs(results[True][0][real] - results[False][0][real]).max():.1e}, "
      f"max |gradient diff| over {len(results[True][1])} tensors = {grad_diff:.1e}")
model_u.unpad = True

# A pretraining batch with the corpus's fill, at the mini size: the matmul FLOPs each way.
mini = BertConfig.preset("mini", vocab_size=8192)
lengths = np.random.default_rng(3).integers(20, 110, 32)
corpus_like = (np.arange(109) < lengths[:, None]).astype(np.int64)
padded_gflop = batch_flops(mini, corpus_like, 32 * 20, padded=True) / 1e9
unpadded_gflop = batch_flops(mini, corpus_like, 32 * 20, padded=False) / 1e9
print(f"mini, B=32, T=109, fill {corpus_like.mean():.2f}: {padded_gflop:.1f} GFLOP padded, "
      f"{unpadded_gflop:.1f} GFLOP unpadded ({unpadded_gflop / padded_gflop:.2f}x)")

# %% [markdown]
# **What it costs in indexing.** One gather of the inputs (ids, segments, positions: N integers
# each) and one scatter of the last hidden state back to (B, T, H); the backward does the reverse,
# once. The positions are no longer `arange(T)` broadcast over the batch but `index % T` per row, so
# the position embedding's gradient is a scatter-add over N rows instead of a sum over B. Attention's
# matmuls run once per distinct length instead of once per batch: about 25 per layer for a batch of
# 32 corpus instances, each on a view. Softmax, dropout and the fused backward must not follow them
# group by group: each launch of a parallel kernel costs more than a small group's work (2.9 ms of
# softmax per mini layer for 0.47 M probabilities), so `kernels.unpadded_attention_forward` keeps all
# groups' (c, A, n, n) scores in one flat buffer and runs each of them once over all the rows (the
# corpus's mini step: 384 -> 282 ms). Against that, every token-wise operation does 1 / fill as
# little work, and attention does sum(n_b^2) instead of B T^2: about a third for the corpus's lengths. Dropout draws masks for
# the real tokens only, so the same seed gives other masks than the padded computation (same
# distribution): with dropout on, the two paths agree in distribution, with dropout off to rounding.
#
# What you should see: fill 0.71, N = 17, groups `((0, 2, 3), (6, 1, 5), (11, 1, 6))` (the two
# sequences of length 3 first, rows 0-5); outputs equal at real positions and gradients within about
# 1e-13 (float64 rounding: the sums run in another order); the mini batch at fill 0.56 needs 0.59x
# the FLOPs unpadded. `minibert bench corpus` measures the whole pretraining step on the bundled
# corpus against Hugging Face with dynamic padding, and `minibert bench profile --corpus` shows
# where its time goes.
#
# **Exercise.** Give `mask` a row of zeros (a sequence with no real token). Which group does it get,
# what does the unpadded `last_hidden_state` hold in that row, and what does the padded path hold
# there?
