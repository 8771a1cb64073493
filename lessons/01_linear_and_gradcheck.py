# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 01 — A linear layer by hand: forward, backward, and checking gradients with finite differences
#
# **Run time:** about 2 s on a 2-core laptop (quick mode `MINIBERT_QUICK=1` changes nothing: everything
# here is small).
# Run it with `python lessons/01_linear_and_gradcheck.py`, or open it as a notebook (see `lessons/README.md`).
#
# Everything in minibert is built from pairs of plain functions:
#
#     y, cache = op_forward(x, ...)        # remember what the backward will need
#     dx = op_backward(dy, cache, ...)     # gradients of the inputs; parameter gradients are ADDED into buffers
#
# There is no autograd. So every backward is written by hand, and every one of them must be *checked*.
# This lesson does both for the simplest layer of BERT, the linear layer, and builds the tool that every
# later lesson uses to check its gradients: finite differences.

# %%
import sys

import matplotlib.pyplot as plt
import numpy as np

from minibert import functional as F
from minibert import checks, gradcheck, kernels, lessons
from minibert.nn import Linear

QUICK, FIGURES = lessons.setup(globals().get("__file__"))    # quick mode changes nothing here
np.set_printoptions(precision=4, suppress=True)
rng = np.random.default_rng(0)           # the one seed of this lesson: every number below follows from it
kernels.use("numpy")                     # the NumPy reference throughout (lesson 05 compares with Numba)

# %% [markdown]
# ## 1. Forward
#
# A linear layer maps each row of `x` (N rows of `in` features) to `out` features:
#
#     y = x W^T + b        x (N, in),  W (out, in),  b (out,)  ->  y (N, out)
#
# `W` is stored as `(out, in)`, the layout of PyTorch and of Hugging Face checkpoints, so loading a real
# BERT later needs no transposes. In BERT, N is "every token of every sequence": `x` is `(B, T, H)` and the
# matmul treats the leading `(B, T)` as rows.

# %%
N, IN, OUT = 4, 3, 2
x = rng.standard_normal((N, IN))
W = rng.standard_normal((OUT, IN))
b = rng.standard_normal(OUT)

y = x @ W.T + b                          # (N, out)
print("x", x.shape, " W", W.shape, " b", b.shape, " ->  y", y.shape)
print(y)

# %% [markdown]
# ## 2. Backward, derived
#
# Training minimises a scalar loss L. The backward receives `G = dL/dy`, with the shape of `y`, and must
# return the gradients of everything `y` was computed from. Write one entry of the forward out:
#
#     y[n, j] = sum_i x[n, i] W[j, i] + b[j]
#
# and apply the chain rule, `dL/dz = sum over the y's that z touches of G[n, j] * dy[n, j]/dz`:
#
#     dL/dx[n, i] = sum_j G[n, j] W[j, i]      ->  dx = G W       (N, out) @ (out, in) = (N, in)
#     dL/dW[j, i] = sum_n G[n, j] x[n, i]      ->  dW = G^T x     (out, N) @ (N, in)   = (out, in)
#     dL/db[j]    = sum_n G[n, j]              ->  db = G.sum(0)  (out,)
#
# A free sanity check: every gradient has the shape of its tensor, and there is only one way to multiply
# `G` with `W` or `x` that produces that shape. The sums over `n` in `dW` and `db` are there because
# every row used the same `W` and `b`.
#
# The backward below does not *return* `dW` and `db`: it **adds** them (`+=`) into buffers it is given.
# The reason is in section 5.

# %%
def linear_forward_by_hand(x, W, b):
    return x @ W.T + b, (x, W)


def linear_backward_by_hand(G, cache, dW, db):
    x, W = cache
    dW += G.T @ x                        # accumulate: W may be used more than once
    db += G.sum(axis=0)
    return G @ W                         # dx


G = rng.standard_normal((N, OUT))        # some upstream gradient dL/dy
dW, db = np.zeros_like(W), np.zeros_like(b)
dx = linear_backward_by_hand(G, linear_forward_by_hand(x, W, b)[1], dW, db)
print("dx", dx.shape, " dW", dW.shape, " db", db.shape)

# %% [markdown]
# ## 3. Checking it: finite differences
#
# How do we know the three formulas are right? By measuring. Pick a scalar function of the parameters,
# nudge one entry by a small `h`, and see how much the function moves:
#
#     forward difference:  dL/dw ~ (L(w + h) - L(w)) / h               error O(h)
#     central difference:  dL/dw ~ (L(w + h) - L(w - h)) / (2h)        error O(h^2)
#
# (Taylor: `L(w+h) = L + h L' + h^2/2 L'' + h^3/6 L''' + ...`. The forward difference keeps the
# `h/2 L''` term; in the central difference the even terms cancel and `h^2/6 L'''` is left.)
#
# That is the *truncation* error; it shrinks with `h`. But `L(w+h)` and `L(w-h)` are floating-point
# numbers, each off by about `eps |L|` (eps = 2.2e-16 in float64, 1.2e-7 in float32), and we divide their
# difference by `h`: a *rounding* error of about `eps |L| / h`, which grows as `h` shrinks. The best `h`
# balances the two. A linear layer is linear in `W`, so it has no truncation error at all; to see both
# effects we measure the derivative of `L = sum(G * tanh(x W^T + b))` instead, whose exact derivative is
# `dW = ((1 - tanh^2) * G)^T x` (section 2 with `G` replaced by `(1 - tanh^2) * G`).

# %%
def tanh_loss(W, dtype):
    c = lambda a: a.astype(dtype)        # noqa: E731  (cast every input: the whole computation in dtype)
    return np.sum(c(G) * np.tanh(c(x) @ c(W).T + c(b)), dtype=dtype)


t = np.tanh(x @ W.T + b)
exact_dW = ((1 - t * t) * G).T @ x
i, j = np.unravel_index(np.abs(exact_dW).argmax(), exact_dW.shape)   # the largest entry, W[i, j]
exact = exact_dW[i, j]

steps = 10.0 ** -np.arange(1, 13)
errors = {}                              # (method, dtype) -> relative error per h
for dtype in (np.float64, np.float32):
    L0 = tanh_loss(W, dtype)
    fwd, cen = [], []
    for h in steps:
        Wp, Wm = W.astype(dtype), W.astype(dtype)
        Wp[i, j] += dtype(h)
        Wm[i, j] -= dtype(h)
        Lp, Lm = tanh_loss(Wp, dtype), tanh_loss(Wm, dtype)
        fwd.append(abs((Lp - L0) / h - exact) / abs(exact))
        cen.append(abs((Lp - Lm) / (2 * h) - exact) / abs(exact))
    errors["forward", dtype.__name__], errors["central", dtype.__name__] = fwd, cen

print(f"d L / d W[{i},{j}] = {exact:.6f}; relative error of the finite-difference estimate:")
print(f"{'h':>7}  {'forward f64':>11}  {'central f64':>11}  {'forward f32':>11}  {'central f32':>11}")
for k, h in enumerate(steps):
    print(f"{h:7.0e}  " + "  ".join(f"{errors[m, d][k]:11.1e}" for d in ("float64", "float32")
                                     for m in ("forward", "central")))
best = {key: (steps[int(np.argmin(v))], min(v)) for key, v in errors.items()}
for key, (h, e) in best.items():
    print(f"best {key[0]:>7} {key[1]}: h = {h:.0e}, relative error {e:.1e}")

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for (method, dtype), err in errors.items():
    ax.loglog(steps, np.maximum(err, 1e-16), "o-" if method == "central" else "s--",
              label=f"{method} difference, {dtype}")
ax.axvline(gradcheck.STEP, color="gray", lw=0.8)
ax.set_ylim(1e-12, 10)
ax.text(gradcheck.STEP * 1.3, 2e-12, f"h = {gradcheck.STEP:g} (minibert)", fontsize=8, color="gray")
ax.set_xlabel("step h")
ax.set_ylabel("relative error of the derivative")
ax.set_title("Truncation (right) vs rounding (left)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "01_finite_differences.png", dpi=120)
print("figure:", FIGURES / "01_finite_differences.png")
plt.show() if "ipykernel" in sys.modules else plt.close(fig)

# %% [markdown]
# Read the table from the bottom up. At tiny `h` rounding wins: the error falls as `h` grows (the left arm
# of the V). At large `h` truncation wins: each factor 10 in `h` multiplies the forward difference's error
# by 10 and the central difference's by 100 (the right arm). In float64 the central difference bottoms
# out near `h = 1e-5` at an error around 1e-11; the forward difference only reaches ~1e-8. In float32
# nothing is better than about 1e-5, and at `h = 1e-5` it is off by percent.
#
# Hence minibert's checker (`minibert.gradcheck`): **central differences, float64, h = 1e-5**, and a tensor
# passes if its worst entry is within a relative error of **1e-6**. Correct code measures at 1e-8 or
# below (the floor of the V, a little higher where an entry's gradient is tiny), while a real bug (a
# missing term, a wrong transpose) gives errors of 1e-3 to 1.
# Training runs in float32; only the checks are float64 (every op in minibert keeps the dtype it is given).

# %% [markdown]
# ## 4. The checker, and why the upstream gradient is random
#
# `gradcheck.check_function(name, forward, backward, inputs, rng, params)` does the whole job: it draws a
# random upstream gradient `G` of `y`'s shape, calls your `backward(G)`, and compares each gradient entry
# with the central difference of `L = sum(forward() * G)`, perturbing the arrays *in place* (so `forward`
# must read them, not copies).

# %%
def forward():
    return linear_forward_by_hand(x, W, b)[0]


def backward(G):
    dW, db = np.zeros_like(W), np.zeros_like(b)
    dx = linear_backward_by_hand(G, linear_forward_by_hand(x, W, b)[1], dW, db)
    return {"x": dx, "W": dW, "b": db}


results = gradcheck.check_function("linear by hand", forward, backward, {"x": x}, rng, {"W": W, "b": b})
print(gradcheck.format_table(results))

# %% [markdown]
# Why not simply `G = ones`, i.e. check the gradient of `sum(y)`? Because a constant `G` is blind to every
# bug that permutes or mixes entries which it weighs equally. With `G = ones`, `dW = ones^T x`: every row
# of `dW` is the same vector (the column sums of `x`). A backward that puts the rows of `dW` in the wrong
# order — a classic slip with transposes and reshapes — gives exactly the same numbers and passes:

# %%
def buggy_backward(G):
    grads = backward(G)
    grads["W"] = grads["W"][::-1].copy()          # the bug: output rows of dW in reverse order
    return grads


def check_with_upstream(G, backward_fn):
    analytic = backward_fn(G)
    loss = lambda: float(np.sum(forward() * G))   # noqa: E731
    return {r.tensor: r.max_rel_error for r in gradcheck.compare("", loss, analytic, {"W": W}, rng)}


err_ones = check_with_upstream(np.ones((N, OUT)), buggy_backward)["W"]
err_random = check_with_upstream(rng.standard_normal((N, OUT)), buggy_backward)["W"]
print(f"reversed-rows bug, upstream = ones:   max rel error of W = {err_ones:.1e}   (passes!)")
print(f"reversed-rows bug, upstream = random: max rel error of W = {err_random:.1e}   (caught)")

# %% [markdown]
# The same blindness hides worse bugs later: softmax outputs sum to 1 and layer-norm outputs sum to
# `sum(beta)` whatever the input, so with `G = ones` the true input gradient is exactly zero, and a
# backward that returns zeros would "pass". A random `G` makes every entry of `y` matter differently.
#
# And float32? The checker refuses it, for the reason the table showed:

# %%
x32 = x.astype(np.float32)
try:
    gradcheck.check_function("float32", lambda: x32 @ W.T.astype(np.float32),
                             lambda G: {"x": G @ W}, {"x": x32}, rng)
except ValueError as exc:
    print("ValueError:", exc)

# %% [markdown]
# ## 5. Why the backward adds (`+=`)
#
# In BERT the word-embedding matrix `E` is used twice: to look up the input tokens, and again (tied) as
# the output layer that scores every vocabulary word for masked-language modelling. The loss depends on
# `E` through both uses, so `dL/dE` is the **sum** of the two contributions. If each backward adds into
# `E`'s gradient buffer, tying needs no special code: call both backwards, and the buffer holds the sum.
# The price is that buffers must be zeroed before each step (`model.zero_grad()`).
#
# Here is the smallest version: one `W` applied to two inputs, `y1 = x1 W^T + b` and `y2 = x2 W^T + b`.

# %%
x1, x2 = rng.standard_normal((N, IN)), rng.standard_normal((5, IN))
G1, G2 = rng.standard_normal((N, OUT)), rng.standard_normal((5, OUT))


def two_uses_loss():
    return float(np.sum(G1 * linear_forward_by_hand(x1, W, b)[0]) + np.sum(G2 * linear_forward_by_hand(x2, W, b)[0]))


dW, db = np.zeros_like(W), np.zeros_like(b)
linear_backward_by_hand(G1, (x1, W), dW, db)
linear_backward_by_hand(G2, (x2, W), dW, db)                # adds the second use to the first
ok = gradcheck.compare("W used twice, +=", two_uses_loss, {"W": dW, "b": db}, {"W": W, "b": b}, rng)

dW_overwritten = G2.T @ x2                                   # what "dW = ..." would leave: the last use only
bad = gradcheck.compare("W used twice, =", two_uses_loss, {"W": dW_overwritten, "b": db}, {"W": W}, rng)
print(gradcheck.format_table(ok + bad))

# %% [markdown]
# ## 6. The package's version
#
# `minibert.functional.linear_forward` / `linear_backward` are the same three formulas (the backward
# also flattens leading dimensions, so `x` may be `(B, T, H)`). Same inputs, same numbers:

# %%
y_pkg, cache = F.linear_forward(x, W, b)
dW_pkg, db_pkg = np.zeros_like(W), np.zeros_like(b)
dx_pkg = F.linear_backward(G, cache, dW_pkg, db_pkg)
dW_hand, db_hand = np.zeros_like(W), np.zeros_like(b)
dx_hand = linear_backward_by_hand(G, (x, W), dW_hand, db_hand)
for name, a, c in [("y", y_pkg, y), ("dx", dx_pkg, dx_hand), ("dW", dW_pkg, dW_hand), ("db", db_pkg, db_hand)]:
    print(f"max |package - by hand| for {name:2}: {np.abs(a - c).max():.1e}")

# %% [markdown]
# From here on we use the package. `minibert.nn.Linear` is the module: it owns `weight` and `bias` as
# `Parameter`s (an array and its gradient buffer), initialised as BERT does (normal, std 0.02, float32,
# zero bias), and keeps the cache of its last forward until its backward, which reads it once and lets
# go of it (in a deep model, each layer's saved activations are then freed as soon as the backward has
# passed that layer). Its backward accumulates like ours, so two forward/backward passes double the
# gradient until `zero_grad()`; a second backward without a forward is refused, as in PyTorch:

# %%
layer = Linear(IN, OUT, np.random.default_rng(0))
xb = rng.standard_normal((2, 5, IN)).astype(np.float32)     # (B, T, in): any leading dimensions
yb = layer.forward(xb)
Gb = rng.standard_normal(yb.shape).astype(np.float32)
layer.backward(Gb)
once = layer.weight.grad.copy()
layer.forward(xb)
layer.backward(Gb)
print("parameters:", [(n, a.shape, a.dtype.name) for n, a in layer.named_parameters()])
print("output", yb.shape, yb.dtype, "| grad after two passes / after one:",
      np.round(layer.weight.grad / once, 6).ravel()[:3], "...")
try:
    layer.backward(Gb)
except RuntimeError as error:
    print("a backward without a forward:", error)
layer.zero_grad()
print("after zero_grad:", np.abs(layer.weight.grad).max())

# %% [markdown]
# And the package's own check of the linear pair (`minibert gradcheck --only linear` on the command line)
# uses BERT-like shapes `(B, T, H) = (3, 7, 12)` to 20 outputs:

# %%
results = checks.run_check("linear", seed=0)
print(gradcheck.format_table(results))
print("worst relative error:", f"{max(r.max_rel_error for r in results):.1e}")

# %% [markdown]
# ## What you should see
#
# With seed 0 (`np.random.default_rng(0)`), NumPy 2.x, float64:
#
# - The finite-difference table: the float64 central difference is best at `h = 1e-5` with a relative
#   error of **8.9e-12**; the float64 forward difference is best at `h = 1e-7` with **4.5e-08**; float32
#   is best at `h = 1e-2` with **1.2e-05** (central) and is off by **1.6e-02** at `h = 1e-5`.
#   (The rounding-dominated rows, small `h`, can differ in the last digits on another machine or BLAS;
#   the V shape and the minima do not move.)
# - `linear by hand`: all three tensors `ok`, max relative errors between about 2e-11 and 3e-10 (a linear
#   function has no truncation error; what is left is rounding).
# - The reversed-rows bug: max relative error of W **1.6e-10 with `G = ones`** (passes), **1.7e+00** with
#   a random `G` (caught).
# - `W used twice, +=`: `ok` (about 5e-11); `W used twice, =`: `FAIL` with **1.48e+00**.
# - Package vs by hand: `0.0e+00` for `y`, `dx`, `dW` and `db` (the same operations in the same order).
# - `run_check("linear")`: three tensors `ok`, the worst **2.6e-08** (tolerance 1e-6). Errors of 1e-8 and
#   below are measurement noise; a bug shows up as 1e-3 or more. Their digits vary with the CPU and
#   the BLAS library (so do those of the finite-difference table): expect the same orders of
#   magnitude on another machine, not the same digits.
#
# ## Exercises
#
# 1. **Break the bias gradient.** In `linear_backward_by_hand`, replace `db += G.sum(axis=0)` by
#    `db += G.mean(axis=0)`. Before running: which row of the check table fails, and roughly what relative
#    error will it show for N = 4? (Hint: every entry is off by the same factor.) Then run it.
# 2. **Forward differences in the checker.** `gradcheck.compare` has a `step` argument. Call it on the
#    tanh layer of section 3 (write a `loss_fn` that reads `W`) with `step=1e-5`, then copy `compare` into
#    the notebook and change it to a forward difference. Predict the worst error from the table, and
#    whether 1e-6 would still be a usable tolerance.
# 3. **How small a step can float32 take?** Predict, from `eps(float32) = 1.2e-7` and `|L|` here, the step
#    at which the float32 central difference is best (balance `h^2 |L'''|` against `eps |L| / h`), and
#    compare with the table.
# 4. **Tied weights.** Extend section 5 so that `b` is *not* shared (two biases `b1`, `b2`). Which buffers
#    now receive one contribution and which two? Check your answer with `gradcheck.compare`.
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `linear` (the forward/backward pair and its `+=`).
