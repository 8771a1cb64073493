# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 04 — Attention: one head, many heads, padding masks
#
# **Run time:** about 1 s on a 2-core laptop (quick mode `MINIBERT_QUICK=1`: about the same; fewer samples in
# the scaling experiment). Builds on lesson 01 (linear layers, the checker) and lesson 02 (softmax and its
# backward).
#
# Self-attention is where tokens exchange information: every token (a *query*) takes a weighted average
# of every token's *value*, weighted by how well the query matches each token's *key*. We build one head
# by hand, then many heads with two reshapes, add the padding mask, derive the backward, check it, and
# meet a parameter whose gradient is exactly zero.
#
# Shapes: B batch, T tokens, H hidden, A heads, D = H / A head size.

# %%
import math
import sys

import matplotlib.pyplot as plt
import numpy as np

from minibert import functional as F
from minibert import checks, gradcheck, kernels, lessons
from minibert.config import BertConfig
from minibert.models.bert import BertSelfAttention

QUICK, FIGURES = lessons.setup(globals().get("__file__"))
np.set_printoptions(precision=3, suppress=True)
rng = np.random.default_rng(0)
kernels.use("numpy")                     # the NumPy reference throughout (lesson 05 compares with Numba)

# %% [markdown]
# ## 1. One head
#
# For one sequence `x` (T, H), three linear layers make queries, keys and values of size D:
#
#     q = x Wq^T + bq,   k = x Wk^T + bk,   v = x Wv^T + bv          each (T, D), W* (D, H)
#     S = q k^T / sqrt(D)                                           (T, T): S[i, j] = query i . key j
#     P = softmax(S) along each row                                 row i: how much token i reads token j
#     out = P v                                                     (T, D): weighted averages of values

# %%
B, T, H, A = 2, 6, 8, 2
D = H // A
x = rng.standard_normal((B, T, H))
Wq, Wk, Wv = (rng.standard_normal((H, H)) * 0.5 for _ in range(3))   # (out, in) for all A heads at once
bq, bk, bv = (rng.standard_normal(H) * 0.5 for _ in range(3))


def softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def one_head(x1, Wq, bq, Wk, bk, Wv, bv):
    q, k, v = x1 @ Wq.T + bq, x1 @ Wk.T + bk, x1 @ Wv.T + bv
    P = softmax(q @ k.T / math.sqrt(q.shape[-1]))
    return P @ v, P


# head 0 of sequence 0 uses the first D rows of each weight matrix
out0, P0 = one_head(x[0], Wq[:D], bq[:D], Wk[:D], bk[:D], Wv[:D], bv[:D])
print("out", out0.shape, " P", P0.shape, " row sums of P:", P0.sum(axis=1))

# %% [markdown]
# **Why divide by sqrt(D)?** If the entries of `q` and `k` have variance 1, their dot product is a sum of D
# products of variance 1: its standard deviation is sqrt(D). At BERT-base's D = 64 that is 8, and a softmax
# over scores spread by 8 is nearly one-hot, with gradients nearly zero. Dividing by sqrt(D) brings the
# spread back to 1, whatever the head size:

# %%
n = 2_000 if QUICK else 20_000
for d in (4, 64):
    qs, ks = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    dots = (qs * ks).sum(axis=1)
    print(f"D = {d:2}: std of q.k = {dots.std():5.2f},   std of q.k / sqrt(D) = {dots.std() / math.sqrt(d):.2f}")

# %% [markdown]
# ## 2. Many heads: two reshapes
#
# With A heads, one `(H, H)` matrix computes all heads' queries at once; head `a` owns output columns
# `a*D : (a+1)*D`. Splitting is a reshape and a transpose, with no copying of values:
#
#     (B, T, H) -> reshape (B, T, A, D) -> transpose (B, A, T, D)
#
# and then every matmul runs over the leading `(B, A)` dimensions in one call. Merging the heads back is
# the inverse: transpose to `(B, T, A, D)`, reshape to `(B, T, H)`.

# %%
def split(t):                # (B, T, H) -> (B, A, T, D)
    return t.reshape(B, T, A, D).transpose(0, 2, 1, 3)


def merge(t):                # (B, A, T, D) -> (B, T, H)
    return t.transpose(0, 2, 1, 3).reshape(B, T, H)


def multi_head(x, mask_bias=None):
    q, k, v = split(x @ Wq.T + bq), split(x @ Wk.T + bk), split(x @ Wv.T + bv)
    S = q @ k.swapaxes(-1, -2) / math.sqrt(D)                  # (B, A, T, T)
    if mask_bias is not None:
        S = S + mask_bias[:, None, None, :]                     # (B, T) -> (B, 1, 1, T): every head, every query
    P = softmax(S)
    return merge(P @ v), P


out_all, P_all = multi_head(x)
print("all heads:", out_all.shape, P_all.shape)
print("head 0 of sequence 0 equals the single head:  max |diff| =",
      np.abs(out_all[0, :, :D] - out0).max(), " (P:", np.abs(P_all[0, 0] - P0).max(), ")")

# %% [markdown]
# ## 3. Padding and the additive mask
#
# Sequences in a batch have different lengths; the short ones are padded to T with `[PAD]` tokens, and
# `attention_mask` marks real tokens with 1 and padding with 0. No token may read a padded *key*. BERT
# adds a large negative number to those scores before the softmax:
#
#     mask_bias = (1 - attention_mask) * (-10000)          (B, T), broadcast over heads and queries
#
# After the softmax subtracts the row maximum (a real score of order 1), a padded key's exponent is about
# -10000, and `exp(-10000)` is not just small: it **underflows to exactly 0.0** (float64 underflows below
# about exp(-745), float32 below exp(-104)). So a padded key receives exactly zero attention, and the
# outputs of real tokens do not depend on the padding at all, bit for bit. A finite -10000 rather than
# `-inf` keeps a row finite even if every key were padded (it becomes uniform instead of `nan`).

# %%
attention_mask = np.array([[1, 1, 1, 1, 1, 1],
                           [1, 1, 1, 1, 0, 0]])                # sequence 1: 4 tokens + 2 padding
mask_bias = (1 - attention_mask) * F.MASK_BIAS
print("exp(-10000) =", np.exp(-10000.0), "  exp(float32(-10000)) =", np.exp(np.float32(-10000.0)))

out_m, P_m = multi_head(x, mask_bias)
print("largest attention on a padded key:", P_m[1, :, :, 4:].max())

x_garbage = x.copy()
x_garbage[1, 4:] = rng.standard_normal((2, H)) * 100           # change the padding's vectors wildly
out_g, _ = multi_head(x_garbage, mask_bias)
print("real tokens' outputs after changing the padding: max |diff| =", np.abs(out_g[1, :4] - out_m[1, :4]).max())

# %% [markdown]
# The padded *queries* (rows 4 and 5 of sequence 1) still attend to the real keys and produce outputs;
# those outputs are simply never used by a loss, so they receive zero gradient from above.

# %%
fig, axes = plt.subplots(1, A, figsize=(4 * A, 3.6))
labels = [f"tok{j}" if attention_mask[1, j] else "[PAD]" for j in range(T)]
for a, ax in enumerate(axes):
    im = ax.imshow(P_m[1, a], vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"sequence 1, head {a}")
    ax.set_xticks(range(T), labels, rotation=45, fontsize=8)
    ax.set_yticks(range(T), labels, fontsize=8)
    ax.set_xlabel("key (attended to)")
axes[0].set_ylabel("query")
fig.colorbar(im, ax=axes, shrink=0.8, label="attention probability")
fig.savefig(FIGURES / "04_attention_padding.png", dpi=120, bbox_inches="tight")
print("figure:", FIGURES / "04_attention_padding.png")
plt.show() if "ipykernel" in sys.modules else plt.close(fig)

# %% [markdown]
# ## 4. The backward
#
# Per head, read the forward backwards (`C` the context, `dC` its upstream gradient, `s = 1/sqrt(D)`):
#
#     C = P V           ->  dV = P^T dC           (T, T)^T (T, D)     every query's weight on key j, times dC
#                           dP = dC V^T           (T, D) (D, T)
#     P = softmax(S)    ->  dS = P * (dP - rowsum(dP * P))              lesson 02, row by row
#     S = s Q K^T       ->  dQ = s dS K,   dK = s dS^T Q                like a linear layer, twice
#
# The mask bias is a constant added to `S`: it has no gradient of its own. A padded key has `P = 0` in
# its whole column, so its `dS` column is 0, and its rows of `dK` and `dV` are exactly 0.
#
# Then through the projections: `x` made `q`, `k` *and* `v`, so its gradient is the sum of three linear
# backwards, `dx = dq Wq + dk Wk + dv Wv` (merge the heads first). The `+=` again.

# %%
def attention_forward_by_hand(q, k, v, mask_bias):
    s = 1 / math.sqrt(q.shape[-1])
    S = s * q @ k.swapaxes(-1, -2) + mask_bias[:, None, None, :]
    P = softmax(S)
    return P @ v, (q, k, v, P, s)


def attention_backward_by_hand(dC, cache):
    q, k, v, P, s = cache
    dv = P.swapaxes(-1, -2) @ dC
    dP = dC @ v.swapaxes(-1, -2)
    dS = P * (dP - (dP * P).sum(axis=-1, keepdims=True))
    dq = s * dS @ k
    dk = s * dS.swapaxes(-1, -2) @ q
    return dq, dk, dv


q, k, v = (rng.standard_normal((B, A, T, D)) for _ in range(3))


def backward(dC):
    dq, dk, dv = attention_backward_by_hand(dC, attention_forward_by_hand(q, k, v, mask_bias)[1])
    return {"q": dq, "k": dk, "v": dv}


results = gradcheck.check_function("attention by hand", lambda: attention_forward_by_hand(q, k, v, mask_bias)[0],
                                   backward, {"q": q, "k": k, "v": v}, rng, max_entries=q.size)
print(gradcheck.format_table(results))
grads = backward(rng.standard_normal((B, A, T, D)))
print("padded keys: max |dK| =", np.abs(grads["k"][1, :, 4:]).max(), " max |dV| =", np.abs(grads["v"][1, :, 4:]).max())

# %% [markdown]
# ## 5. The package's version
#
# `F.attention_forward(q, k, v, mask_bias, dropout_p, rng)` is this function plus attention dropout on `P`
# (its mask is kept in the cache so the backward, and a gradient check, reuse it); it returns the context,
# the probabilities and the cache. `BertSelfAttention` wraps it with the three projections and the
# split/merge, under the Hugging Face names `query`, `key`, `value`. Put our weights into one and compare
# (in eval mode, so dropout is off):

# %%
C_pkg, P_pkg, cache_pkg = F.attention_forward(q, k, v, mask_bias)
dC = rng.standard_normal(C_pkg.shape)
C_hand, cache_hand = attention_forward_by_hand(q, k, v, mask_bias)
diffs = [np.abs(a - b).max()
         for a, b in zip(F.attention_backward(dC, cache_pkg), attention_backward_by_hand(dC, cache_hand))]
print(f"F.attention vs by hand: context {np.abs(C_pkg - C_hand).max():.1e}, dq/dk/dv {max(diffs):.1e}")

config = BertConfig(vocab_size=10, hidden_size=H, num_attention_heads=A, intermediate_size=4 * H,
                    num_hidden_layers=1)
attention = BertSelfAttention(config, np.random.default_rng(0)).astype(np.float64).eval()
for layer, W, b in ((attention.query, Wq, bq), (attention.key, Wk, bk), (attention.value, Wv, bv)):
    layer.weight.data[...], layer.bias.data[...] = W, b
out_module, probs_module = attention.forward(x, mask_bias)
print(f"BertSelfAttention vs by hand: output {np.abs(out_module - out_m).max():.1e}, "
      f"probabilities {np.abs(probs_module - P_m).max():.1e}")

# %% [markdown]
# ## 6. A parameter with exactly zero gradient: the key bias
#
# Write the key of token j as `k_j = Wk x_j + bk`. Then
#
#     S[i, j] = q_i . k_j / sqrt(D) = q_i . (Wk x_j) / sqrt(D)  +  q_i . bk / sqrt(D)
#
# The second term depends on the query `i` but **not on the key `j`**: it adds the same number to every
# entry of row i. Softmax ignores such a shift (lesson 02), so `P`, the output and the loss do not depend on
# `bk` at all, and its gradient is exactly zero. (In the backward: `dbk = sum_j dk_j`, and the rows of `dS`
# sum to zero.) The query bias has no such luck: `bq . k_j` does vary with `j`.

# %%
attention.zero_grad()
attention.backward(rng.standard_normal(out_module.shape))
for name, grad in attention.named_grads():
    if name.endswith("bias"):
        print(f"max |d {name:11}| = {np.abs(grad).max():.1e}")

out_before = attention.forward(x, mask_bias)[0]
attention.key.bias.data += 5.0                                  # move the key bias a long way
out_after = attention.forward(x, mask_bias)[0]
attention.key.bias.data -= 5.0
print(f"output change after adding 5 to every key bias: {np.abs(out_after - out_before).max():.1e}")

# %% [markdown]
# The analytic gradient is rounding noise of order 1e-15, and moving the bias by 5 changes the output only
# by rounding. The gradient checker knows about this case: where both the analytic and the numerical
# gradient are below the noise level of the finite difference, it reports 0. Pretrained checkpoints still
# carry a key bias (it is simply never trained away from its initial zero; and because BERT's AdamW has an
# `eps` of 1e-6, gradients of 1e-15 cannot be amplified into real steps).
#
# Finally, the package's own checks: the attention pair (with dropout and padding) and the whole module.

# %%
results = checks.run_check("attention", seed=0) + checks.run_check("BertSelfAttention", seed=0)
print(gradcheck.format_table(results))

# %% [markdown]
# ## What you should see
#
# Seed 0, float64, tolerance 1e-6 relative:
#
# - Row sums of `P` all `1.`; head 0 of the many-head version equals the single head (max diff `0.0`).
# - Scaling: std of `q.k` about **2.0** for D = 4 and **8.0** for D = 64; after dividing by sqrt(D) both
#   are about **1.0** (quick mode: the same to about ±0.05).
# - `exp(-10000) = 0.0` in both float64 and float32; largest attention on a padded key **0.0**; changing the
#   padding's vectors changes the real tokens' outputs by **0.0**.
# - The heatmap `lessons/figures/04_attention_padding.png`: the two `[PAD]` columns are at 0 (darkest) in
#   both heads, while the `[PAD]` rows (padded queries) are ordinary distributions over the real keys.
# - `attention by hand`: `q`, `k`, `v` all `ok`, each error below 1e-7 (2.3e-08, 7.5e-09 and
#   1.3e-08 on our machine); padded keys' `dK` and `dV` exactly `0.0`.
# - Package vs by hand: `0.0e+00` for the context, the gradients, the module's output and probabilities.
# - Bias gradients: `query.bias` **3.1e+00**, `value.bias` **4.3e+00**, `key.bias` of order 1e-15
#   (rounding: 1.1e-15 here); adding 5 to the key bias changes the output by about as little
#   (1.2e-15).
# - `run_check`: all 10 tensors `ok`, the worst below 1e-7 (3.5e-08 on our machine);
#   `BertSelfAttention/key.bias` reports `0.00e+00`.
#
# The gradient-check errors are float64 rounding in the finite differences: their digits change with
# the CPU and the BLAS library (how sums are ordered and vectorised), so they are given as bounds.
#
# ## Exercises
#
# 1. **Forget the scale in the backward.** Drop `s` from `dq` and `dk` in `attention_backward_by_hand`.
#    Predict the relative error the check reports for `q` and `k` (D = 4), and whether `v` fails. Run it.
# 2. **A weaker mask.** Replace -10000 by -10. Is a padded key's attention still exactly 0? Do the real
#    tokens' outputs still ignore the padding? Which check, if any, fails? (Think before running: the
#    backward never reads the mask.)
# 3. **Where does the value bias go?** Show on paper that `dbv = sum over queries and keys of P^T dC`
#    reduces to `sum_i dC_i` (summed over heads' slices), because each row of `P` sums to 1; compare with
#    the printed `value.bias` gradient.
# 4. **Rows vs columns.** Add the mask to the *rows* of `S` (`mask_bias[:, None, :, None]`) instead of the
#    columns. What happens to the attention of a padded query, and to real tokens? Does the real tokens'
#    output still ignore the padding?
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `attention_head` and `multihead_attention` (the 1/sqrt(D), the mask's axis).
