# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 08 — Pretraining: MLM and NSP heads, tied embeddings, AdamW with warmup; watching it learn
#
# **Run time:** about 2-4 minutes on a 2-core laptop (we measured 2 to 3.5 minutes on one core of a busy
# one), most of it the 400-step pretraining run of section 5 (quick mode `MINIBERT_QUICK=1`: about 15-30 s,
# with a smaller corpus slice, batch and run). Builds on
# lesson 05 (the encoder, `BertModel`) and lesson 07 (the instances: NSP pairs, 80/10/10 masking).
#
# Lesson 07 turned text into instances; lesson 05 built the encoder. Here we put BERT's two pretraining
# heads on top of the encoder, look at the one weight matrix used twice (the word embeddings, tied to the
# output layer), write the loss, the optimiser and its schedule, and then train a tiny BERT for a few
# hundred steps and watch it learn. At the end we compare it with the model that ships in
# `data/pretrained/tiny/`, which the same code trained for 8,000 steps.

# %%
import math
import tempfile
import textwrap
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minibert import functional as F
from minibert import checks, gradcheck, kernels, lessons, plots
from minibert.inference import fill_mask
from minibert.models import BertForPreTraining
from minibert.optim import AdamW, linear_warmup_decay, triples_from_model
from minibert.paths import data_dir, data_path
from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
from minibert.pretraining.trainer import Trainer, TrainConfig, build_model, evaluate
from minibert.tokenization import BertTokenizer

QUICK, FIGURES = lessons.setup(globals().get("__file__"))
SEED = 0                                 # the seed of `minibert pretrain` and of the shipped model
np.set_printoptions(precision=4, suppress=True)
rng = np.random.default_rng(SEED)
WORK = tempfile.TemporaryDirectory(prefix="minibert-lesson08-")   # prepared data and the run's checkpoint
work = Path(WORK.name)
print(f"kernels: {kernels.backend()}; quick mode: {QUICK}")

# %% [markdown]
# ## 0. Data to look at
#
# We prepare instances exactly as lesson 07 did, with the bundled 4,096-token vocabulary
# (`data/vocab.txt`): the first documents of `data/corpus/train.txt` for training, and all of
# `data/corpus/heldout.txt` (documents never used for training) for evaluation, masked with the seed
# `minibert evaluate` uses (12345), so the full-mode held-out numbers below are the ones that command prints.

# %%
N_LINES = 2_000 if QUICK else 20_000
tokenizer = BertTokenizer.from_pretrained(data_path("vocab.txt"))
V = tokenizer.vocab_size
lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()
end = lines.index("", N_LINES)           # stop at a document boundary
(work / "corpus.txt").write_text("\n".join(lines[:end + 1]) + "\n", encoding="utf-8")
t0 = time.perf_counter()
prepare([work / "corpus.txt"], tokenizer, work / "train", DataConfig(dupe_factor=2), seed=SEED)
prepare([data_path("corpus", "heldout.txt")], tokenizer, work / "heldout", DataConfig(dupe_factor=1), seed=12345)
train_data, heldout = PretrainingDataset(work / "train"), PretrainingDataset(work / "heldout")
print(f"first {end + 1:,} lines of train.txt -> {len(train_data):,} training instances; heldout.txt -> "
      f"{len(heldout):,} held-out instances ({time.perf_counter() - t0:.1f} s)")

batch = train_data.batch(train_data.order(SEED)[:8], trim_padding=True)   # one batch of B = 8
for name, array in batch.items():
    print(f"  {name:22} {str(array.dtype):8} {array.shape}")

# %% [markdown]
# ## 1. The two heads
#
# `BertForPreTraining` is `BertModel` (lesson 05) plus two small heads:
#
#     seq, pooled = BertModel(input_ids, token_type_ids, attention_mask)       (B, T, H), (B, H)
#     masked LM:      x = seq[b, masked_lm_positions[b, p]]                     (B, P, H)  gather
#                     h = LayerNorm(GELU(x W_t^T + b_t))                        (B*P, H)   "transform"
#                     logits = h E^T + b_out                                    (B*P, V)   decoder
#     next sentence:  logits = pooled W_nsp^T + b_nsp                           (B, 2)
#
# E is the word-embedding matrix (V, H) of the input: the decoder has no weight of its own (section 2).
# We take a freshly initialised tiny model (the preset `minibert pretrain` uses: L2 H128 A2 I512) and
# compute both heads by hand from its modules' arrays.

# %%
model = build_model("tiny", V, SEED, 128)          # = BertForPreTraining(BertConfig.preset("tiny", ...), rng)
c = model.config
H, L, I = c.hidden_size, c.num_hidden_layers, c.intermediate_size
print(f"tiny: L={L} H={H} A={c.num_attention_heads} I={I} V={V}; {model.num_parameters():,} parameters")
model.eval()                                       # no dropout: the by-hand numbers must match exactly

ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
positions = batch["masked_lm_positions"]
B, T = ids.shape
P = positions.shape[1]
enc = model.bert.forward(ids, types, mask)
seq, pooled = enc.last_hidden_state, enc.pooler_output                     # (B, T, H), (B, H)
gathered = seq[np.arange(B)[:, None], positions]                           # (B, P, H)
tr = model.cls.predictions.transform
u = gathered.reshape(B * P, H) @ tr.dense.weight.data.T + tr.dense.bias.data
h, _ = F.layernorm_forward(F.gelu_forward(u)[0], tr.LayerNorm.weight.data, tr.LayerNorm.bias.data, c.layer_norm_eps)
E = model.bert.embeddings.word_embeddings.weight.data                      # (V, H)
mlm_logits = h @ E.T + model.cls.predictions.bias.data                     # (B*P, V)
nsp = model.cls.seq_relationship
nsp_logits = pooled @ nsp.weight.data.T + nsp.bias.data                    # (B, 2)
print(f"seq {seq.shape}, pooled {pooled.shape}, gathered {gathered.shape}, h {h.shape}, "
      f"MLM logits {mlm_logits.shape}, NSP logits {nsp_logits.shape}")

out = model.forward(**batch)                       # the package, with the labels: logits and losses
print(f"package: prediction_logits {out.prediction_logits.shape}, seq_relationship_logits "
      f"{out.seq_relationship_logits.shape}")
scored = batch["masked_lm_weights"].reshape(-1) != 0      # the package skips padding predictions (w = 0)
print(f"max |package - by hand|: MLM "
      f"{np.abs(out.prediction_logits.reshape(B * P, V)[scored] - mlm_logits[scored]).max():.1e}, "
      f"NSP {np.abs(out.seq_relationship_logits - nsp_logits).max():.1e}")
print(f"padding predictions: {int((~scored).sum())} of {B * P} rows, not computed by the package (logits 0 "
      f"there): {not out.prediction_logits.reshape(B * P, V)[~scored].any()}")

# %% [markdown]
# (The differences are float32 rounding: the package fuses the bias into the Numba GELU kernel.) Rows
# of padding predictions (w = 0, where a sequence has fewer masked tokens than P) are not computed at
# all: they add nothing to the loss, and on the bundled corpus they are 62% of the B P rows.
#
# **Why only the masked positions.** The loss needs the MLM logits only where a prediction is made, P =
# 20 of T = 128 positions at most (`max_predictions_per_seq`). The decoder is the most expensive matrix
# product of a small BERT: 2 H V FLOPs per position against about L (24 H^2 + 4 T H) for the whole encoder.
# The original BERT gathers the P rows first; Hugging Face runs the head at all T positions (its
# `prediction_logits` is (B, T, V), ours (B, P, V)). Counting FLOPs of one forward for a batch of 32:

# %%
Bf, Tf, Pf = 32, 128, 20
encoder = Bf * Tf * L * (2 * 4 * H * H + 2 * 2 * H * I + 2 * 2 * Tf * H)    # QKVO, feed-forward, QK^T and PV
decoder_all, decoder_gathered = 2 * Bf * Tf * H * V, 2 * Bf * Pf * H * V
print(f"B={Bf} T={Tf} P={Pf}: encoder {encoder / 1e9:.2f} GFLOP; decoder at all T {decoder_all / 1e9:.2f} GFLOP, "
      f"at the P gathered positions {decoder_gathered / 1e9:.2f} GFLOP: {decoder_all / decoder_gathered:.1f}x fewer")
print(f"whole forward (encoder + decoder): {(encoder + decoder_all) / (encoder + decoder_gathered):.1f}x fewer FLOPs")

Bt = 8 if QUICK else 32                     # time the model's forward both ways on a real batch
tb = train_data.batch(train_data.order(SEED)[:Bt], trim_padding=False)     # T = 128: no trimming
timings = {}
for label, pos in (("all T", None), ("gathered P", tb["masked_lm_positions"])):
    best = float("inf")
    for _ in range(2 if QUICK else 3):
        t0 = time.perf_counter()
        model.forward(tb["input_ids"], tb["token_type_ids"], tb["attention_mask"], pos)
        best = min(best, time.perf_counter() - t0)
    timings[label] = best
print(f"measured forward, B={Bt} T=128: MLM head at all T {1e3 * timings['all T']:.0f} ms, at the gathered "
      f"positions {1e3 * timings['gathered P']:.0f} ms ({timings['all T'] / timings['gathered P']:.1f}x)")

# %% [markdown]
# **The last layer, too.** The heads read `seq` at the gathered positions and at each [CLS] (the
# pooler's input), nowhere else. Below the last layer every position feeds the next layer's attention,
# so every row is needed. In the last layer, the rows the heads read still attend to every token, so
# every token's key and value is computed; but only those rows need a query, and after attention each
# row is on its own (output projection, residual, layer norm, feed-forward). So the package computes
# the last layer's queries, their attention (a sequence of n tokens with m rows read has (A, m, n)
# scores instead of (A, n, n)) and everything after it on those rows only (`BertModel.forward`'s
# `output_positions`, which `BertForPreTraining` passes). The skipped rows feed nothing, so the loss
# and every gradient are unchanged. Dropout still draws its random bits for every row, as the whole
# layer would, and keeps those of the computed rows: the masks, and every draw after them, are the
# same, so a training run follows the same path as before, to float32 rounding.
# `output_hidden_states=True` asks for every row:

# %%
real_batch = train_data.batch(train_data.order(SEED)[:8], trim_padding=True)
results = {}
for every_row in (True, False):                       # model is in eval mode: no dropout
    model.zero_grad()
    loss = model.forward(**real_batch, output_hidden_states=every_row).loss
    model.backward()
    results[every_row] = float(loss), {n: g.copy() for n, g in model.named_grads()}
# Relative to each tensor's largest entry; not the key biases: q . b_k is the same for every key of a
# query and softmax ignores it, so their true gradient is 0 and both runs' are rounding noise.
worst = max(np.abs(results[True][1][n] - results[False][1][n]).max() / np.abs(results[True][1][n]).max()
            for n in results[True][1] if not n.endswith("key.bias"))
b_, p_ = np.nonzero(real_batch["masked_lm_weights"])                         # the real predictions
read = set(zip(b_, real_batch["masked_lm_positions"][b_, p_])) | {(b, 0) for b in range(len(real_batch["input_ids"]))}
kept = len(read)                                                               # ... and every [CLS]
real_rows = int(real_batch["attention_mask"].sum())
print(f"last layer: {kept} of {real_rows} rows; loss {results[True][0]:.6f} with every row, "
      f"{results[False][0]:.6f} with these; largest gradient difference {worst:.1e} (relative)")
share = (2 * H * H + 2 * H * I) / (4 * H * H + 2 * H * I)     # query, output projection, feed-forward
print(f"query, output projection and feed-forward: {share:.0%} of a layer's linear FLOPs, skipped on "
      f"{1 - kept / real_rows:.0%} of the last layer's rows: {share * (1 - kept / real_rows) / L:.0%} of the "
      f"{L} layers' linear FLOPs")

# %% [markdown]
# The measured gain can exceed the FLOP ratio: at all T the logits are a (B, T, V) array, 64 MB for B = 32,
# written once here and, in training, read again by the softmax, the loss and the backward. This tiny model
# spends more on its output layer than on its two encoder layers; in BERT-base (H = 768, L = 12,
# V = 30,522) the encoder dominates, but gathering still saves about 18% of the forward FLOPs.
#
# **The gather's backward is a scatter-add.** `x = seq[b, positions[b, p]]` copies rows; its backward
# sends each row's gradient back to the position it came from and **adds** where a position was gathered
# twice. Positions repeat in practice: a sequence with fewer than P predictions is padded with position 0
# (and weight 0), and nothing stops a caller from asking for the same position twice. `dseq[idx] += g`
# is wrong there: NumPy's buffered fancy-index assignment keeps only one of the repeated rows.
# `np.add.at` adds them all. The test of an adjoint: for a linear map y = G x and its transpose G^T,
# `<G x, g> = <x, G^T g>` for every x and g.

# %%
xs = rng.standard_normal((2, 6, 3))                                 # (B, T, H)
pos = np.array([[1, 4, 0], [2, 2, 0]])                              # (B, P): position 2 twice in row 1
g = rng.standard_normal((2, 3, 3))                                  # upstream gradient (B, P, H)
rows = np.arange(2)[:, None]
scatter_add, buffered = np.zeros_like(xs), np.zeros_like(xs)
np.add.at(scatter_add, (rows, pos), g)
buffered[rows, pos] += g
print(f"<gather(x), g>       = {np.sum(xs[rows, pos] * g):+.6f}")
print(f"<x, add.at(g)>       = {np.sum(xs * scatter_add):+.6f}")
print(f"<x, buffered += g>   = {np.sum(xs * buffered):+.6f}   (one of the two rows for position 2 lost)")

# %% [markdown]
# ## 2. Tied weights: one matrix, two gradients
#
# The decoder's weight **is** the word-embedding Parameter (`Linear.tied`), so the checkpoint stores it
# once and `named_parameters()` lists it once. In the backward, E receives two contributions:
#
# * from the **input lookup** `E[input_ids]`: a scatter-add of the gradient arriving at the word-embedding
#   output into the rows of the tokens in the batch (lesson 05's `embedding_backward`);
# * from the **decoder** `logits = h E^T`: `dE = dlogits^T h`, a dense (V, H) matrix, every row nonzero
#   because the softmax gives every token some probability.
#
# Both backward passes write into the same `grad` array with `+=`, so after one backward it holds the sum.
# We compute each part separately, by hand, and check that they add up to it.

# %%
word = model.bert.embeddings.word_embeddings.weight
print("decoder weight is the word-embedding Parameter:", model.cls.predictions.decoder.weight is word)
names = [n for n, _ in model.named_parameters()]
print(f"named_parameters: {len(names)} arrays; 'cls.predictions.decoder.weight' listed: "
      f"{'cls.predictions.decoder.weight' in names}; tying saves V*H = {V * H:,} parameters")

model.zero_grad()
out = model.forward(**batch)
dwords = model.backward()                        # returns d(word-embedding output) (B, T, H)

targets = batch["masked_lm_ids"].reshape(-1)
weights = batch["masked_lm_weights"].reshape(-1).astype(np.float64)
logits64 = mlm_logits.astype(np.float64)
probs = np.exp(logits64 - logits64.max(-1, keepdims=True))
probs /= probs.sum(-1, keepdims=True)
dlogits = probs.copy()                            # d(MLM loss)/d logits = (softmax - onehot) * w / (sum w + 1e-5)
dlogits[np.arange(B * P), targets] -= 1
dlogits *= (weights / (weights.sum() + 1e-5))[:, None]
from_decoder = dlogits.T @ h.astype(np.float64)                                      # (V, H)
from_lookup = np.zeros((V, H))
np.add.at(from_lookup, ids.reshape(-1), dwords.reshape(-1, H).astype(np.float64))    # (V, H)

total = word.grad.astype(np.float64)
rel = np.abs(total - (from_lookup + from_decoder)).max() / np.abs(total).max()
print(f"|from lookup| = {np.linalg.norm(from_lookup):.4f}, |from decoder| = {np.linalg.norm(from_decoder):.4f}, "
      f"|grad| = {np.linalg.norm(total):.4f}")
print(f"max |grad - (lookup + decoder)| / max |grad| = {rel:.1e}")
nonzero = lambda a: int((np.abs(a).sum(axis=1) > 0).sum())   # noqa: E731
print(f"rows with gradient: from the lookup {nonzero(from_lookup)} (distinct tokens in the batch: "
      f"{len(np.unique(ids[mask == 1]))}), from the decoder {nonzero(from_decoder)} of {V}")

# %% [markdown]
# The lookup reaches only the rows of the tokens present in the batch (a hundred or two of the 4,096);
# the decoder reaches every row, and here, at initialisation, it is also the larger of the two. A backward
# that overwrote instead of adding would lose one of them: the model would still train, just worse, and
# nothing would crash, which is why the whole model has a gradient check. `run_check`
# builds a small float64 `BertForPreTraining` with dropout on, padding, batch 3 and masked positions
# `[[1, 4, 6], [2, 2, 0], [1, 2, 0]]` (weights `[[1, 1, 1], [1, 1, 0], [1, 1, 0]]`): the second row asks
# for position 2 twice, so a buffered `+=` in the scatter would fail it.

# %%
results = checks.run_check("BertForPreTraining", seed=0)
print(gradcheck.format_table([r for r in results if "word_embeddings" in r.tensor or r.tensor.startswith("cls.")]))
worst = max(results, key=lambda r: r.max_rel_error)
print(f"BertForPreTraining: {sum(r.ok for r in results)} of {len(results)} tensors ok, worst "
      f"{worst.max_rel_error:.1e} ({worst.tensor})")

# %% [markdown]
# Does the check notice a buffered scatter? Here is the heads' backward as `BertForPreTraining.backward`
# writes it, with the one bug planted; we swap it in for a single check.

# %%
def backward_with_buffered_scatter(self, dloss=1.0):
    rows, seq_shape, mlm_cache, nsp_cache = self.take_cache()       # rows: (b, t) of each scored prediction
    dgathered = self.cls.predictions.backward(kernels.cross_entropy_backward(dloss, mlm_cache))   # (R, H)
    dpooled = self.cls.seq_relationship.backward(kernels.cross_entropy_backward(dloss, nsp_cache))
    dseq = np.zeros(seq_shape, dtype=dgathered.dtype)
    dseq[rows] += dgathered                                         # the bug: np.add.at is right
    return self.bert.backward(dseq, dpooled)


correct_backward = BertForPreTraining.backward
BertForPreTraining.backward = backward_with_buffered_scatter
try:
    planted = checks.run_check("BertForPreTraining", seed=0)
finally:
    BertForPreTraining.backward = correct_backward
print(f"with the buffered scatter: {sum(r.ok for r in planted)} of {len(planted)} tensors ok:")
print(textwrap.fill(", ".join(r.tensor for r in planted if r.ok), 110, initial_indent="  ", subsequent_indent="  "))

# %% [markdown]
# What still passes is what the bug cannot reach: the parameters of the two heads (their gradients are
# computed before the scatter), the pooler (its gradient comes from NSP, not through the scatter) and the
# key biases (exactly zero gradient, lesson 04). Everything below the scatter fails, the word embeddings
# included: their lookup share passes through the encoder.

# %% [markdown]
# ## 3. The loss, and what it is at initialisation
#
#     MLM = sum_p w_p nll_p / (sum_p w_p + 1e-5)        nll_p = -log softmax(logits_p)[masked_lm_ids_p]
#     NSP = mean_b nll_b                                 over the B sequences
#     loss = MLM + NSP
#
# The weights are 1 for a real prediction and 0 for a padding one, so the MLM loss is the mean over real
# predictions, pooled over the whole batch (a sequence with 19 predictions counts 19 times as much as one
# with 1). The `1e-5` is BERT's guard against a batch without any prediction: the loss is then 0 instead of
# 0/0, and otherwise it changes the mean by a factor sum(w) / (sum(w) + 1e-5): less than one part in a
# million for any batch with at least 10 predictions.

# %%
nll = np.log(np.exp(logits64 - logits64.max(-1, keepdims=True)).sum(-1)) + logits64.max(-1) \
    - logits64[np.arange(B * P), targets]                                       # (B*P,)
mlm_by_hand = (weights * nll).sum() / (weights.sum() + 1e-5)
nsp64 = nsp_logits.astype(np.float64)
nsp_nll = np.log(np.exp(nsp64).sum(-1)) - nsp64[np.arange(B), batch["next_sentence_labels"]]
print(f"{int(weights.sum())} real predictions of {B * P} slots; MLM by hand {mlm_by_hand:.6f}, package "
      f"{float(out.mlm_loss):.6f}; NSP by hand {nsp_nll.mean():.6f}, package {float(out.nsp_loss):.6f}; "
      f"total {float(out.loss):.6f}")
print(f"plain mean over the real predictions {nll[weights == 1].mean():.6f}; with no prediction at all the "
      f"loss is {float(F.cross_entropy_forward(mlm_logits, targets, np.zeros(B * P, np.float32))[0])}")

# %% [markdown]
# **The loss at initialisation.** A model that knows nothing should give every token the probability 1/V
# and each NSP label 1/2, so its loss is `-log(1/V) - log(1/2) = ln V + ln 2`. Is a freshly initialised BERT
# that ignorant? The decoder's logits are `h . E_v` with h the output of a LayerNorm (mean 0, sum of squares
# H: norm sqrt(H)) and E_v ~ N(0, 0.02^2): so the logits are about N(0, s^2) with s = 0.02 sqrt(H) = 0.23.
# Small, but not zero: for Gaussian logits E[log sum_v exp(z_v)] ~ ln V + s^2 / 2, while the target's logit
# is 0 on average, so the MLM loss starts at about ln V + s^2 / 2. The NSP logits pass through the pooler's
# tanh and a second 0.02-scaled matrix and are tiny: NSP starts at ln 2.

# %%
s_pred, s_meas = 0.02 * math.sqrt(H), float(mlm_logits.std())
print(f"ln V = ln {V} = {math.log(V):.4f}, ln 2 = {math.log(2):.4f}, ln V + ln 2 = {math.log(V) + math.log(2):.4f}")
n_pred = int(weights.sum())
print(f"MLM logit spread: predicted s = 0.02 sqrt(H) = {s_pred:.3f}, measured {s_meas:.3f}; expected MLM loss "
      f"ln V + s^2/2 = {math.log(V) + s_meas ** 2 / 2:.4f} +- {s_meas / math.sqrt(n_pred):.3f} "
      f"(the scatter of a mean over {n_pred} predictions)")
print(f"at initialisation: MLM {float(out.mlm_loss):.4f}, NSP {float(out.nsp_loss):.4f}, total {float(out.loss):.4f}")

# %% [markdown]
# If your first loss is far from ln V + ln 2 (say 15, or 2), something is wrong before training has even
# started: the initialisation scale, a missing LayerNorm, labels that do not match the logits.
#
# ## 4. The optimiser: AdamW, no-decay groups, bias correction, warmup
#
# `minibert.optim.AdamW` is Adam with decoupled weight decay: `w -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * w)`.
# As in BERT, **LayerNorm parameters and every bias are not decayed**. Decay pulls a weight towards 0: a
# sensible prior for the entries of a weight matrix, but a LayerNorm gain's neutral value is 1 and a bias
# only shifts; pulling them to 0 fights the model without limiting what it can represent, and they are
# under 1% of the parameters. The decoder's output bias `cls.predictions.bias` is a bias too; the tied E
# is decayed, once.

# %%
opt = AdamW(triples_from_model(model), lr=1e-3, weight_decay=0.01)
groups = {True: [], False: []}
for name, p, decay in zip(opt.names, opt.params, opt.decay):
    groups[decay].append((name, p.size))
for decay, label in ((True, "decayed"), (False, "not decayed")):
    print(f"{label:12} {len(groups[decay]):2} arrays, {sum(n for _, n in groups[decay]):9,} parameters, e.g. "
          + ", ".join(name for name, _ in groups[decay][:3]))

# %% [markdown]
# **Bias correction.** m and v start at 0, so in the first steps they are too small: after t steps of a
# constant gradient g, `m = (1 - b1^t) g` and `v = (1 - b2^t) g^2`. Adam divides them by those factors.
# BERT's original optimiser did not, so its update `m / sqrt(v)` is `(1 - b1^t) / sqrt(1 - b2^t)` times the
# corrected one: v (b2 = 0.999) fills more slowly than m (b1 = 0.9), and the early steps are *larger*. The
# factor does not depend on the gradients, so two optimisers fed the same random gradients should show it
# exactly (up to eps):

# %%
b1, b2 = 0.9, 0.999
w_on, w_off = np.zeros(1000), np.zeros(1000)
g_on, g_off = np.zeros(1000), np.zeros(1000)
adam_on = AdamW([("w", w_on, g_on)], lr=1e-3, weight_decay=0.0, correct_bias=True)
adam_off = AdamW([("w", w_off, g_off)], lr=1e-3, weight_decay=0.0, correct_bias=False)
grad_rng = np.random.default_rng(1)
report = (1, 2, 5, 10, 100, 1000)
print(f"{'t':>5} {'(1-b1^t)/sqrt(1-b2^t)':>22} {'measured ratio':>15} {'|update|/lr on':>15} {'off':>7}")
for t in range(1, 1001):
    g_on[:] = g_off[:] = grad_rng.standard_normal(1000)
    before_on, before_off = w_on.copy(), w_off.copy()
    adam_on.step()
    adam_off.step()
    if t in report:
        size_on = np.sqrt(np.mean((w_on - before_on) ** 2)) / 1e-3          # RMS update in units of lr
        size_off = np.sqrt(np.mean((w_off - before_off) ** 2)) / 1e-3
        print(f"{t:5} {(1 - b1 ** t) / math.sqrt(1 - b2 ** t):22.3f} {size_off / size_on:15.3f} "
              f"{size_on:15.3f} {size_off:7.3f}")

# %% [markdown]
# With bias correction the first update moves every weight by exactly lr (`m_hat / sqrt(v_hat) = g / |g|`);
# without it, by 3.2 lr, and the excess grows to 6.5x around t = 10 before it fades (1.26x at t = 1000).
# Mosbach et al. (2021) traced part of BERT's fine-tuning instability to these large early steps.
#
# **Warmup and linear decay.** The learning rate climbs linearly from 0 to its peak over the first 10% of
# the steps, then falls linearly to 0 (`linear_warmup_decay`, Hugging Face's schedule; the first update has
# lr = 0). Warmup protects the start, when Adam's moment estimates rest on a handful of gradients and the
# randomly initialised network's gradients are at their least informative. It also hides most of the
# missing bias correction: the effective step `lr(t) x factor(t)` is small while the factor is large.

# %%
def schedule(steps, base_lr=1e-3, warmup_fraction=0.1):
    return np.array([linear_warmup_decay(s, base_lr, int(warmup_fraction * steps), steps) for s in range(steps)])


STEPS = 30 if QUICK else 400             # the short run of section 5
lr_short, lr_shipped = schedule(STEPS), schedule(8000)
t = np.arange(1, 8001)
factor = (1 - b1 ** t) / np.sqrt(1 - b2 ** t)
print("shipped run (8,000 steps, warmup 800): lr at updates 1, 2, 800, 801, 4000, 8000: "
      + ", ".join(f"{lr_shipped[i]:.2e}" for i in (0, 1, 799, 800, 3999, 7999)))
print(f"largest lr(t) x factor(t) without bias correction: {(lr_shipped * factor).max():.2e} at update "
      f"{int((lr_shipped * factor).argmax()) + 1}, against a peak lr of {lr_shipped.max():.2e}")

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, lrs, label in ((axes[0], lr_short, f"section 5: {STEPS} steps"),
                       (axes[1], lr_shipped, "shipped model: 8,000 steps")):
    ax.plot(np.arange(1, len(lrs) + 1), lrs)
    ax.set(xlabel="update", ylabel="learning rate", title=f"{label}, warmup 10%, peak 1e-3")
axes[2].semilogx(t, factor, label="factor (1 - b1^t) / sqrt(1 - b2^t)")
axes[2].semilogx(t, lr_shipped * factor / lr_shipped.max(), label="factor x lr(t) / peak lr (shipped schedule)")
axes[2].axhline(1, color="gray", lw=0.8, ls="--")
axes[2].set(xlabel="update t", title="step without bias correction / step with")
axes[2].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18))   # below: the curves fill it
fig.tight_layout()
fig.savefig(FIGURES / "08_schedule.png", dpi=100)
print("saved", FIGURES / "08_schedule.png")

# %% [markdown]
# The trainer also clips the global gradient norm at 1.0 before each step (`clip_grad_norm`), as BERT does.
#
# ## 5. A short pretraining run
#
# `Trainer` runs the loop: zero the gradients, forward with the labels, backward, clip, AdamW step at
# `lr(step)`; every `eval_every` steps it evaluates on held-out batches (eval mode: no dropout). It writes
# `metrics.jsonl` and a checkpoint. This is exactly what `minibert pretrain` does, on a slice of the
# corpus and for a few hundred steps.
#
# Two yardsticks before we start. A model that learned only **which tokens are frequent** predicts the
# unigram distribution of the masked tokens: its loss is the cross-entropy of the held-out targets under
# the training frequencies, and its accuracy that of always guessing the most frequent token. For NSP,
# chance is 0.5, but the held-out set, like the training set, has more "random B" than "IsNext" pairs
# (lesson 07): always answering "random" scores the label-1 share, and predicting that share as a
# probability for every pair gives a loss a little below ln 2 (the entropy of the labels).

# %%
w_tr = train_data.arrays["masked_lm_weights"] == 1
w_ho = heldout.arrays["masked_lm_weights"] == 1
counts = np.bincount(train_data.arrays["masked_lm_ids"][w_tr], minlength=V) + 1.0    # add-one smoothing
unigram_loss = float(-np.log(counts / counts.sum())[heldout.arrays["masked_lm_ids"][w_ho]].mean())
top_token = int(counts.argmax())
unigram_acc = float((heldout.arrays["masked_lm_ids"][w_ho] == top_token).mean())
majority = float(heldout.arrays["next_sentence_labels"].mean())
print(f"unigram baseline: loss {unigram_loss:.3f}, accuracy {unigram_acc:.3f} (always "
      f"{tokenizer.convert_ids_to_tokens(top_token)!r}); uniform: loss ln V = {math.log(V):.3f}")
label_entropy = -(majority * math.log(majority) + (1 - majority) * math.log(1 - majority))
print(f"NSP: chance 0.500; label 1 (random B) in {majority:.3f} of the held-out pairs; predicting that share "
      f"for every pair gives the loss {label_entropy:.3f} (ln 2 = {math.log(2):.3f})")

# %%
BATCH = 8 if QUICK else 32
EVAL_BATCHES = 4 if QUICK else 16                  # x BATCH held-out instances at every evaluation
config = TrainConfig(steps=STEPS, batch_size=BATCH, lr=1e-3, warmup_fraction=0.1, seed=SEED,
                     eval_every=STEPS // 3 if QUICK else 50, eval_batches=EVAL_BATCHES, save_every=STEPS,
                     log_every=STEPS // 3 if QUICK else 50)
scratch = build_model("tiny", V, SEED, 128)
vocab = tokenizer.convert_ids_to_tokens(range(V))
trainer = Trainer(scratch, train_data, config, work / "run", heldout, vocab)
print(f"training from scratch: {STEPS} steps of {BATCH} instances ({STEPS * BATCH / len(train_data):.2f} epochs "
      f"of {len(train_data):,}), peak lr {config.lr}, warmup {config.warmup_steps} steps, seed {SEED}")
t0 = time.perf_counter()
trainer.train()
train_seconds = time.perf_counter() - t0
print(f"trained in {train_seconds:.0f} s")

records = plots.read_jsonl(work / "run" / "metrics.jsonl")
print("first steps' losses: " + ", ".join(f"{r['loss']:.3f}" for r in records[:3])
      + f" (ln V + ln 2 = {math.log(V) + math.log(2):.3f})")
norms = np.array([r["grad_norm"] for r in records])
print(f"gradient norm before clipping: median {np.median(norms):.2f}, largest {norms.max():.2f} (step "
      f"{int(norms.argmax()) + 1}); clipped to 1.0 in {np.mean(norms > 1.0):.0%} of the steps")
print(f"{'step':>5} {'train MLM (last 10)':>20} {'held-out MLM':>13} {'MLM acc':>8} {'NSP acc':>8}")
for r in (r for r in records if "eval_mlm_loss" in r):
    recent = np.mean([q["mlm_loss"] for q in records[max(0, r["step"] - 10):r["step"]]])
    print(f"{r['step']:5} {recent:20.3f} {r['eval_mlm_loss']:13.3f} {r['eval_mlm_accuracy']:8.3f} "
          f"{r['eval_nsp_accuracy']:8.3f}")

# %% [markdown]
# The gradient norm is above the clipping threshold most of the time here. With Adam that costs little:
# Adam divides by the running root mean square of the gradients, so scaling every step's gradient by the
# same factor leaves the update unchanged. Clipping matters when one step's gradient is much larger than
# its neighbours' (a spike from an odd batch): it keeps that step from dominating m and v.
#
# Read the table against the yardsticks. In the first 50 steps the MLM loss falls from ln V to about the
# **unigram loss**, and the accuracy is exactly the unigram baseline: the cheapest thing to learn is which
# tokens are frequent (the output bias `cls.predictions.bias` alone can hold that). Then the held-out loss
# goes **below** the unigram loss and the accuracy above the baseline: the model has started to use the
# context, slowly. NSP is the slow one: its loss goes from ln 2 to about the label entropy, which is what
# predicting the label shares gives, and its accuracy stays at the majority rate; learning to tell a real
# continuation from a random one needs more steps than this run has (the 8,000-step run of section 6
# is past the majority rate at its first evaluation, step 1,000). The figure shows the training losses (moving average),
# the held-out evaluations and the yardsticks:

# %%
window = max(1, len(records) // 30)
steps_axis = [r["step"] for r in records]
evals = [r for r in records if "eval_mlm_loss" in r]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(steps_axis, plots.smooth([r["mlm_loss"] for r in records], window), label="MLM (train)")
axes[0].plot(steps_axis, plots.smooth([r["nsp_loss"] for r in records], window), label="NSP (train)")
axes[0].plot([r["step"] for r in evals], [r["eval_mlm_loss"] for r in evals], "o-", label="MLM (held out)")
axes[0].axhline(math.log(V), color="gray", ls=":", lw=1, label="ln V (uniform)")
axes[0].axhline(unigram_loss, color="gray", ls="--", lw=1, label="unigram")
axes[0].axhline(math.log(2), color="gray", ls="-.", lw=1, label="ln 2")
axes[0].set(xlabel="step", ylabel="loss", title=f"losses (moving average of {window})")
axes[0].legend(fontsize=7)
axes[1].plot([r["step"] for r in evals], [r["eval_mlm_accuracy"] for r in evals], "o-", label="MLM accuracy")
axes[1].plot([r["step"] for r in evals], [r["eval_nsp_accuracy"] for r in evals], "o-", label="NSP accuracy")
axes[1].axhline(unigram_acc, color="C0", ls="--", lw=1, label="MLM: unigram baseline")
axes[1].axhline(0.5, color="C1", ls=":", lw=1, label="NSP: chance")
axes[1].axhline(majority, color="C1", ls="--", lw=1, label="NSP: always 'random'")
axes[1].set(xlabel="step", ylim=(0, 1), title="held-out accuracy")
axes[1].legend(fontsize=7)
fig.tight_layout()
fig.savefig(FIGURES / "08_pretraining.png", dpi=100)
print("saved", FIGURES / "08_pretraining.png")

# %% [markdown]
# ## 6. The shipped checkpoint: how it was made, and how it compares
#
# `data/pretrained/tiny/` holds the model that lessons 09-14 start from. It was made by
#
# ```
# minibert pretrain --preset tiny --steps 8000 --batch-size 32 --lr 1e-3 --seed 0 \
#     --dupe-factor 5 --eval-every 1000 --save-every 1000
# ```
#
# on the whole bundled corpus: 28,282 documents x 5 passes = 261,214 instances, so 8,000 steps of 32 are
# about one epoch; warmup 800 steps, then linear decay. Same model size, vocabulary, loss, optimiser,
# schedule shape and seed as section 5: only the number of steps and the amount of text differ. Its model
# card, `data/pretrained/tiny/README.md`, records the run: 34 minutes on 2 cores (one BLAS and one Numba
# thread), the held-out numbers every 1,000 steps, and a note on reproducing it (the dropout masks have
# been drawn differently since, so a rerun lands within about 0.01 of its numbers, not on them). Here we
# evaluate it on the same held-out instances as our short run (in quick mode: the first 32), and ask both
# to fill in a few masks.

# %%
final_batches = EVAL_BATCHES if QUICK else None    # None: every held-out instance
eval_batch = BATCH if QUICK else 64
train_docs = train_data.meta["splits"]["train"]["documents"]
print(f"section 5: {STEPS:,} steps x {BATCH} on {train_docs:,} documents; shipped: 8,000 steps x 32 on 28,282 "
      f"documents ({8000 * 32 / (STEPS * BATCH):.0f}x the instances seen, {28282 / train_docs:.0f}x the text)")
rows = {f"from scratch, {STEPS} steps (section 5)": evaluate(scratch, heldout, eval_batch, final_batches)}
shipped_dir = data_dir() / "pretrained" / "tiny"
shipped = None
if (shipped_dir / "config.json").is_file() and (shipped_dir / "model.safetensors").is_file():
    shipped = BertForPreTraining.from_pretrained(shipped_dir)
    heldout.check_vocab(BertTokenizer.from_pretrained(shipped_dir).convert_ids_to_tokens(range(V)))
    rows["shipped data/pretrained/tiny (8,000 steps)"] = evaluate(shipped, heldout, eval_batch, final_batches)
    card = shipped_dir / "README.md"
    print(f"loaded {shipped_dir} ({shipped.num_parameters():,} parameters); model card: "
          + (str(card) if card.is_file() else "not found"))
else:
    print(f"note: no shipped checkpoint in {shipped_dir}; only the short run is evaluated. Make one with the "
          f"command above (about half an hour), then load it with BertForPreTraining.from_pretrained(folder).")
n_eval = next(iter(rows.values()))["eval_predictions"]
print(f"\nheld-out evaluation ({n_eval:,} masked predictions):")
print(f"{'model':44} {'MLM loss':>9} {'MLM acc':>8} {'NSP acc':>8}")
for name, r in rows.items():
    print(f"{name:44} {r['eval_mlm_loss']:9.3f} {r['eval_mlm_accuracy']:8.3f} {r['eval_nsp_accuracy']:8.3f}")
print(f"{'unigram baseline / NSP majority':44} {unigram_loss:9.3f} {unigram_acc:8.3f} {majority:8.3f}")

# %%
CLOZE = ["the farmers [MASK] the cows every morning .", "robins are [MASK] .", "cows eat [MASK] .",
         "the dog that chases the cats [MASK] happy ."]
models = {"short run": scratch, **({"shipped": shipped} if shipped is not None else {})}
for text in CLOZE:
    print(text)
    for name, m in models.items():
        top = fill_mask(m, tokenizer, text, top_k=3)[0]
        print(f"  {name:10} " + ", ".join(f"{token} ({p:.2f})" for token, p in top))
WORK.cleanup()

# %% [markdown]
# The short run answers every sentence with the same few frequent tokens: it has learned what is common,
# not yet what fits. The shipped model reads the context, up to a point. "Robins are birds" is right. For
# "cows eat [MASK] ." it proposes adverbs, which the corpus's stories do put after "eat" ("... ate
# quietly"), rather than the fact sheets' "grass". For the farmers it proposes prepositions, as if "the
# farmers with the cows" were the subject, although the sentence would then have no verb. And in the last
# sentence the subject is "the dog", singular, yet the model prefers "were" and "are", plural, like the
# nearer noun "the cats". Agreement across such an *attractor*, and knowledge of facts, are what lesson 09
# measures, on hundreds of sentences instead of a few.

# %% [markdown]
# ## What you should see
#
# Seed 0 for the training instances, the model and the run; seed 12345 for the held-out instances. Float32
# numbers are from the Numba kernels on one BLAS thread; another BLAS or thread count changes the order of
# float32 sums, so expect the training numbers to move in the third decimal (losses +- 0.02, accuracies
# +- 0.01). Quick-mode values in brackets where they differ.
#
# - Data: the first 20,002 lines of `train.txt` give 9,001 training instances [2,006 lines, 902]; the
#   held-out file 1,108 instances. The tiny model has **975,362 parameters** in 46 arrays.
# - Heads by hand = package: max difference 3.6e-07 (MLM), 7.5e-09 (NSP), float32 rounding; 105 of the 160
#   prediction rows are padding, not computed by the package (logits 0 there) [99]. FLOPs for B=32,
#   T=128, P=20: encoder 3.76 GFLOP, decoder 4.29 GFLOP at all T and 0.67 gathered, **6.4x fewer**; the
#   whole forward 1.8x. Measured forward: 1.8-2.2x faster gathered (timings vary with the machine).
# - Adjoint test: `<gather(x), g>` = `<x, add.at(g)>` = -5.268079; the buffered `+=` gives -3.664081.
# - Tied weights: |from lookup| 1.5013, |from decoder| 2.2850, |grad| 2.7411 [1.4049, 2.1231, 2.5422];
#   lookup + decoder = grad to **3e-7** relative (float32); the lookup touches 150 rows, as many as the
#   batch has distinct tokens [162], the decoder all 4,096. Tying saves 524,288 parameters.
# - `run_check("BertForPreTraining")`: **46 of 46** ok, worst 1.6e-07; with the buffered scatter
#   **11 of 46** (the heads, the pooler, the key biases).
# - Loss at initialisation: MLM 8.3080, NSP 0.6932, total **9.0012** [8.3423, 9.0354] against
#   ln V + ln 2 = 9.0109 (within 0.05: the batch holds only 55 [61] predictions); logit spread 0.227
#   against the predicted 0.226. The weighted mean equals the plain mean over real predictions to 1e-6,
#   and a batch without predictions has loss 0.0.
# - AdamW groups: 18 arrays / 967,168 parameters decayed, 28 arrays / 8,194 not. Bias correction: the
#   measured ratio equals (1-b1^t)/sqrt(1-b2^t) to 0.001: 3.162, 4.250, 5.797, 6.528, 3.241, 1.258 at
#   t = 1, 2, 5, 10, 100, 1000 (measured 3.161 and 4.249 at t = 1 and 2); the corrected first update is exactly 1.000 lr. With the shipped schedule
#   the largest `lr(t) x factor(t)` is 1.35e-3, at update 801.
# - Yardsticks: unigram loss 5.518 [5.768: counts from fewer instances], accuracy 0.126 (always `.`); NSP
#   label 1 in 0.597 of the held-out pairs, label entropy 0.674.
# - The run, 400 steps of 32 (1.42 epochs): first losses 9.031, 9.023, 9.030. Held-out MLM loss / accuracy
#   at steps 50, 200, 400: 5.630 / 0.126, 5.366 / 0.158, 5.258 / 0.170, NSP accuracy 0.57-0.61. Final,
#   on all 1,108 held-out instances (8,491 predictions): **MLM loss 5.227, accuracy 0.178, NSP 0.591**,
#   against 5.518 / 0.126 / 0.597 for the yardsticks. Gradient norm before clipping: median 1.73, clipped
#   in 94% of the steps. Training took 65 s on one core of a quiet machine (110-190 s on a busy one).
#   [Quick: 30 steps of 8; held-out MLM loss 7.450 -> 6.568 over 32 instances, accuracy 0.132.]
# - `fill_mask` after the short run: `a` (0.16-0.21) for the first three sentences, `.` for the last:
#   the same few frequent tokens whatever the context.
# - The shipped model on the same held-out instances: **MLM loss 2.122, accuracy 0.545, NSP 0.736**, the
#   first row of its model card (`minibert evaluate data/pretrained/tiny` prints the same) [first 32
#   instances: 2.082, 0.543, 0.719]; four times the unigram accuracy and well above the NSP majority rate.
#   Its `fill_mask` answers: `with` / `behind` / `from` (0.16, 0.12, 0.11), `birds` (0.18) / `reptiles`,
#   `gently` / `quietly` / `happily`, and `were` (0.69) / `are` (0.29) / `was` (0.01) for the dog that chases
#   the cats. Without `data/pretrained/tiny/` the lesson prints a note instead of these rows.
#
# ## Exercises
#
# 1. **Untie the decoder.** In `BertLMPredictionHead.__init__` (`minibert/models/pretraining.py`) give
#    the decoder its own weight: `self.decoder = Linear(config.hidden_size, config.vocab_size, rng,
#    config.initializer_range, bias=False)`. Predict the new parameter count of the tiny model, the loss at
#    initialisation, and whether the short run's held-out MLM loss after 400 steps is higher or lower.
#    Then run section 5 again. (Why would such a model not survive `save_pretrained` / `from_pretrained`?
#    Look at `checkpoint.load_model`.)
# 2. **No bias correction.** Run section 5 with `TrainConfig(..., correct_bias=False)` (`minibert pretrain
#    --no-bias-correction`). Predict the RMS size of the updates at steps 2, 10 and 40 relative to the
#    corrected run, using `lr(t)` and the factor table of section 4, then measure it: copy a weight before
#    and after `trainer.train_step(trainer.next_batch())`. What changes if you also set
#    `warmup_fraction=0`?
# 3. **Where the FLOPs go.** Redo the count of section 1 for the `mini` preset (H = 256, I = 1024, L = 4)
#    and for a 30,522-token vocabulary (BERT-base's). At what vocabulary size does the decoder at all T
#    positions cost as much as the tiny encoder? And gathered?
# 4. **MLM only.** Make `BertForPreTraining.backward` ignore the NSP loss (pass 0 instead of `dloss` to the
#    NSP cross-entropy backward). Predict the held-out NSP accuracy after the short run, and whether the MLM
#    numbers change. Check.
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `mlm_tied` (the tied decoder's `+=`) and `adamw` (bias correction).
