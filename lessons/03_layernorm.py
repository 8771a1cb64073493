# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 03 — Layer normalisation: the derivation, the cache, the check
#
# **Run time:** under 1 s on a 2-core laptop (quick mode `MINIBERT_QUICK=1` changes nothing: everything
# here is small). Builds on lessons 01-02 (forward/backward pairs, the gradient checker, why the upstream gradient
# is random).
#
# BERT applies layer normalisation 25 times per forward pass in its base size (after the embeddings, and
# twice in each of the 12 layers). Its backward is the first one in this course where a single output
# depends on *every* input of its row, through two shared statistics: the mean and the variance. Getting
# either of those two terms wrong is the classic layer-norm bug, so we derive them one at a time.

# %%
import numpy as np

from minibert import functional as F
from minibert import checks, gradcheck, kernels
from minibert.nn import LayerNorm

np.set_printoptions(precision=4, suppress=True)
rng = np.random.default_rng(0)
kernels.use("numpy")                     # the NumPy reference throughout (lesson 05 compares with Numba)

# %% [markdown]
# ## 1. Forward
#
# For each row `x` of length H (one token's hidden vector):
#
#     mu   = mean(x)                             the row mean
#     var  = mean((x - mu)^2)                    the row variance (divided by H, not H - 1)
#     r    = 1 / sqrt(var + eps)                 "rstd", the reciprocal standard deviation
#     xhat = (x - mu) r                          mean 0, variance 1 (up to eps)
#     y    = gamma * xhat + beta                 a learned scale and shift per feature, shape (H,)
#
# `gamma` starts at 1 and `beta` at 0, so a fresh layer norm just standardises each row.

# %%
B, T, H = 2, 3, 8
x = rng.standard_normal((B, T, H)) * 3 + 1          # rows far from mean 0 / std 1 on purpose
gamma = rng.standard_normal(H)
beta = rng.standard_normal(H)
EPS = 1e-12


def layernorm_forward_by_hand(x, gamma, beta, eps=EPS):
    mu = x.mean(axis=-1, keepdims=True)               # (B, T, 1)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)      # (B, T, 1)
    r = 1 / np.sqrt(var + eps)                        # (B, T, 1)
    xhat = xc * r                                     # (B, T, H)
    return gamma * xhat + beta, (xhat, r, gamma)


y, (xhat, r, _) = layernorm_forward_by_hand(x, gamma, beta)
print("row means of x   :", x.mean(-1).ravel())
print("row means of xhat:", xhat.mean(-1).ravel())
print("row stds of xhat :", xhat.std(-1).ravel())

# %% [markdown]
# **eps = 1e-12.** The `eps` only guards against dividing by zero for a constant row. BERT uses 1e-12
# (its TensorFlow code, and `layer_norm_eps` in Hugging Face configs); PyTorch's `nn.LayerNorm` default is
# 1e-5. For rows with a variance near 1 the two are indistinguishable, but for rows with a small variance
# they are not, and a pretrained checkpoint must be run with the eps it was trained with:

# %%
for scale in (1.0, 1e-2, 1e-3):
    row = x[0, 0] * scale
    a = layernorm_forward_by_hand(row, np.ones(H), np.zeros(H), 1e-12)[0]
    b = layernorm_forward_by_hand(row, np.ones(H), np.zeros(H), 1e-5)[0]
    print(f"row std {row.std():8.1e}:  max |LN_1e-12 - LN_1e-5| = {np.abs(a - b).max():.1e}")
const = layernorm_forward_by_hand(np.full(H, 7.0), np.ones(H), np.zeros(H))[0]
print("a constant row normalises to", const, "(x - mu = 0 exactly, so r = 1e6 multiplies zeros)")

# %% [markdown]
# ## 2. Backward, one term at a time
#
# The parameters are the easy part. `y_i = gamma_i xhat_i + beta_i`, summed over all rows that share them:
#
#     dbeta  = sum over rows of dy                 dgamma = sum over rows of dy * xhat
#
# For the input, work on one row and call `g_i = dL/dxhat_i = dy_i gamma_i`. Then
# `dL/dx_j = sum_i g_i dxhat_i/dx_j`, and `xhat_i = (x_i - mu) r` depends on `x_j` three ways:
#
# 1. **directly**, through `x_i` itself when `i = j`: `d x_i / d x_j = delta_ij`;
# 2. **through the mean**: `d mu / d x_j = 1/H`;
# 3. **through the variance**, inside `r`. With `var = mean((x - mu)^2)`,
#    `d var / d x_j = (2/H) (x_j - mu) - (2/H) sum_i (x_i - mu) (1/H) = (2/H) (x_j - mu)`
#    (the second sum is zero: deviations from the mean sum to zero), and
#    `d r / d x_j = -1/2 (var + eps)^(-3/2) d var / d x_j = -r^3 (x_j - mu) / H`.
#
# Product rule on `(x_i - mu) r`:
#
#     dxhat_i/dx_j = (delta_ij - 1/H) r + (x_i - mu) (-r^3 (x_j - mu) / H)
#                  = r (delta_ij - 1/H - xhat_i xhat_j / H)
#
# and summing against `g`:
#
#     dx_j = r ( g_j  -  mean(g)  -  xhat_j mean(g * xhat) )
#                 ^       ^            ^
#              direct   mean term    variance term
#
# Three vectors of length H and two row means: O(H) per row, no H x H matrix.

# %%
def layernorm_backward_by_hand(dy, cache, dgamma, dbeta):
    xhat, r, gamma = cache
    dgamma += (dy * xhat).reshape(-1, xhat.shape[-1]).sum(axis=0)    # accumulate, as every backward does
    dbeta += dy.reshape(-1, dy.shape[-1]).sum(axis=0)
    g = dy * gamma
    direct = g
    mean_term = g.mean(axis=-1, keepdims=True)
    variance_term = xhat * (g * xhat).mean(axis=-1, keepdims=True)
    return r * (direct - mean_term - variance_term)


dy = rng.standard_normal(x.shape)
cache = layernorm_forward_by_hand(x, gamma, beta)[1]
g = dy * gamma
print(f"largest entry of each term in row (0, 0): direct {np.abs(g[0, 0]).max():.3f}, "
      f"mean {abs(g[0, 0].mean()):.3f}, variance {np.abs(xhat[0, 0] * (g[0, 0] * xhat[0, 0]).mean()).max():.3f}")

# %% [markdown]
# Before finite differences, a cross-check of the algebra: build the Jacobian `dy_i/dx_j = gamma_i r
# (delta_ij - 1/H - xhat_i xhat_j / H)` of one row as a matrix and multiply, as in lesson 02's softmax.

# %%
row_xhat, row_r = xhat[0, 0], r[0, 0, 0]
J = gamma[:, None] * row_r * (np.eye(H) - 1 / H - np.outer(row_xhat, row_xhat) / H)   # (H, H): dy_i / dx_j
dx_formula = layernorm_backward_by_hand(dy[0, 0], (row_xhat, row_r, gamma), np.zeros(H), np.zeros(H))
print("max |J^T dy - formula| =", np.abs(J.T @ dy[0, 0] - dx_formula).max())

# %% [markdown]
# ## 3. The check
#
# Finite differences in float64 with a random upstream gradient, every entry of `x` (48 of them):

# %%
def check(backward_fn, name):
    def backward(G):
        dgamma, dbeta = np.zeros(H), np.zeros(H)
        dx = backward_fn(G, layernorm_forward_by_hand(x, gamma, beta)[1], dgamma, dbeta)
        return {"x": dx, "gamma": dgamma, "beta": dbeta}
    return gradcheck.check_function(name, lambda: layernorm_forward_by_hand(x, gamma, beta)[0], backward,
                                    {"x": x}, rng, {"gamma": gamma, "beta": beta}, max_entries=x.size)


print(gradcheck.format_table(check(layernorm_backward_by_hand, "layernorm by hand")))

# %% [markdown]
# What does a bug look like? Forget the mean term (a classic: "the mean is a constant, isn't it?"):

# %%
def backward_without_mean_term(dy, cache, dgamma, dbeta):
    xhat, r, gamma = cache
    dgamma += (dy * xhat).reshape(-1, H).sum(axis=0)
    dbeta += dy.reshape(-1, H).sum(axis=0)
    g = dy * gamma
    return r * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))


print(gradcheck.format_table(check(backward_without_mean_term, "no mean term")))

# %% [markdown]
# The parameter gradients still pass (they never needed the term), and `x` fails by an error of order 1:
# there is no "almost right" here. Checking every tensor by name matters: a table that only reported
# `gamma` and `beta` would have looked perfect.
#
# One more reason for a random upstream gradient: with `dy = ones` and `gamma = 1`, `g = 1`, so the direct
# and mean terms cancel and `mean(g * xhat) = mean(xhat) = 0`: the true `dx` is exactly zero, and a
# backward that returns zeros would pass.

# %%
print("dx for dy = ones, gamma = 1:",
      np.abs(layernorm_backward_by_hand(np.ones_like(x), (xhat, r, np.ones(H)), np.zeros(H), np.zeros(H))).max())

# %% [markdown]
# ## 4. The cache
#
# What must the forward keep for the backward? The formula reads `xhat` and `r` (and `gamma`), nothing
# else; so the cache is `(xhat, r, gamma)`: one `(B, T, H)` array and one number per row. Keeping `x`
# instead would force the backward to recompute the mean, variance and `xhat`. In BERT-base with B = 32,
# T = 128 that cache is 32 * 128 * 768 floats = 12.6 MB in float32 per layer norm, 25 of them per forward:
# activations like these, not the weights, are what fills memory during training.
#
# (The Numba kernel of lesson 05 caches `x`, `mu` and `r` instead and recomputes `xhat` inside its fused
# loop, which is cheaper there. Each backend's backward reads only its own forward's cache.)

# %%
_, cache = layernorm_forward_by_hand(x, gamma, beta)
print("cache:", [(name, a.shape) for name, a in zip(("xhat", "r", "gamma"), cache)])

# %% [markdown]
# ## 5. The package's version
#
# `minibert.functional.layernorm_forward` / `layernorm_backward` are exactly these formulas, and
# `minibert.nn.LayerNorm` is the module holding `weight` (gamma) and `bias` (beta), the Hugging Face names.
# Model code calls the pair through `minibert.kernels`, the switch between this NumPy reference and the
# Numba kernels (lesson 05); this lesson pinned the NumPy one at the top.

# %%
y_pkg, cache_pkg = F.layernorm_forward(x, gamma, beta, EPS)
dg_pkg, db_pkg = np.zeros(H), np.zeros(H)
dx_pkg = F.layernorm_backward(dy, cache_pkg, dg_pkg, db_pkg)
dg, db = np.zeros(H), np.zeros(H)
dx = layernorm_backward_by_hand(dy, layernorm_forward_by_hand(x, gamma, beta)[1], dg, db)
for name, a, c in [("y", y_pkg, y), ("dx", dx_pkg, dx), ("dgamma", dg_pkg, dg), ("dbeta", db_pkg, db)]:
    print(f"max |package - by hand| for {name:6}: {np.abs(a - c).max():.1e}")

ln = LayerNorm(H).astype(np.float64)
ln.weight.data[...] = gamma
ln.bias.data[...] = beta
out = ln.forward(x)
dx_module = ln.backward(dy)
print("module: max |y - by hand|", np.abs(out - y).max(), " max |dx - by hand|", np.abs(dx_module - dx).max(),
      " names", [n for n, _ in ln.named_parameters()])

print(gradcheck.format_table(checks.run_check("layernorm", seed=0)))

# %% [markdown]
# ## What you should see
#
# Seed 0, float64, tolerance 1e-6 relative:
#
# - Row means of `x` from -1.65 to 3.16; row means of `xhat` `0.` (about 1e-16), row stds `1.`.
# - eps: `max |LN_1e-12 - LN_1e-5|` = **3.1e-06** for a row of std 1.7, **3.0e-02** at std 1.7e-2 and
#   **9.1e-01** at std 1.7e-3 (the 1e-5 version shrinks such rows towards zero). The constant row
#   normalises to zeros.
# - Largest entries of the three terms in row (0, 0): direct 1.595, mean 0.253, variance 0.259: the two
#   correction terms are not small.
# - The Jacobian cross-check: `max |J^T dy - formula|` = 2.2e-16.
# - `layernorm by hand`: all three tensors `ok`, `x` at **3.7e-09**, `gamma` and `beta` below 1e-9.
# - `no mean term`: `x` **FAIL** with a max relative error of **1.97e+00**; `gamma`, `beta` still `ok`.
# - `dx for dy = ones, gamma = 1`: 5.8e-17 (exactly zero in exact arithmetic).
# - Package vs by hand: `0.0e+00` for all four; the module gives the same numbers, parameter names
#   `['weight', 'bias']`; `run_check("layernorm")` passes for `x`, `weight` and `bias`.
#
# The small numbers (the gradient-check errors, the 1e-16 and 1e-17 rounding residues) come from
# float rounding, whose digits vary with the CPU and the BLAS library: on another machine expect the
# same orders of magnitude (check errors below 1e-7), not the same digits.
#
# ## Exercises
#
# 1. **Drop the variance term** (return `r * (g - mean(g))`). Before running: which tensor's check fails,
#    and is the error closer to 1e-6, 1e-2 or 1? Then: for which upstream gradient `dy` would this bug be
#    invisible? (Hint: section 3's last cell.)
# 2. **Divide by H - 1.** Compute `var` with `ddof=1` in the forward but keep the backward. Which check
#    fails, and by roughly how much for H = 8? Why does the error shrink as H grows (try H = 768)?
# 3. **eps in the backward.** The backward above never mentions `eps`; it hides in `r`. Set `eps = 1.0` in
#    the forward (a deliberately huge value) and re-run the check. Does it still pass? Explain which step
#    of the derivation would change if `xhat` had been computed from `sqrt(var)` and `eps` added elsewhere.
# 4. **Memory.** Modify the forward to cache `(x, gamma)` only and recompute `mu`, `r`, `xhat` in the
#    backward. Check it. What did you save, and what did it cost?
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `layernorm` (the axis, the three terms of the backward).
