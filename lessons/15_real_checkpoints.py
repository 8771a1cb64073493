# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 15 — Real checkpoints: loading a Hugging Face BERT, exporting ours, checking they agree
#
# Every BERT you can download (bert-base-uncased and its thousands of fine-tuned children) is a Hugging
# Face folder: a `config.json`, a weight file, tokenizer files. minibert was built so that such a
# folder needs no translation: its parameter names *are* the Hugging Face state-dict keys and its
# Linear weights are stored `[out, in]` as in PyTorch. This lesson checks that claim number by number.
#
# Nothing can be downloaded here, so we make our own "real" checkpoint: a randomly initialised
# `transformers.BertForPreTraining` of a small configuration, saved with `save_pretrained`, exactly
# the files the Hub serves. Then:
#
# 1. read the folder by hand (the safetensors format is 20 lines of reading),
# 2. load it in minibert and compare every output and every gradient with PyTorch's,
# 3. meet the variants real checkpoints carry (old names, half precision, pickles) and the errors,
# 4. export ours and load it in transformers, and make the round trip,
# 5. train both side by side from the same weights.
#
# **Needs** PyTorch and transformers (`pip install "torch==2.13.0" && pip install ".[parity]"`). Without
# them the lesson says so and stops (exit code 0). **Run time:** about 11 s on a 2-core laptop, most of
# it importing transformers (quick mode `MINIBERT_QUICK=1`: 10 training steps instead of 60, about 10 s).
# Builds on lesson 05 (the encoder) and 08 (the pretraining loss).

# %%
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from minibert import interop, lessons
from minibert.config import BertConfig
from minibert.models import BertForPreTraining, BertModel
from minibert.optim import AdamW, clip_grad_norm, triples_from_model
from minibert.plots import plot_parity

QUICK, FIGURES = lessons.setup(globals().get("__file__"))
np.set_printoptions(precision=4, suppress=True)

try:
    torch, transformers = interop.import_torch_and_transformers("Lesson 15")
except ImportError as exc:
    print(exc)
    print("\nThis lesson compares minibert with Hugging Face's PyTorch BERT, so it needs both installed. "
          "Everything it checks is also in tests/test_parity.py; the loader itself (minibert.interop) "
          "works without them.")
    raise SystemExit(0)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(1)                 # tiny tensors: threads only add overhead
torch.manual_seed(0)                     # the seed of the transformers model; numpy seeds are given below
WORK = Path(tempfile.mkdtemp(prefix="minibert-lesson15-"))
print(f"torch {torch.__version__}, transformers {transformers.__version__}; files go to {WORK}")

# %% [markdown]
# ## 1. A Hugging Face folder, read by hand
#
# Sizes are odd on purpose (H = 18 split into A = 3 heads of D = 6, I = 29, V = 37): a bug that
# confuses two dimensions cannot hide behind equal sizes. Dropout is off so the two models compute
# the same function. We nudge every parameter by a random amount, or the LayerNorm weights would all be
# 1 and the biases all 0, and a transposed bias would pass unnoticed.

# %%
hf_config = transformers.BertConfig(vocab_size=37, hidden_size=18, num_hidden_layers=2, num_attention_heads=3,
                                    intermediate_size=29, max_position_embeddings=16, hidden_act="gelu",
                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
hf = transformers.BertForPreTraining(hf_config)
with torch.no_grad():
    for p in hf.parameters():
        p.add_(0.1 * torch.randn_like(p))
hf.save_pretrained(WORK / "hf")
print(sorted(os.listdir(WORK / "hf")))
config_json = json.loads((WORK / "hf" / "config.json").read_text())
print({k: config_json[k] for k in ("architectures", "model_type", "hidden_size", "hidden_act", "dtype")})

# %% [markdown]
# `model.safetensors` is the whole format in one line: **8 bytes** (little-endian length N) **| N bytes of
# JSON** (name -> dtype, shape, byte offsets) **| the raw tensor bytes**. No code runs when you read it,
# which is the point: the older `pytorch_model.bin` is a Python pickle, and unpickling a file can
# execute anything its author wrote. Reading the header by hand:

# %%
raw = (WORK / "hf" / "model.safetensors").read_bytes()
n = int.from_bytes(raw[:8], "little")
header = json.loads(raw[8:8 + n])
print("metadata:", header.pop("__metadata__"))
for name in list(header)[:3]:
    print(f"  {name:45s} {header[name]}")
print(f"  ... {len(header)} tensors, {len(raw) - 8 - n:,} bytes of data")
info = header["cls.seq_relationship.weight"]
begin, end = info["data_offsets"]
by_hand = np.frombuffer(raw[8 + n + begin:8 + n + end], dtype="<f4").reshape(info["shape"])
print("cls.seq_relationship.weight by hand == torch's:",
      np.array_equal(by_hand, hf.cls.seq_relationship.weight.detach().numpy()))

# %% [markdown]
# Now the names. transformers' state dict and minibert's `named_parameters()` of the same configuration:

# %%
config = BertConfig.from_dict(config_json)
ours_fresh = BertForPreTraining(config, np.random.default_rng(0))
theirs_names = set(hf.state_dict())
ours_names = {name for name, _ in ours_fresh.named_parameters()}
print(f"transformers: {len(theirs_names)} tensors, minibert: {len(ours_names)} parameters, "
      f"in both: {len(theirs_names & ours_names)}")
print("only in transformers' state dict:", sorted(theirs_names - ours_names))
print("in the file:", "cls.predictions.decoder.weight" in header, "(the decoder is tied, so the file omits it)")
print("shapes equal:", all(tuple(hf.state_dict()[k].shape) == a.shape for k, a in ours_fresh.named_parameters()))

# %% [markdown]
# The only difference: transformers' state dict lists the MLM decoder (`cls.predictions.decoder.weight`,
# `.bias`) although it *is* the word-embedding matrix and `cls.predictions.bias`, tied. minibert lists
# a tied parameter once, under its first name; the file omits the copies too. Same names, same shapes,
# no transposes: loading is copying.

# %% [markdown]
# ## 2. Load it in minibert and compare every output
#
# `from_pretrained` reads `config.json` (ignoring the fields we do not use, refusing the ones that
# would change the model, like `is_decoder`), then the weights through `minibert.interop`, which
# reconciles the variants of section 3 and reports what it did.
#
# transformers runs with **eager** attention: the same matmul, softmax, matmul as ours. Its default
# (`sdpa`, PyTorch's fused kernel) computes the same function with a different order of rounding.
#
# The batch is padded as real batches are: `[PAD]` (id 0) after each sequence's end, attention mask
# 0 there, segment B from a random point on, and 4 masked positions per sequence, the last one of
# the second row a padding prediction (weight 0). Our MLM head scores only the masked positions,
# (B, P, V); transformers scores all T, (B, T, V): we gather its logits at our positions. Our
# encoder computes the real tokens only and returns zeros at padded positions, where transformers
# carries values that no loss reads (a padded query still attends to the real keys), so the hidden
# states are compared at the real positions.

# %%
ours, loading = BertForPreTraining.from_pretrained(WORK / "hf", output_loading_info=True)
print(loading)
hf = transformers.BertForPreTraining.from_pretrained(WORK / "hf", attn_implementation="eager")

rng = np.random.default_rng(0)           # the numpy seed of the batches
B, T, P, V = 3, 13, 4, hf_config.vocab_size
lengths = np.array([13, 9, 7])
real = np.arange(T) < lengths[:, None]
batch = {
    "input_ids": np.where(real, rng.integers(1, V, (B, T)), 0),
    "token_type_ids": (real & (np.arange(T) >= np.array([6, 4, 3])[:, None])).astype(np.int64),
    "attention_mask": real.astype(np.int64),
    "masked_lm_positions": np.array([[1, 3, 8, 11], [2, 5, 7, 0], [1, 2, 4, 6]]),
    "masked_lm_ids": rng.integers(1, V, (B, P)),
    "masked_lm_weights": np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], np.float32),
    "next_sentence_labels": np.array([0, 1, 1]),
}
ours.train()                             # dropout is 0 anyway; train mode is what the gradients need
out = ours.forward(**batch, output_hidden_states=True)
hf_out = interop.hf_forward(hf, batch, output_hidden_states=True)


def diff(a, t):
    return float(np.abs(np.asarray(a) - t.detach().numpy()).max())


for i, (a, t) in enumerate(zip(out.hidden_states, hf_out.hidden_states)):       # at real positions
    print(f"max |minibert - transformers| for hidden_states[{i}]: "
          f"{diff(a[real], t[torch.as_tensor(real)]):.1e}")
pooled = hf.bert(**{k: torch.as_tensor(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}).pooler_output
print(f"max |minibert - transformers| for the pooled output: {diff(ours.bert.pooler.cache[0], pooled):.1e}")
gathered = hf_out.prediction_logits[torch.arange(B)[:, None], torch.as_tensor(batch["masked_lm_positions"])]
print(f"MLM logits: ours {out.prediction_logits.shape}, theirs {tuple(hf_out.prediction_logits.shape)} "
      f"gathered to {tuple(gathered.shape)}")
scored = batch["masked_lm_weights"] != 0         # minibert computes no padding prediction (w = 0)
print(f"max |minibert - transformers| for the MLM logits at the masked positions: "
      f"{diff(out.prediction_logits[scored], gathered[torch.as_tensor(scored)]):.1e}")
print(f"max |minibert - transformers| for the NSP logits: {diff(out.seq_relationship_logits, hf_out.seq_relationship_logits):.1e}")

# %% [markdown]
# Differences of a few 1e-7: float32 rounding (its spacing near 1 is 1.2e-7), from adding the same
# numbers in a different order. The padding mask differs on paper (we add -10000 to padded keys,
# transformers adds the smallest float32) and not at all in practice: both make `exp` underflow to 0.
#
# ## 3. Every gradient, by name
#
# transformers' own loss is a plain mean over the positions whose label is not -100; ours is BERT's
# weighted mean `sum(w * nll) / (sum(w) + 1e-5)` plus the NSP mean. So we compute our formula from
# transformers' logits (`interop.hf_pretraining_loss`) and let PyTorch's autograd differentiate it.
# Our backward is the hand-written chain rule of lessons 01-08.

# %%
ours.zero_grad()
ours.backward()
loss, mlm, nsp = interop.hf_pretraining_loss(hf_out, batch)
loss.backward()
print(f"loss: minibert {float(out.loss):.7f}, transformers {loss.item():.7f}")
hf_params = dict(hf.named_parameters(remove_duplicate=False))
rows, key_bias = [], []
for name, g in ours.named_grads():
    t = hf_params[name].grad.numpy()
    if name.endswith("attention.self.key.bias"):
        key_bias.append(max(np.abs(g).max(), np.abs(t).max()))
        continue
    rows.append((np.abs(g - t).max() / np.abs(t).max(), name))
rows.sort(reverse=True)
ok = sum(r < 1e-4 for r, _ in rows)
print(f"gradients: {ok} of {len(rows)} tensors agree within 1e-4 relative; worst {rows[0][0]:.1e} ({rows[0][1]})")
for r, name in rows[:3]:
    print(f"  {name:55s} {r:.1e}")
print(f"key biases: largest gradient entry on either side {max(key_bias):.1e}")

# %% [markdown]
# The relative difference is measured against each tensor's largest gradient entry, and stays near
# 1e-6. The attention **key biases** are left out of that table because their true gradient is exactly 0:
# adding `b_k` to every key adds `q . b_k` to all the scores of a query row, and softmax ignores a
# shift shared by a row (lesson 04). Both sides show only rounding there, ~1e-9.
#
# **A real difference, found by this comparison.** transformers builds its word embedding with
# `padding_idx = pad_token_id`, and PyTorch then withholds the gradient of the `[PAD]` row *from the
# input lookup*. minibert (like the original BERT) does not. In a real batch `[PAD]` sits only at padded
# positions, whose gradient is exactly 0 anyway, so nothing changes. But MLM's 10% random replacement
# can draw `[PAD]` inside a sentence, and then:

# %%
inside = dict(batch, input_ids=batch["input_ids"].copy())
inside["input_ids"][0, 4] = 0            # [PAD] at a real position
ours.zero_grad()
ours.forward(**inside)
ours.backward()
hf.zero_grad()
interop.hf_pretraining_loss(interop.hf_forward(hf, inside), inside)[0].backward()
g, t = ours.bert.embeddings.word_embeddings.weight.grad, hf.bert.embeddings.word_embeddings.weight.grad.numpy()
print("[PAD] inside: rows of the word-embedding gradient that differ:", np.nonzero(np.abs(g - t).max(axis=1) > 1e-6)[0])

# %% [markdown]
# Only row 0, `[PAD]`. `minibert bench parity` counts the batches where this happens (about one in
# thousands of predictions) and says so. Neither side is wrong: they made different choices, and a
# comparison by name is what makes such a choice visible.
#
# ## 4. The variants real checkpoints carry, and the errors
#
# Files from the Hub differ in ways that do not change the model. `minibert.interop` maps them all:
#
# | in the file | becomes |
# |---|---|
# | `embeddings.*`, `encoder.*`, `pooler.*` (a bare `BertModel`) | `bert.embeddings.*` ... for a model with heads |
# | `bert.*` and `cls.*` (a model with heads) | the encoder part only, for `BertModel` (heads ignored) |
# | `LayerNorm.gamma`, `LayerNorm.beta` (converted from TensorFlow) | `LayerNorm.weight`, `LayerNorm.bias` |
# | `embeddings.position_ids` (older transformers) | dropped: a buffer `arange(T)`, not a parameter |
# | `cls.predictions.decoder.weight` / `.bias` | checked to equal what they are tied to, then dropped |
# | float16, bfloat16 | float32 |
#
# bfloat16 is the top half of a float32 (8 exponent bits, 7 of mantissa): the upcast is exact, and
# what is lost was lost when the file was written. Here is a bfloat16 save of the same model:

# %%
hf.to(torch.bfloat16).save_pretrained(WORK / "bf16")
hf.float()
half, info = BertForPreTraining.from_pretrained(WORK / "bf16", output_loading_info=True)
print(f"bfloat16: upcast {len(info.upcast)} tensors to float32, stored as {set(info.upcast.values())}")
w16 = half.bert.embeddings.word_embeddings.weight.data
w32 = ours.bert.embeddings.word_embeddings.weight.data
print(f"largest relative change of a weight: {np.max(np.abs(w16 - w32) / np.abs(w32)):.1e} (bfloat16 keeps 8 bits: 2^-8 = 3.9e-03)")

# %% [markdown]
# Everything that would load *wrongly* is an error instead, and one error lists every problem. A file
# with a tensor missing, one too many and one of the wrong shape:

# %%
from minibert import safetensors  # noqa: E402

state, _ = safetensors.load_file(WORK / "hf" / "model.safetensors")
del state["bert.pooler.dense.bias"]
state["bert.encoder.layer.2.output.dense.bias"] = np.zeros(18, np.float32)
state["bert.embeddings.position_embeddings.weight"] = np.zeros((32, 18), np.float32)
(WORK / "broken").mkdir()
(WORK / "broken" / "config.json").write_text((WORK / "hf" / "config.json").read_text())
safetensors.save_file(state, WORK / "broken" / "model.safetensors", metadata={"format": "pt"})
try:
    BertForPreTraining.from_pretrained(WORK / "broken")
except ValueError as exc:
    print(exc)

# %% [markdown]
# Two more cases. A folder with only `pytorch_model.bin` is refused with the command that converts it
# (minibert never unpickles). And a *new* head, such as a classifier on top of a pretrained encoder,
# is missing from every pretraining checkpoint: `allow_missing_heads=True` lets it keep its
# initialisation while the encoder must still match exactly. Here the heads of our pretraining model
# start fresh from a bare encoder's folder:

# %%
torch.save(hf.state_dict(), WORK / "pickle_only.bin")
(WORK / "old").mkdir()
(WORK / "old" / "config.json").write_text((WORK / "hf" / "config.json").read_text())
os.replace(WORK / "pickle_only.bin", WORK / "old" / "pytorch_model.bin")
try:
    BertModel.from_pretrained(WORK / "old")
except FileNotFoundError as exc:
    print(str(exc).replace(str(WORK), "WORK"))

transformers.BertModel.from_pretrained(WORK / "hf").save_pretrained(WORK / "encoder")
fresh, info = BertForPreTraining.from_pretrained(WORK / "encoder", allow_missing_heads=True, output_loading_info=True)
print(f"\nencoder folder -> BertForPreTraining: {len(info.missing_keys)} head tensors kept their initialisation:",
      ", ".join(info.missing_keys[:3]), "...")

# %% [markdown]
# ## 5. Export ours, load it in transformers, and the round trip
#
# `save_pretrained` writes `config.json` with `architectures: ["BertForPreTraining"]` (so
# transformers' `AutoModelForPreTraining` knows what to build), `model.safetensors` with the metadata
# `{"format": "pt"}` that transformers asks for, and the tokenizer's `vocab.txt` when given one. We
# start from a minibert model of another configuration (tanh GELU this time), export it, load it in
# transformers, save it from there, and load that back into minibert.

# %%
mine = BertForPreTraining(BertConfig(vocab_size=29, hidden_size=10, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=14, max_position_embeddings=12, hidden_act="gelu_new",
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                          np.random.default_rng(1))
mine.save_pretrained(WORK / "ours")
print("config.json:", {k: v for k, v in json.loads((WORK / "ours" / "config.json").read_text()).items()
                       if k in ("architectures", "hidden_act", "dtype")})
theirs, report = transformers.AutoModelForPreTraining.from_pretrained(WORK / "ours", output_loading_info=True)
print(type(theirs).__name__, {k: v for k, v in report.items() if k != "error_msgs"})
theirs.save_pretrained(WORK / "theirs")
back = BertForPreTraining.from_pretrained(WORK / "theirs")
worst = max(float(np.abs(a - b).max()) for (_, a), (_, b) in zip(mine.named_parameters(), back.named_parameters()))
print(f"round trip minibert -> transformers -> minibert: max |difference| over "
      f"{len(list(mine.named_parameters()))} tensors: {worst}")

# %% [markdown]
# Exactly 0: the bytes go through unchanged. transformers reported no missing, unexpected or
# mis-shaped keys, and `AutoModelForPreTraining` built a `BertForPreTraining` from our `architectures`.
#
# ## 6. Training side by side
#
# Same weights, same batches, dropout off, and the same optimiser: our `AdamW(correct_bias=True)` and
# `torch.optim.AdamW` add eps to the bias-corrected root, decay the pre-step weight, and exclude the
# same parameters (LayerNorm and biases) from decay (`interop.torch_adamw_like`); both clip at 1.0.
# `minibert bench parity` does the same on the bundled corpus for a few hundred steps.

# %%
steps = 10 if QUICK else 60
hf = transformers.BertForPreTraining.from_pretrained(WORK / "hf", attn_implementation="eager").train()
ours = BertForPreTraining.from_pretrained(WORK / "hf").train()
ours_opt = AdamW(triples_from_model(ours), lr=3e-3, weight_decay=0.01, eps=1e-6, correct_bias=True)
hf_opt = interop.torch_adamw_like(hf, lr=3e-3, weight_decay=0.01, eps=1e-6)
batches = []
for _ in range(4):                       # four batches in turn, so the model can learn them
    b = dict(batch, input_ids=np.where(real, rng.integers(1, V, (B, T)), 0), masked_lm_ids=rng.integers(1, V, (B, P)),
             next_sentence_labels=rng.integers(0, 2, B))
    batches.append(b)
losses = {"ours": [], "theirs": []}
for step in range(steps):
    b = batches[step % 4]
    ours.zero_grad()
    losses["ours"].append(float(ours.forward(**b).loss))
    ours.backward()
    clip_grad_norm([g for _, g in ours.named_grads()], 1.0)
    ours_opt.step()
    hf_opt.zero_grad()
    hf_loss = interop.hf_pretraining_loss(interop.hf_forward(hf, b), b)[0]
    hf_loss.backward()
    torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
    hf_opt.step()
    losses["theirs"].append(hf_loss.item())
gap = np.abs(np.array(losses["ours"]) - np.array(losses["theirs"]))
print(f"loss from {losses['ours'][0]:.4f} to {losses['ours'][-1]:.4f} in {steps} steps")
print(f"training: max |loss difference| over {steps} steps: {gap.max():.1e}")
figure = plot_parity(losses["ours"], losses["theirs"], FIGURES / "15_parity.png",
                     title=f"{steps} steps, same weights and batches")
print("saved", figure)
shutil.rmtree(WORK)                      # the folders of this lesson (comment out to look at them)

# %% [markdown]
# ## What you should see
#
# Seeds: `torch.manual_seed(0)` for the transformers model, `np.random.default_rng(0)` for the batches,
# torch 2.13.0 and transformers 5.24.0 on CPU, float32. The exact digits of the rounding-level numbers
# depend on the BLAS and the CPU; the orders of magnitude do not.
#
# - The folder holds `config.json` and `model.safetensors`; the header read by hand gives the same
#   `cls.seq_relationship.weight` as torch (`True`). transformers' state dict has 48 tensors, ours 46
#   parameters, and the 2 extra are the tied decoder copies; all shapes are equal.
# - Every output agrees to a few 1e-7 (below **1e-6**): hidden states at the real positions, pooled
#   output, MLM logits at the masked positions, NSP logits; the losses to about 5e-7.
# - Gradients: **44 of 44** tensors (the 46 parameters less the two key biases) within 1e-4 relative,
#   the worst about 8e-7; the two key biases show about 1e-9 on both sides. With `[PAD]` inside a sentence, row `[0]` of the word-embedding gradient
#   differs, and only it.
# - bfloat16: 46 tensors upcast, the weights moved by at most 3.9e-03 relative (3.7e-03 here).
# - The broken file: 1 missing key, 1 unexpected key, 1 shape mismatch, in one error.
# - Round trip: transformers reports no missing/unexpected/mismatched keys; max |difference| **0.0**.
# - Training: the loss falls from 4.24 to about 1.66 in 60 steps (quick mode: to about 3.88 in 10), and
#   the two losses stay within **1e-5** of each other (about 5e-7).
#
# ## Exercises
#
# 1. In section 2, load the transformers model without `attn_implementation="eager"` (its default is
#    PyTorch's fused `sdpa`). Predict whether the differences stay below 1e-6, then check.
# 2. Set `hidden_act="gelu_new"` in the transformers config of section 1 but make minibert ignore it
#    (load the folder, then set `ours.bert.encoder.layer[0].intermediate.approximate = False`). Which
#    outputs move, by roughly how much? (Lesson 02 measured the largest gap between the two GELUs.)
# 3. In section 3, set `hf.bert.embeddings.word_embeddings.padding_idx = None` before the `[PAD]`-inside
#    check. Predict the printed rows. Which of the two behaviours would you choose for minibert, and
#    why does it matter so little in practice?
# 4. Transpose one weight on export: in `checkpoint.save_model`, store `query.weight.T` for layer 0.
#    Which check of this lesson catches it: the shape check when loading, or the output comparison?
#    What would catch a transposed `intermediate.dense.weight` (I x H), and how early?
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `linear` (weights stored (out, in), as in the checkpoints) and `wordpiece`.
