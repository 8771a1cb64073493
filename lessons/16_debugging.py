# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 16 — Debugging a BERT that does not learn
#
# **Run time:** about 3-5 minutes on a 2-core laptop (4.5 minutes measured on a busy one), most of
# it five short pretraining runs in section 2 (quick mode `MINIBERT_QUICK=1`: about 20 s of
# computing, a minute on a busy machine, with much shorter runs on less data). Builds on lessons 01
# (gradient checks), 04 (attention and its mask), 07 (the instances) and 08 (the heads, the loss,
# AdamW).
#
# "NSP accuracy stuck at 50%." "MLM loss plateaus at 7." "My eval numbers change every time I run
# them." Questions like these fill the issue trackers of every BERT implementation, and the answer
# is almost never a better learning rate: it is a bug that lets the code run, the loss go down, and
# the model learn the wrong thing or nothing. This lesson plants nine of those bugs into minibert,
# one at a time, shows what each looks like from the outside (its **symptom**) and the check that
# finds it (its **diagnostic**).
#
# A bug is planted from outside the model by `minibert.pretraining.bugs.planted(NAME)`, a context
# manager that wraps one function or method and restores it on exit; nothing in the model knows
# about bugs:
#
#     with bugs.planted("no_sqrt_scale"):
#         ...        # every attention in here forgets the 1/sqrt(D)
#
# The same switch exists on the command line: `minibert pretrain --bug NAME`.

# %%
import contextlib
import math
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minibert import lessons
from minibert.config import BertConfig
from minibert.models import BertForPreTraining
from minibert.optim import AdamW, clip_grad_norm, linear_warmup_decay, triples_from_model
from minibert.paths import data_path
from minibert.pretraining import bugs
from minibert.pretraining.data import DataConfig, PretrainingDataset, prepare
from minibert.pretraining.trainer import BATCH_KEYS, evaluate
from minibert.tokenization import BertTokenizer

QUICK, FIGURES = lessons.setup(globals().get("__file__"))
SEED = 0
np.set_printoptions(precision=4, suppress=True)
WORK = tempfile.TemporaryDirectory(prefix="minibert-lesson16-")
work = Path(WORK.name)
for name, bug in bugs.BUGS.items():
    print(f"{name:22s} {bug.title}")

# %% [markdown]
# ## 1. Five diagnostics
#
# Every bug below is found by one of five checks. None needs a trained model, and each takes a
# few seconds at most:
#
# 1. **Loss at initialisation.** A freshly initialised BERT predicts almost uniformly, so its MLM
#    loss is close to ln V and its NSP loss to ln 2 (lesson 08 measured 8.31 and 0.693). Far from
#    that before any training, the loss is not measuring what you think. Do it per class of labels,
#    too.
# 2. **Overfit one batch.** Train on one batch until it is memorised. A correct model reaches 100%
#    accuracy on it on both tasks; if the loss falls but an accuracy does not rise, the loss and the
#    task have come apart.
# 3. **Gradient check.** Finite differences against the backward, in float64 (lesson 01). It finds
#    backward bugs, and only those: a forward that computes the wrong function *consistently*
#    passes.
# 4. **Parity check.** Compare with a reference: the formula from the paper, another implementation
#    (lesson 15 compares with Hugging Face), or the model with itself under a change that must not
#    matter (more padding, a second evaluation).
# 5. **Probe.** Ask the data or the model a pointed question: which tokens sit at the prediction
#    positions? Can segment B alone predict the NSP label? Can the model tell position 3 from 19?
#
# `bugs.diagnose(NAME)` runs the diagnostic of bug NAME on a fresh tiny model or a slice of the
# bundled corpus. Here is every diagnostic, clean and with its bug planted:

# %%
t0 = time.perf_counter()
print(f"{'bug':22s} {'diagnostic':38s} {'clean':5s}  {'planted':7s}")
table = {}
for name, bug in bugs.BUGS.items():
    clean = bugs.diagnose(name)
    with bugs.planted(name):
        buggy = bugs.diagnose(name)
    table[name] = (clean, buggy)
    print(f"{name:22s} {clean.name:38s} {'pass' if clean.passed else 'FAIL':5s}  "
          f"{'pass' if buggy.passed else 'FAIL':7s}")
print(f"({time.perf_counter() - t0:.0f} s)")

# %% [markdown]
# Every diagnostic passes on the clean code and fails with its bug. The sections below take the bugs
# one by one: first the ones a training run shows (section 2), then the ones a trained model shows
# (section 3), then the optimiser (section 4).
#
# ## 2. Symptoms in a training run
#
# We pretrain the tiny preset from scratch for a short while, five times: clean and with four bugs.
# The data are the first documents of the bundled corpus (prepared under the bug when the bug lives
# in the data pipeline) and the held-out instances are always prepared cleanly: an honest yardstick.

# %%
N_LINES = 800 if QUICK else 4_000
STEPS, BATCH = (12, 8) if QUICK else (150, 16)
tokenizer = BertTokenizer.from_pretrained(data_path("vocab.txt"))
V = tokenizer.vocab_size
lines = data_path("corpus", "train.txt").read_text(encoding="utf-8").splitlines()
end = lines.index("", N_LINES)                       # stop at a document boundary
(work / "corpus.txt").write_text("\n".join(lines[:end + 1]) + "\n", encoding="utf-8")
held_lines = data_path("corpus", "heldout.txt").read_text(encoding="utf-8").splitlines()
held_end = held_lines.index("", 1_500)
(work / "heldout.txt").write_text("\n".join(held_lines[:held_end + 1]) + "\n", encoding="utf-8")
DATA = DataConfig(max_seq_length=64, dupe_factor=2)
quiet = dict(log=lambda *a: None)
HELDOUT_DATA = DataConfig(max_seq_length=64, dupe_factor=1)
prepare([work / "heldout.txt"], tokenizer, work / "heldout", HELDOUT_DATA, seed=12345, **quiet)
heldout = PretrainingDataset(work / "heldout")
print(f"training text: first {end + 1:,} lines of train.txt; held-out: {len(heldout)} instances "
      f"(label 1 share {heldout.arrays['next_sentence_labels'].mean():.3f})")


def short_run(bug=None, steps=STEPS, batch_size=BATCH, lr=1e-3):
    """Pretrain the tiny preset from scratch with ``bug`` planted (or none); returns the per-step
    records and the held-out evaluation (on cleanly prepared instances)."""
    with bugs.planted(bug) if bug else contextlib.nullcontext():
        folder = bugs.data_folder(work, bug)
        if not (folder / "meta.json").is_file():
            prepare([work / "corpus.txt"], tokenizer, folder, DATA, seed=SEED, **quiet)
        data = PretrainingDataset(folder)
        config = BertConfig.preset("tiny", vocab_size=V, max_position_embeddings=128)
        model = BertForPreTraining(config, np.random.default_rng(SEED))
        optimizer = AdamW(triples_from_model(model), lr=lr, weight_decay=0.01)
        order = data.order(SEED)
        records = []
        for step in range(steps):
            start = (step * batch_size) % (len(order) - batch_size)
            batch = data.batch(order[start:start + batch_size], trim_padding=True)
            model.zero_grad()
            out = model.forward(**{k: batch[k] for k in BATCH_KEYS})
            model.backward()
            clip_grad_norm([g for _, g in model.named_grads()], 1.0)
            optimizer.step(linear_warmup_decay(step, lr, steps // 10, steps))
            labels = batch["next_sentence_labels"]
            nsp_acc = float((out.seq_relationship_logits.argmax(-1) == labels).mean())
            records.append((float(out.mlm_loss), float(out.nsp_loss), nsp_acc,
                            float(labels.mean())))
        result = evaluate(model, heldout, 32, 8)
    return np.array(records), result


t0 = time.perf_counter()
runs = {}
RUNS = (None, "nsp_ignore_index", "nsp_same_document", "mlm_unmasked_labels", "tied_by_assignment")
for bug in RUNS:
    runs[bug or "clean"] = short_run(bug)
print(f"{len(runs)} runs of {STEPS} steps of {BATCH} in {time.perf_counter() - t0:.0f} s\n")
last = max(STEPS // 5, 5)          # the training columns average the last steps
print(f"{'run':20s} {'train MLM':>9s} {'train NSP':>9s} {'NSP acc':>7s} {'label-1 share':>13s} | "
      f"{'held-out MLM':>12s} {'MLM acc':>7s} {'NSP acc':>7s}")
for name, (records, ev) in runs.items():
    m = records[-last:].mean(axis=0)
    print(f"{name:20s} {m[0]:9.3f} {m[1]:9.3f} {m[2]:7.3f} {m[3]:13.3f} | "
          f"{ev['eval_mlm_loss']:12.3f} {ev['eval_mlm_accuracy']:7.3f} "
          f"{ev['eval_nsp_accuracy']:7.3f}")

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for name, (records, _) in runs.items():
    for ax, column in zip(axes, range(3)):
        ax.plot(np.arange(1, len(records) + 1), records[:, column], label=name, lw=1)
for ax, title in zip(axes, ("MLM loss (training batches)", "NSP loss (training batches)",
                            "NSP accuracy (training batches)")):
    ax.set_title(title)
    ax.set_xlabel("step")
axes[0].axhline(math.log(V), color="gray", ls=":", lw=1)
axes[1].axhline(math.log(2), color="gray", ls=":", lw=1)
axes[2].legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "16_symptoms.png", dpi=110)
print(f"figure: {FIGURES / '16_symptoms.png'}")

# %% [markdown]
# ### 2a. `nsp_ignore_index`: an ignore_index that swallows the label IsNext
#
# Hugging Face-style code marks the positions that are not predicted with a label the loss ignores.
# A common port uses `CrossEntropyLoss(ignore_index=0)` (0 being [PAD]) and reuses the same loss for
# next sentence prediction, where 0 means *IsNext*. Half the NSP examples then count for nothing,
# and the other half all say "random": the model learns to answer 1 always, and its NSP loss,
# computed on the label-1 rows only, goes to zero. **Symptom:** in the table and the figure, an NSP
# loss near 0 with an NSP accuracy equal to the share of label 1 in the batch (and, held out, the
# held-out share of label 1). A loss that says "solved" next to an accuracy that says "chance" is
# the signature.
#
# **Diagnostics.** The loss at initialisation, per class: with every label 0 the loss is exactly 0
# before any training, where it must be ln 2. And overfitting one batch: the loss falls to nearly
# nothing but NSP accuracy stays at 50%.

# %%
print(table["nsp_ignore_index"][0])
print(table["nsp_ignore_index"][1])
print(bugs.overfit_one_batch())
with bugs.planted("nsp_ignore_index"):
    print(bugs.overfit_one_batch())

# %% [markdown]
# ### 2b. `nsp_same_document`: NSP with a shortcut
#
# A random B should come from a random other document. Here every random B comes from one and the
# same document (a generator re-seeded for each document, an index computed once): the model only
# has to recognise that document's sentences, without reading A at all. **Symptom:** training NSP
# accuracy shoots towards 100% within a hundred steps, far faster than the clean run, while held-out
# NSP accuracy on honest pairs stays at chance or below (the model answers "random" exactly for B's
# that look like that one document, and answers "continuation" for everything else). **Diagnostic:**
# a probe that sees only segment B. Whether B follows A cannot be read from B alone, so a classifier
# given only B's tokens should do little better than the majority label; with the bug it is nearly
# perfect.

# %%
print(table["nsp_same_document"][0])
print(table["nsp_same_document"][1])

# %% [markdown]
# ### 2c. `mlm_unmasked_labels`: labels on tokens nobody masked
#
# The 80/10/10 corruption happens at the chosen positions, but the positions and labels of the loss
# are drawn again, apart from them (the same bug as forgetting to set the labels of unmasked tokens
# to the ignored value: the loss sees tokens the model can read). Most labels then sit on visible
# tokens, so predicting them means copying the input. **Symptom:** a training MLM loss far below the
# clean run's, and far below its own held-out loss; a gap no model could earn honestly after a
# hundred steps. (Its held-out accuracy is even a little *higher* than the clean run's this early: a
# copying model gets the 10% of unchanged tokens right. An accuracy alone would not have raised the
# alarm.) **Diagnostic:** a probe of the data: at the prediction positions the input must be [MASK]
# 80% of the time, the original token 10% and a random token 10%.

# %%
print(table["mlm_unmasked_labels"][0])
print(table["mlm_unmasked_labels"][1])

# %% [markdown]
# ### 2d. `tied_by_assignment`: `=` where the tied weight needs `+=`
#
# The word-embedding matrix is used twice: by the input lookup and, tied, by the MLM decoder (lesson
# 08). Its gradient is the sum of both uses, and minibert gets that sum because every backward
# *adds* into the buffer. Write the lookup's scatter with `=` and the decoder's share, added first,
# is overwritten. **Symptom:** everything runs, and the MLM loss falls much more slowly than in the
# clean run: the output layer has lost most of its learning signal. **Diagnostic:** the gradient
# check, which names the one tensor that disagrees.

# %%
print(table["tied_by_assignment"][0])
print(table["tied_by_assignment"][1])

# %% [markdown]
# ## 3. Symptoms in a trained model
#
# Four bugs are easiest to see in a model that has learned something: the shipped
# `data/pretrained/tiny` (lesson 08 trained it for 8,000 steps). We evaluate it on the held-out
# instances, clean and with the bug planted in the same model. Dropout-at-evaluation is also
# evaluated twice.

# %%
shipped = BertForPreTraining.from_pretrained(lessons.pretrained_model(),  # MINIBERT_MODEL
                                             np.random.default_rng(SEED))
EVAL_BATCHES = 4 if QUICK else 12


def held_out(model, batch_size=32):
    return evaluate(model, heldout, batch_size, EVAL_BATCHES * 32 // batch_size)


def row(label, ev):
    print(f"{label:42s} {ev['eval_mlm_loss']:8.3f} {ev['eval_mlm_accuracy']:8.3f} "
          f"{ev['eval_nsp_accuracy']:8.3f}")


print(f"{'shipped model, held out':42s} {'MLM loss':>8s} {'MLM acc':>8s} {'NSP acc':>8s}")
row("clean, batches of 32", held_out(shipped))
row("clean, batches of 4", held_out(shipped, 4))
for name in ("no_sqrt_scale", "position_ids_restart"):
    with bugs.planted(name, shipped):
        row(name, held_out(shipped))
with bugs.planted("mask_wrong_axis"):
    row("mask_wrong_axis, batches of 32", held_out(shipped))
    row("mask_wrong_axis, batches of 4", held_out(shipped, 4))
with bugs.planted("dropout_at_eval", shipped):
    row("dropout_at_eval, first evaluation", held_out(shipped))
    row("dropout_at_eval, second evaluation", held_out(shipped))
row("clean again (every bug removed)", held_out(shipped))

# %% [markdown]
# ### 3a. `no_sqrt_scale`: attention without 1/sqrt(D)
#
# With D = 64 (the tiny preset's head size) the scores come out 8 times too large and every softmax
# far sharper than the one the model was trained with. **Symptom:** the trained model gets worse
# (above, its held-out MLM loss rises by about 0.2). From scratch the bug is quieter still: at
# BERT's 0.02 initialisation the scores are tiny either way, and training learns smaller query and
# key weights to compensate, until larger models and longer runs push the attention into saturation,
# where its gradient vanishes. A bug with a mild symptom is the hardest kind to find from the
# outside. **Diagnostic:** a parity check against the formula: recompute layer 0's attention from
# its input and weights as softmax(q k^T / sqrt(D) + mask). The gradient check *passes*: forward and
# backward agree with each other, they just compute the wrong function.

# %%
print(table["no_sqrt_scale"][0])
print(table["no_sqrt_scale"][1])
with bugs.planted("no_sqrt_scale"):
    print("with the bug, the gradient check:", bugs.gradient_check())

# %% [markdown]
# ### 3b. `mask_wrong_axis`: the padding mask on the queries
#
# The mask must hide padded *keys*: it is added to the columns of the scores (lesson 04). Added to
# the rows (the padded *queries*), it adds one constant to every score in a row, which softmax
# ignores: the bug is exactly "no mask". Real tokens attend to padding. **Symptom:** the numbers
# depend on the batch size, because the amount of padding depends on the longest sequence in each
# batch: above, batches of 32 and of 4 give different held-out numbers with the bug and the same
# ones without. **Diagnostic:** a parity check of the model with itself: one sequence alone and the
# same sequence followed by padding must give the same outputs at its real tokens.

# %%
print(table["mask_wrong_axis"][0])
print(table["mask_wrong_axis"][1])

# %% [markdown]
# ### 3c. `position_ids_restart`: positions that start over
#
# Position ids that restart (here every 16 tokens, as a counter kept per chunk would) give tokens 3
# and 19 the same position embedding. **Symptom:** a trained model loses accuracy on longer inputs;
# a model trained from scratch learns a little worse and cannot use word order beyond 16 tokens.
# **Diagnostic:** a probe: one token repeated 40 times, so that only the position differs; every
# pair of positions must give different embeddings.

# %%
print(table["position_ids_restart"][0])
print(table["position_ids_restart"][1])

# %% [markdown]
# ### 3d. `dropout_at_eval`: dropout that never switched off
#
# `model.eval()` must reach every module that draws a dropout mask (in minibert,
# `Module.train(False)` walks the whole tree). When it does not, evaluation is random. **Symptom:**
# two evaluations of the same checkpoint disagree (above, the first and second evaluation), and both
# are worse than the clean one. **Diagnostic:** a parity check of the model with itself: in eval
# mode, the same batch twice must give identical outputs, bit for bit.

# %%
print(table["dropout_at_eval"][0])
print(table["dropout_at_eval"][1])

# %% [markdown]
# ## 4. The optimiser: `no_bias_correction`
#
# Adam's moments start at zero, so early on they underestimate the gradient's mean and square; bias
# correction divides them by (1 - b1^t) and (1 - b2^t). Without it the update is (1 - b1^t) / sqrt(1
# - b2^t) times the corrected one: 3.16 at step 1, 1.26 at step 1000 (lesson 08's table).
# Pretraining's warmup hides most of that; fine-tuning, with a short warmup or none, takes those
# large first steps at full learning rate, and Mosbach et al. (2021) traced many failed fine-tuning
# runs to exactly this (lessons 11 and 12). **Symptom:** more fine-tuning runs that fail (dev
# accuracy at the majority baseline). **Diagnostic:** the size of Adam's first update. With bias
# correction it is exactly lr per entry (m_hat / sqrt(v_hat) = g / |g|), whatever the gradient;
# without, 3.16 lr.

# %%
print(table["no_bias_correction"][0])
print(table["no_bias_correction"][1])
rng = np.random.default_rng(SEED)
grads = rng.standard_normal((1000, 200)) * 0.1
print(f"{'step':>5s} {'RMS update / lr, clean':>23s} {'with the bug':>13s} {'ratio':>6s} "
      f"{'(1-b1^t)/sqrt(1-b2^t)':>22s}")
sizes = {}
for bug in (None, "no_bias_correction"):
    with bugs.planted(bug) if bug else contextlib.nullcontext():
        w, g = np.zeros(200), np.zeros(200)
        optimizer = AdamW([("weight", w, g)], lr=1e-3, weight_decay=0.0)
        sizes[bug] = []
        for t in range(1, 1001):
            before = w.copy()
            g[...] = grads[t - 1]
            optimizer.step()
            sizes[bug].append(np.sqrt(np.mean((w - before) ** 2)) / 1e-3)
for t in (1, 2, 10, 100, 1000):
    clean, buggy = sizes[None][t - 1], sizes["no_bias_correction"][t - 1]
    print(f"{t:5d} {clean:23.3f} {buggy:13.3f} {buggy / clean:6.3f} "
          f"{(1 - 0.9 ** t) / math.sqrt(1 - 0.999 ** t):22.3f}")

# %% [markdown]
# The ratio of the two columns follows the formula at every step: without correction, m and v are
# the corrected moments times (1 - b1^t) and (1 - b2^t). The clean column itself is 1 only at the
# first step; after it, m averages gradients of different signs and shrinks.
#
# ## 5. A checklist
#
# | bug | symptom | diagnostic |
# |---|---|---|
# | `nsp_ignore_index` | NSP loss -> 0, accuracy = label-1 share | loss at init; overfit a batch |
# | `nsp_same_document` | training NSP accuracy -> 1 fast, held out ~ chance | probe: B alone |
# | `mask_wrong_axis` | numbers change with the batch size | parity: with and without padding |
# | `no_sqrt_scale` | trained model worse; attention saturates later | parity with the formula |
# | `no_bias_correction` | more failed fine-tuning runs | size of the first AdamW update |
# | `mlm_unmasked_labels` | training MLM loss far below held out | probe: 80/10/10 at predictions |
# | `position_ids_restart` | worse MLM, order lost past 16 tokens | probe: positions told apart |
# | `tied_by_assignment` | MLM learns much more slowly | gradient check (names the matrix) |
# | `dropout_at_eval` | two evaluations disagree | parity: eval twice |
#
# Run the cheap checks *before* a long run: the loss at initialisation, one overfit batch, the
# gradient check, the padding parity and the data probes take a minute together, and they would have
# caught every bug above. Reproduce a symptom from the command line with, for example,
#
#     minibert pretrain --steps 200 --bug nsp_ignore_index --out runs/bug
#
# (the instances of a data bug are prepared in their own folder, so they never mix with clean ones).

# %% [markdown]
# ## What you should see
#
# Seed 0 everywhere (12345 for the held-out instances). The diagnostics are deterministic; the
# training numbers are float32 with the Numba kernels on one BLAS thread and may move by +- 0.02 on
# another machine. Quick mode (12 steps of 8) is too short for the training symptoms of section 2;
# its other numbers are the same.
#
# - Section 1: all nine diagnostics **pass** clean and **FAIL** with their bug.
# - Section 2 (150 steps of 16, the last 30 averaged): clean, training MLM 5.24 and NSP 0.68,
#   held-out MLM 5.59. `nsp_ignore_index`: training NSP loss **0.001** with NSP accuracy 0.583,
#   exactly the share of label 1 (0.583). `nsp_same_document`: training NSP accuracy **0.99**,
#   held-out NSP accuracy **0.39**, below chance. `mlm_unmasked_labels`: training MLM loss **3.07**
#   against 5.51 held out (clean: 5.24 against 5.59). `tied_by_assignment`: MLM loss **7.38**, the
#   highest of the five.
# - Loss at initialisation: NSP 0.691 (all labels 0) and 0.695 (all 1) clean, **0.000** for label 0
#   with the bug; MLM 4.164 against ln 64 = 4.159. One overfit batch: NSP accuracy 1.00 clean,
#   **0.50** with the bug, though its loss (0.185) is lower than the clean one (0.205).
# - Probes: the B-only NSP probe scores 0.568 against a majority baseline of 0.608 clean, **0.996**
#   with the bug; at the prediction positions [MASK] 0.793 / unchanged 0.107 / random 0.100 clean,
#   **0.132** / 0.849 / 0.019 with the bug; 0 pairs of identical positions clean, **32** with the
#   bug.
# - Gradient check: 30 of 30 tensors agree clean (worst 6.9e-08); with `tied_by_assignment` only
#   `bert.embeddings.word_embeddings.weight` fails (1.0e+00); with `no_sqrt_scale` it **passes**.
# - Parity: attention 8.8e-09 clean, 1.3e-02 without the scale; padding 0.0 clean, 7.3e-03 with the
#   mask on the queries; two evaluations 0.0 apart clean, 0.22 apart with dropout on.
# - Section 3, the shipped model held out: MLM loss 2.276, accuracy 0.509 clean (the same with
#   batches of 4); without the scale 2.488 / 0.488; with restarting positions **4.962 / 0.281**;
#   with the mask on the queries 2.295 (batches of 32) against 2.289 (batches of 4); with dropout
#   on, two evaluations 2.460 and 2.459; "clean again" equals the first row.
# - Section 4: the first update is 1.000 lr clean and **3.158** lr with the bug; the ratio of the
#   two is 3.158, 4.248, 6.527, 3.241, 1.258 at t = 1, 2, 10, 100, 1000, the formula's values to
#   0.2% (at t = 1, eps = 1e-6 still shows against the uncorrected sqrt(v) = 0.032 |g|: 3.158
#   against 3.162).
#
# ## Exercises
#
# 1. **Predict, then plant.** Before running it: which of the five diagnostics of section 1 would
#    catch `position_ids_restart` if the restart came every 128 tokens instead of 16 (change
#    `bugs.RESTART`)? And in a pretraining run with `max_seq_length=64`, what would the symptom be?
# 2. **A tenth bug.** Write a context manager that plants the bug "the [CLS] pooler reads the last
#    token instead of the first" (wrap `BertPooler.forward` on one model instance, restore it on
#    exit). Which symptom do you predict in a short run (section 2), and which diagnostic catches
#    it? Then check.
# 3. **Two bugs at once.** Nest `bugs.planted("no_sqrt_scale")` and
#    `bugs.planted("mask_wrong_axis")`. Predict which of the two parity checks fail, then run both.
# 4. **Fine-tuning.** Fine-tune the shipped model with `minibert finetune --task acceptability
#    --seed S` for a few seeds, once normally and once inside `bugs.planted("no_bias_correction")`
#    (call `minibert.cli.main([...])` in the block). Predict how many runs fail in each, then count.
#
# **Graded exercises** (`minibert exercise list`): every exercise grades itself and names classic
# mistakes; `dropout` (the rescaling this lesson's `dropout_at_eval` leaves on),
# `multihead_attention` (the mask's axis, the 1/sqrt(D)), `mlm_tied` (the `+=`), `adamw` (bias
# correction) and `masking` (the 80/10/10) are the exercises for this lesson's bugs.
