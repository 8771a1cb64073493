# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 02 — Softmax, cross-entropy and GELU
#
# **Run time:** about 3 s on a 2-core laptop (quick mode `MINIBERT_QUICK=1`: about 1 s; it times `erf` on
# fewer numbers). Builds on lesson 01 (the forward/backward pairs and the gradient checker).
#
# Three nonlinearities carry BERT: **softmax** turns attention scores into weights, **cross-entropy** turns
# the output scores into the masked-language-model loss, and **GELU** is the activation of every
# feed-forward block. For each we write the forward by hand, derive the backward, check it with finite
# differences, and then confirm that `minibert.functional` computes the same numbers.

# %%
import math
import sys
import time

import matplotlib.pyplot as plt
import numpy as np

from minibert import functional as F
from minibert import checks, gradcheck, kernels, lessons
from minibert.special import normal_cdf

QUICK, FIGURES = lessons.setup(globals().get("__file__"))
np.set_printoptions(precision=4, suppress=True)
rng = np.random.default_rng(0)
kernels.use("numpy")                     # the NumPy reference throughout (lesson 05 compares with Numba)

# %% [markdown]
# ## 1. Softmax, and why we subtract the maximum
#
#     p_i = exp(x_i) / sum_j exp(x_j)
#
# Written literally this overflows: `exp(710)` is already `inf` in float64 (`exp(89)` in float32), and
# `inf / inf` is `nan`. The fix costs nothing because softmax does not change when the same number `c` is
# added to every input: `exp(x_i - c) / sum_j exp(x_j - c)` has `exp(-c)` in numerator and denominator.
# With `c = max(x)` the largest exponent is `exp(0) = 1`: no overflow, and the denominator is at least 1,
# so no division by zero either. (This shift invariance returns in lesson 04: it is why the attention
# key bias gets exactly zero gradient.)

# %%
def softmax_naive(x):
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_by_hand(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


big = np.array([1000.0, 1001.0, 1002.0])
with np.errstate(over="ignore", invalid="ignore"):
    print("naive :", softmax_naive(big))
print("stable:", softmax_by_hand(big))
print("same as softmax([0, 1, 2]):", softmax_by_hand(np.array([0.0, 1.0, 2.0])))

# %% [markdown]
# ## 2. The softmax backward: a Jacobian we never build
#
# Each `p_i` depends on every `x_j`:
#
#     dp_i/dx_j = p_i (delta_ij - p_j)          i.e.  J = diag(p) - p p^T
#
# (differentiate the quotient: the numerator gives `p_i delta_ij`, the denominator `-p_i p_j`).
# The backward receives `g = dL/dp` and must return `dL/dx_j = sum_i g_i J_ij`, the vector-Jacobian
# product `J^T g` (here `J` is symmetric, so it is also `J g`). Multiplying out:
#
#     dx_j = sum_i g_i p_i (delta_ij - p_j) = p_j g_j - p_j sum_i g_i p_i = p_j (g_j - <g, p>)
#
# One dot product per row instead of an N x N matrix: for attention, with B*A*T rows of length T,
# that is the difference between O(T) and O(T^2) work per row. Let us build `J` once for a small row
# and confirm that the formula is the same thing.

# %%
x = rng.standard_normal(5)
p = softmax_by_hand(x)
J = np.diag(p) - np.outer(p, p)
g = rng.standard_normal(5)
print("J^T g          :", J.T @ g)
print("p * (g - <g,p>):", p * (g - g @ p))
print(f"max |J @ ones| = {np.abs(J @ np.ones(5)).max():.1e}   (rows of J sum to zero)")

# %% [markdown]
# The last line is worth a pause. Because `sum_i p_i = 1` whatever `x` is, adding the same amount to every
# `g_i` changes nothing, and with `g = ones` the true gradient is exactly zero. A gradient check with an
# all-ones upstream gradient would accept *any* backward that returns zeros. This is why
# `gradcheck.check_function` draws a random upstream gradient.
#
# Now the batched version (rows along the last axis), checked with finite differences:

# %%
def softmax_backward_by_hand(dp, p):
    return p * (dp - (dp * p).sum(axis=-1, keepdims=True))


xs = rng.standard_normal((3, 6)) * 2
results = gradcheck.check_function(
    "softmax by hand", lambda: softmax_by_hand(xs),
    lambda dp: {"x": softmax_backward_by_hand(dp, softmax_by_hand(xs))}, {"x": xs}, rng)
print(gradcheck.format_table(results))

p_pkg, cache = F.softmax_forward(xs)
dp = rng.standard_normal(xs.shape)
print("max |package - by hand|: p", np.abs(p_pkg - softmax_by_hand(xs)).max(),
      " dx", np.abs(F.softmax_backward(dp, cache) - softmax_backward_by_hand(dp, p_pkg)).max())

# %% [markdown]
# (`F.softmax_forward` also takes an additive mask for padded attention keys: lesson 04.)
#
# ## 3. Cross-entropy, and its gradient p - onehot
#
# For one row of logits `z` (C classes) and the correct class `y`, the loss is the negative log of the
# probability the model gives to `y`:
#
#     nll = -log softmax(z)_y = logsumexp(z) - z_y,        logsumexp(z) = m + log sum_c exp(z_c - m),  m = max z
#
# Differentiating: `d logsumexp / dz_c = exp(z_c) / sum exp = p_c` and `d z_y / dz_c = [c = y]`, so
#
#     d nll / dz = p - onehot(y)
#
# No Jacobian at all: fusing softmax and log into one pair is both cheaper than chaining the softmax
# backward and more accurate. Computing `log(p_y)` from a separately computed `p` breaks as soon as `p_y`
# underflows to 0; `logsumexp(z) - z_y` never forms that tiny number:

# %%
z, y = np.array([0.0, 800.0]), 0            # the model is very sure, and wrong
with np.errstate(divide="ignore"):
    print("-log(softmax(z)[y]) =", -np.log(softmax_by_hand(z)[y]))
m = z.max()
print("logsumexp(z) - z[y] =", m + np.log(np.exp(z - m).sum()) - z[y])

# %% [markdown]
# Over N rows the loss is the mean, so every row's gradient is divided by N:

# %%
def cross_entropy_by_hand(logits, targets):
    m = logits.max(axis=1, keepdims=True)
    log_z = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    nll = log_z - logits[np.arange(len(targets)), targets]
    probs = np.exp(logits - log_z[:, None])
    return nll.mean(), (probs, targets)


def cross_entropy_backward_by_hand(dloss, cache):
    probs, targets = cache
    dlogits = probs.copy()
    dlogits[np.arange(len(targets)), targets] -= 1          # p - onehot
    return dlogits * dloss / len(targets)


N, C = 6, 11
logits = rng.standard_normal((N, C)) * 2
targets = rng.integers(0, C, N)
loss, ce_cache = cross_entropy_by_hand(logits, targets)
print(f"loss = {loss:.6f}   (a uniform guess would give log(C) = {math.log(C):.6f})")
results = gradcheck.check_function(
    "cross-entropy by hand", lambda: cross_entropy_by_hand(logits, targets)[0],
    lambda d: {"logits": cross_entropy_backward_by_hand(float(d), cross_entropy_by_hand(logits, targets)[1])},
    {"logits": logits}, rng)
print(gradcheck.format_table(results))

loss_pkg, cache_pkg = F.cross_entropy_forward(logits, targets)
print("max |package - by hand|: loss", abs(float(loss_pkg) - loss),
      " dlogits", np.abs(F.cross_entropy_backward(1.0, cache_pkg)
                         - cross_entropy_backward_by_hand(1.0, ce_cache)).max())

# %% [markdown]
# ## 4. BERT's weighted masked-LM loss
#
# In pretraining every sequence has room for a fixed number of predictions (`max_predictions_per_seq`,
# 20 in BERT), so that a batch is a rectangular array. A short sequence that masked only 3 tokens fills its
# other slots with padding, marked by weight 0. The loss is then
#
#     loss = sum_n w_n nll_n / (sum_n w_n + 1e-5)
#
# - The denominator counts real predictions over the **whole batch**, so every masked token weighs the
#   same (a sequence with 20 predictions counts 20 times as much as one with 1).
# - The `+ 1e-5` keeps a batch without any prediction at 0 instead of `0 / 0 = nan`. It makes the loss
#   smaller than the true mean by a relative 1e-5 / sum(w): invisible.
# - The gradient of row n is `(w_n / denominator) (p_n - onehot_n)`: padding rows get exactly zero.
#
# `F.cross_entropy_forward(logits, targets, weights)` implements this (without weights it is the mean,
# which is what next-sentence prediction uses).

# %%
weights = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])        # three real predictions, three padding slots
wloss, wcache = F.cross_entropy_forward(logits, targets, weights)
real_mean = cross_entropy_by_hand(logits[:3], targets[:3])[0]
print(f"weighted loss {float(wloss):.8f}  vs  mean over the 3 real rows {real_mean:.8f}"
      f"  (ratio {float(wloss) / real_mean:.8f} = 3 / (3 + 1e-5))")
dlogits = F.cross_entropy_backward(1.0, wcache)
print("largest |gradient| in the padding rows:", np.abs(dlogits[3:]).max())
zloss, zcache = F.cross_entropy_forward(logits, targets, np.zeros(N))
print("no predictions at all: loss", float(zloss), ", max |gradient|",
      np.abs(F.cross_entropy_backward(1.0, zcache)).max())

print(gradcheck.format_table(checks.run_check("cross_entropy_weighted", seed=0)))

# %% [markdown]
# ## 5. GELU: exact and tanh-approximated
#
# GELU weights its input by the probability that a standard normal variable is below it:
#
#     GELU(x) = x Phi(x),     Phi(x) = P(N(0,1) <= x) = (1 + erf(x / sqrt 2)) / 2
#
# Like ReLU for large |x| (Phi -> 1 or 0), but smooth, with a small negative dip (minimum about -0.17 at
# x = -0.75). A popular approximation replaces Phi with a tanh:
#
#     GELU_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
#
# Both appear in BERT's history: Hugging Face BERT configs say `"gelu"` (exact), while the current
# google-research/bert code computes the tanh form (Hugging Face's `"gelu_new"`, also GPT-2's). minibert
# uses the exact one by default (`hidden_act="gelu"`) and offers the other. The backward is the product rule:
#
#     exact:  d/dx [x Phi(x)] = Phi(x) + x phi(x),      phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
#     tanh:   with u = k (x + c x^3), t = tanh(u):  0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)

# %%
def gelu_by_hand(x):
    return x * normal_cdf(x)


def gelu_backward_by_hand(dy, x):
    return dy * (normal_cdf(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))


def gelu_tanh_by_hand(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


xs = rng.standard_normal((4, 10)) * 3
results = gradcheck.check_function("GELU by hand", lambda: gelu_by_hand(xs),
                                   lambda dy: {"x": gelu_backward_by_hand(dy, xs)}, {"x": xs}, rng)
print(gradcheck.format_table(results))
print("max |package - by hand|: exact", np.abs(F.gelu_forward(xs)[0] - gelu_by_hand(xs)).max(),
      " tanh", np.abs(F.gelu_forward(xs, approximate=True)[0] - gelu_tanh_by_hand(xs)).max())

grid = np.linspace(-5, 5, 2001)
diff = F.gelu_forward(grid)[0] - F.gelu_forward(grid, approximate=True)[0]
k = int(np.abs(diff).argmax())
print(f"max |exact - tanh| on [-5, 5]: {abs(diff[k]):.2e} at x = {grid[k]:+.2f}")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.plot(grid, F.gelu_forward(grid)[0], label="exact  x Phi(x)")
ax1.plot(grid, F.gelu_forward(grid, approximate=True)[0], "--", label="tanh approximation")
ax1.plot(grid, np.maximum(grid, 0), ":", color="gray", label="ReLU")
ax1.set_xlim(-4, 3)
ax1.set_ylim(-0.5, 3)
ax1.set_title("GELU")
ax1.legend(fontsize=8)
ax2.plot(grid, diff)
ax2.set_title("exact - tanh")
ax2.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
for ax in (ax1, ax2):
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("x")
fig.tight_layout()
fig.savefig(FIGURES / "02_gelu.png", dpi=120)
print("figure:", FIGURES / "02_gelu.png")
plt.show() if "ipykernel" in sys.modules else plt.close(fig)

# %% [markdown]
# ## 6. erf without SciPy
#
# NumPy has no `erf`, and minibert depends on NumPy alone. Python's `math.erf` works on one number at a
# time: looping over a `(B, T, I)` array with it is several times slower than a vectorised version, and
# always produces float64. `minibert.special` builds a vectorised one at import time: for `z >= 0` it
# writes `erfc(z) = t exp(-z^2 + g(u))` with `t = 2 / (2 + z)` and `u = 2t - 1`. Dividing out the Gaussian
# decay leaves a function `g` that is smooth and bounded on all of `[0, inf)`, which a short Chebyshev
# series fits to machine precision (24 terms for float64; 12 for float32, which is about 4x faster again
# and stays float32); the series is fitted to `math.erfc` itself. Computing `Phi(x)` for negative `x` from
# `erfc` rather than `1 + erf` keeps
# full relative accuracy in the far tail, where `1 + erf(x)` cancels to 0:

# %%
n = 100_000 if QUICK else 1_000_000
xs = rng.standard_normal(n) * 3
phi_math = np.vectorize(lambda v: 0.5 * math.erfc(-v / math.sqrt(2)))


def best_time(fn, repeats=3):
    """The fastest of a few runs: the least disturbed by whatever else the machine is doing."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


t_loop, reference = best_time(lambda: phi_math(xs))
t_ours, ours = best_time(lambda: normal_cdf(xs))
print(f"{n} values: max |normal_cdf - math.erfc| = {np.abs(ours - reference).max():.1e}, "
      f"max relative {np.max(np.abs(ours - reference) / reference):.1e}; "
      f"vectorised is {t_loop / t_ours:.0f}x faster than a Python loop")
far = np.array([-8.0, -20.0])
print("Phi(-8), Phi(-20) from normal_cdf:  ", "  ".join(f"{v:.4e}" for v in normal_cdf(far)))
print("                  from 0.5 (1 + erf):", "  ".join(f"{0.5 * (1 + math.erf(v / math.sqrt(2))):.4e}" for v in far))
print("float32 in, float32 out:", normal_cdf(xs[:3].astype(np.float32)).dtype)

# %% [markdown]
# ## What you should see
#
# Seed 0, float64 (tolerance of every check: 1e-6 relative):
#
# - Softmax of `[1000, 1001, 1002]`: naive `[nan nan nan]`, stable `[0.09 0.2447 0.6652]`, the same as for
#   `[0, 1, 2]`. `J^T g` and `p * (g - <g,p>)` print the same five numbers
#   (`[0.0072 0.1529 0.2103 -0.2041 -0.1662]`); `max |J @ ones|` is about 1e-17.
# - `softmax by hand`: `ok` with **8.5e-08**; package vs by hand: `0.0` for `p` and `dx`.
# - `-log(softmax(z)[y]) = inf` but `logsumexp(z) - z[y] = 800.0`.
# - Cross-entropy: `loss = 3.750771` (a uniform guess: 2.397895); `ok` with **2.4e-07**; package vs by
#   hand about 4e-16 (loss) and 3e-17 (gradient): the same formula, summed in a different order.
# - Weighted loss **3.54744779** vs mean over the real rows **3.54745962**, ratio **0.99999667**; padding
#   rows' gradient exactly `0.0`; with no predictions the loss is `0.0`, not `nan`.
#   `run_check("cross_entropy_weighted")`: `ok` with 6.0e-08.
# - GELU by hand: `ok` with 2.6e-08; package vs by hand `0.0` for both forms; max |exact - tanh| =
#   **4.73e-04 at x = +2.70** (the difference is even in x: -2.70 too). The figure
#   `lessons/figures/02_gelu.png` shows the two curves and their difference.
# - `normal_cdf` vs `math.erfc` on 10^6 values: max absolute error **5.6e-16**, max relative **4.1e-14**
#   (1e5 values in quick mode: slightly smaller maxima); the speed-up over the Python loop depends on the
#   machine (3-8x on a busy 2-core laptop). `Phi(-8), Phi(-20)` = `6.2210e-16  2.7536e-89` from
#   `normal_cdf`, but `6.1062e-16  0.0000e+00` from `1 + erf` (2% off, then nothing left).
#
# Errors of a correct check land anywhere between 1e-11 and a few 1e-7, depending on how small the
# gradient entries are relative to the loss; all are far below the 1e-6 tolerance, and far below what a bug
# produces (exercise 2).
#
# ## Exercises
#
# 1. **Forget the shift.** In `softmax_by_hand`, use `np.exp(x)` without subtracting the max. Which of the
#    checks in this lesson still pass? (Hint: the inputs of the check are of order 1.) Then find the
#    smallest float32 input that makes the naive version return `nan`, and explain the number.
# 2. **Drop a term of the softmax backward.** Return `p * dp` (forgetting `- <dp, p>`). Predict: does the
#    check fail for every entry or only some? About how large is the error? Run it.
# 3. **The 1e-5.** With the weights of section 4, what does the weighted loss become if the denominator is
#    `sum(w)` alone? With `weights = zeros`? Which of the two changes would you notice in a training log?
# 4. **GELU tanh backward.** Check `F.gelu_backward` with `approximate=True` against finite differences
#    (copy the GELU check and swap the functions). Then use the exact backward for the tanh forward: which
#    error does the check report, and how does it compare with the 4.7e-4 gap between the two forwards?
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `softmax_cross_entropy` and `gelu`.
