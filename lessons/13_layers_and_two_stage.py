# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 13 — Taking more layers into account, and two-stage fine-tuning
#
# **Run time:** about 75 s on an idle 2-core laptop (3 minutes while two other fine-tuning jobs shared its
# two cores); most of it is the 39 fine-tuning runs of sections
# 3 and 4. Quick mode (`MINIBERT_QUICK=1`: one seed, 32-64 training examples, a 19-step intermediate
# stage): about 1 minute under the same load (14 s of CPU time). Builds on lesson 11 (the classification
# head, the fine-tuning loop, failed runs) and lesson 01 (gradient checks).
#
# Lesson 11 put a classifier on the pooled [CLS] vector of the *last* layer. Two ideas from the papers
# change what the classifier starts from:
#
# 1. **Read more layers.** Lower layers hold different information than the top one (lesson 10 probed
#    it). A *scalar mix* (ELMo) learns a softmax-weighted average of every layer; BERT's own paper also
#    concatenates the last four layers. We derive the scalar mix's backward, write it in a few lines,
#    check it, and fine-tune with each reading.
# 2. **Fine-tune twice.** STILTs (Phang et al. 2018) fine-tunes first on a large *intermediate* task,
#    then puts a fresh head on the encoder and fine-tunes on the small *target* task. We use the bundled
#    `nli` task (30,000 pairs, three labels) as the intermediate and measure what it does for two targets:
#    `entailment` (close to nli) and `acceptability` (not).
#
# At the end we read the restarts of the stability experiment (`minibert stability`), when they are in
# the repository, for the strategies of this lesson.

# %%
import dataclasses
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minibert import checks, gradcheck, kernels, lessons
from minibert.finetuning import batches, majority_score, metrics, stability
from minibert.finetuning.trainer import FinetuneConfig, Finetuner, finetune
from minibert.models import BertForSequenceClassification
from minibert.nn import ScalarMix
from minibert.paths import data_dir

QUICK, FIGURES = lessons.setup(globals().get("__file__"))
SEED = 0
BASE = str(lessons.pretrained_model())   # MINIBERT_MODEL: tiny (the default), mini or a folder
np.set_printoptions(precision=4, suppress=True)
rng = np.random.default_rng(SEED)
STARTED = time.perf_counter()
print(f"kernels: {kernels.backend()}; quick mode: {QUICK}")

# %% [markdown]
# ## 1. The scalar mix, by hand
#
# For N = L + 1 hidden states X_0 (the embedding output) ... X_L, here the [CLS] vector of each, (B, H):
#
#     s = softmax(w)                  w (N,) learned, starts at 0: every layer weighs 1/N
#     h = gamma * sum_l s_l X_l       gamma: a learned scale, starts at 1
#
# **Backward.** With G = dL/dh (B, H) and <A, C> the sum of A * C over the batch and the features:
#
# * h is linear in each X_l with coefficient gamma s_l, so **dX_l = gamma s_l G**.
# * h is linear in gamma: **dgamma = sum_l s_l <G, X_l>**.
# * h is linear in each s_l: **ds_l = gamma <G, X_l>**.
# * Through the softmax, whose Jacobian is  partial s_k / partial w_j = s_k (delta_kj - s_j):
#   dw_j = sum_k ds_k s_k (delta_kj - s_j) = s_j ds_j - s_j sum_k s_k ds_k, that is
#   **dw = s * (ds - <ds, s>)**: the softmax Jacobian diag(s) - s s^T applied to ds. Adding the same
#   number to every w_l changes nothing, and indeed sum_j dw_j = <ds, s> - <ds, s> = 0.
#
# **Layer dropout** (Kondratyuk and Straka 2019) sets w_l to -inf with probability p during training:
# the softmax runs over the kept layers only, a dropped layer has s_l = 0, and the formulas above give it
# dX_l = 0 and dw_l = 0 with no special case. (If every layer is dropped, `ScalarMix` keeps them all.)

# %%
def mix_forward(X, w, gamma, keep):
    """X (N, B, H) stacked states, w (N,), gamma a number, keep (N,) bool -> h (B, H), cache."""
    e = np.where(keep, np.exp(w - w[keep].max()), 0.0)     # a dropped layer: exp(-inf) = 0
    s = e / e.sum()                                        # (N,)
    return gamma * np.tensordot(s, X, axes=1), (X, s, gamma)


def mix_backward(G, cache):
    """G (B, H) -> dX (N, B, H), dw (N,), dgamma (a number)."""
    X, s, gamma = cache
    inner = np.einsum("nbh,bh->n", X, G)                   # <G, X_l>  (N,)
    ds = gamma * inner
    return gamma * s[:, None, None] * G, s * (ds - ds @ s), s @ inner


N, B, H = 3, 4, 8                        # the tiny model: 2 layers -> 3 hidden states
X = rng.standard_normal((N, B, H))
w = rng.standard_normal(N)
gamma = np.array([1.7])                  # an array, so the gradient check can perturb it in place
keep_all = np.ones(N, dtype=bool)
G = rng.standard_normal((B, H))

mix = ScalarMix(N, 0.0, np.random.default_rng(1)).astype(np.float64).train()
mix.weights.data[:] = w
mix.gamma.data[:] = gamma
h_pkg = mix.forward(list(X))
dX_pkg = mix.backward(G)
h, cache = mix_forward(X, w, gamma[0], keep_all)
dX, dw, dgamma = mix_backward(G, cache)
print(f"by hand vs ScalarMix: h {np.abs(h - h_pkg).max():.1e}, dX {np.abs(dX - np.stack(dX_pkg)).max():.1e}, "
      f"dw {np.abs(dw - mix.weights.grad).max():.1e}, dgamma {abs(dgamma - mix.gamma.grad[0]):.1e}")
print(f"sum of dw: {dw.sum():+.1e} (a softmax ignores a shift of all its inputs)")

# %% [markdown]
# Now with layer dropout. `ScalarMix` draws its keep mask from its generator (`rng.random(N) >= p`), so
# restoring the generator's state replays the mask: we read the mask the package used, run the hand-written
# version with it, and then check our backward against finite differences *with that mask held fixed*,
# as every gradient check of a random layer must (lesson 01).

# %%
P_LAYER = 0.5
mix = ScalarMix(N, P_LAYER, np.random.default_rng(9)).astype(np.float64).train()   # its first draw drops a layer
mix.weights.data[:] = w
mix.gamma.data[:] = gamma
state = mix.rng.bit_generator.state
h_pkg = mix.forward(list(X))
dX_pkg = mix.backward(G)
mix.rng.bit_generator.state = state                      # replay: the same draw the package made
keep = mix.rng.random(N) >= P_LAYER
h, cache = mix_forward(X, w, gamma[0], keep)
dX, dw, dgamma = mix_backward(G, cache)
print(f"layer dropout p={P_LAYER}: kept {keep.astype(int)}, s = {cache[1]}")
print(f"by hand vs ScalarMix: h {np.abs(h - h_pkg).max():.1e}, dX {np.abs(dX - np.stack(dX_pkg)).max():.1e}, "
      f"dw {np.abs(dw - mix.weights.grad).max():.1e}, dgamma {abs(dgamma - mix.gamma.grad[0]):.1e}")
print(f"dropped layers get no gradient: dw = {dw}, |dX_l| = {np.abs(dX).max(axis=(1, 2))}")


def check_by_hand(keep):
    def backward(upstream):
        dX, dw, dgamma = mix_backward(upstream, mix_forward(X, w, gamma[0], keep)[1])
        return {"X": dX, "w": dw, "gamma": np.array([dgamma])}
    return gradcheck.check_function(f"mix by hand, keep {keep.astype(int)}",
                                    lambda: mix_forward(X, w, gamma[0], keep)[0], backward,
                                    {"X": X}, rng, {"w": w, "gamma": gamma})


results = check_by_hand(keep_all) + check_by_hand(keep) + checks.run_check("ScalarMix")
print(gradcheck.format_table(results))
print(f"{sum(r.ok for r in results)} of {len(results)} tensors within {gradcheck.TOLERANCE:g}")

# %% [markdown]
# (The package's own check, `ScalarMix`, mixes five states with layer dropout 0.3 and a replayed mask.)
#
# ## 2. Where the classifier reads: `last`, `mix`, `concat4`
#
# `BertForSequenceClassification` has three readings, set by `config.classifier_layers`:
#
#     "last"     pooled = tanh(W_p CLS_L + b_p)          BERT and Hugging Face: the pooler, trained by NSP
#     "mix"      gamma * sum_l softmax(w)_l CLS_l        every hidden state's [CLS] vector, no pooler
#     "concat4"  [CLS_{L-3}; ...; CLS_L]                 the last four [CLS] vectors side by side, 4H inputs
#
# then dropout and a Linear layer to the labels. The pooler was trained on the last layer only, so the
# other two read the [CLS] vectors directly. **Our tiny model has only 2 layers, so 3 hidden states
# (embeddings, layer 1, layer 2): "concat4" concatenates all three**, 3H = 384 features, and "mix" mixes
# the same three. Both are computed by hand below from `output_hidden_states` and compared with the
# model's logits (eval mode: no dropout).

# %%
finetuner = Finetuner(FinetuneConfig(task="acceptability", init=BASE), log=lambda s: None)
batch = next(batches(finetuner.encoded("acceptability", "dev"), 8))
for layers in ("mix", "concat4"):
    model = BertForSequenceClassification.from_pretrained(BASE, np.random.default_rng(SEED), allow_missing_heads=True,
                                                          classifier_layers=layers).eval()
    if layers == "mix":                  # weights away from 0, so the mix is not a plain average
        model.scalar_mix.weights.data[:] = [0.5, -0.2, 0.1]
    out = model.forward(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                        output_hidden_states=True)
    cls = [state[:, 0] for state in out.hidden_states]                  # N arrays (B, H)
    if layers == "mix":
        s = np.exp(model.scalar_mix.weights.data) / np.exp(model.scalar_mix.weights.data).sum()
        features = model.scalar_mix.gamma.data[0] * sum(s_l * c for s_l, c in zip(s, cls))
    else:
        features = np.concatenate(cls[-4:], axis=-1)                    # only 3 states: all of them
    logits = features @ model.classifier.weight.data.T + model.classifier.bias.data
    print(f"{layers:8} {len(out.hidden_states)} hidden states, features {features.shape}, classifier weight "
          f"{model.classifier.weight.data.shape}, max |by hand - model| {np.abs(logits - out.logits).max():.1e}")

results = checks.run_check("BertForSequenceClassification_mix") + \
    checks.run_check("BertForSequenceClassification_concat4")
failed = [f"{r.check}/{r.tensor}" for r in results if not r.ok]
print(f"gradient checks of the whole model (loss, mix with layer dropout, concat4): {sum(r.ok for r in results)} "
      f"of {len(results)} tensors ok, worst {max(r.max_rel_error for r in results):.1e}"
      + (f"; FAILED: {failed}" if failed else ""))

# %% [markdown]
# **What the BERT paper measured.** Devlin et al. (2019, section 5.3) used BERT *without* fine-tuning, as a
# feature extractor for named-entity recognition (CoNLL-2003, dev F1): the last layer alone 94.9, a
# weighted sum of the last four layers 95.9, their concatenation 96.1, against 96.4 for fine-tuning the
# whole model. So with a frozen encoder, reading more layers is worth about a point; fine-tuning, where
# every layer can move to suit the head, still wins. We fine-tune everything, as in lesson 11, where the
# difference between the readings should be smaller: the encoder can bring whatever the classifier needs
# to the last layer.
#
# ## 3. Fine-tuning with each reading
#
# Acceptability (500 training examples, 3 epochs, the `minibert finetune` defaults: lr 1e-3, batch 16,
# dropout 0.1), three seeds per reading; the dev accuracy of each run, and the mixing weights the `mix`
# runs learned (`model.scalar_mix.mixing_weights()`: softmax(w) without layer dropout).

# %%
LAYER_SEEDS = [0] if QUICK else [0, 1, 2]
LAYER_RUN = dict(task="acceptability", init=BASE) | (dict(train_limit=64, epochs=1.0) if QUICK else {})
layer_dev, mix_runs = {}, []
print(f"{'layers':8} " + " ".join(f"seed {s:<2}" for s in LAYER_SEEDS) + "    mean   s/run")
for layers in ("last", "mix", "concat4"):
    t0 = time.perf_counter()
    devs = []
    for seed in LAYER_SEEDS:
        result = finetune(FinetuneConfig(**LAYER_RUN, layers=layers, seed=seed), log=lambda s: None)
        devs.append(result.final.dev["accuracy"])
        if layers == "mix":
            mix_runs.append((result.model.scalar_mix.mixing_weights(), result.model.scalar_mix.weights.data.copy(),
                            result.model.scalar_mix.gamma.data[0], result.final.steps))
    layer_dev[layers] = devs
    print(f"{layers:8} " + " ".join(f"{d:7.3f}" for d in devs) + f"  {np.mean(devs):6.3f}  "
          f"{(time.perf_counter() - t0) / len(devs):5.1f}")
for seed, (s, w_learned, g_learned, steps) in zip(LAYER_SEEDS, mix_runs):
    print(f"mix seed {seed}: mixing weights (embeddings, layer 1, layer 2) {s}, w {w_learned}, gamma {g_learned:.4f} "
          f"after {steps} steps")

# %% [markdown]
# **The mixing weights hardly move.** Adam's step is typically about the learning rate, whatever the
# size of the gradient: the update is m / sqrt(v), about 1 for a steady gradient and less for a
# noisy one. It is not capped at lr: with the default betas one step can reach
# (1 - b1) / sqrt(1 - b2) = 3.16 lr, for a gradient that appears after a long run of near-zero ones
# (Kingma & Ba 2015, section 2.1). With linear warmup and decay the learning rates of a run add up
# to lr x steps / 2, which sets the scale (not a bound) of how far w can go from 0, and so of how
# far softmax(w) can go from 1/3:

# %%
steps = mix_runs[0][3]
bound = 1e-3 * steps / 2
print(f"{steps} steps at peak lr 1e-3: sum of the learning rates {bound:.3f}; so |w_l| <~ {bound:.3f} and "
      f"softmax(w) stays within [{np.exp(-bound) / (np.exp(-bound) + 2 * np.exp(bound)):.3f}, "
      f"{np.exp(bound) / (np.exp(bound) + 2 * np.exp(-bound)):.3f}]")
print(f"largest |w_l| learned: {max(np.abs(w_learned).max() for _, w_learned, _, _ in mix_runs):.3f}")

# %% [markdown]
# With one learning rate for everything, the scalar mix stays close to a plain average of the three
# [CLS] vectors: what "mix" changes is mainly that the classifier reads the lower layers at all (and
# skips the pooler). Implementations that want the weights to move give them a much larger learning rate
# (exercise 2).
#
# ## 4. Two-stage fine-tuning (STILTs)
#
# Phang et al. (2018) first fine-tune BERT on a data-rich intermediate task (MNLI, 393k pairs), then
# re-initialise the head and fine-tune on the target: a GLUE score of 81.8, 1.4 points above plain BERT,
# with the largest gains, and less variance across restarts, for targets of 1k-5k examples. TANDA (Garg et al.
# 2020) does the same for answer selection. In the package: `FinetuneConfig(intermediate="nli",
# intermediate_epochs=E)` (`minibert finetune --intermediate nli`). `Finetuner.run` then makes two calls
# of `run_stage`: one on nli, then one on the target with a fresh model whose encoder (`model.bert`,
# embeddings, layers and pooler) is overwritten with the nli-tuned one. Only the classifier (and, for
# "mix", the scalar mix) starts new: nli has three labels, the target two.
#
# Our intermediate: **nli**, 30,000 premise/hypothesis pairs with three labels (entailment, neutral,
# contradiction). One full epoch is 1,875 steps; we use a fraction of an epoch, run it **once** and start
# every target run from the same nli-tuned encoder. (`finetune(... intermediate="nli")` runs the
# intermediate stage again for every seed, with that seed: for seed 0 it is the same computation as ours.)

# %%
INTER_EPOCHS = 0.01 if QUICK else 0.1
TARGET_SIZES = [32] if QUICK else [100, 500]
TARGET_SEEDS = [0] if QUICK else [0, 1, 2]
t0 = time.perf_counter()
stage_one = Finetuner(FinetuneConfig(task="entailment", init=BASE, seed=SEED), log=lambda s: None)
nli_model, nli_result = stage_one.run_stage("nli", INTER_EPOCHS, stage=1)
nli_encoder = {name: array.copy() for name, array in nli_model.bert.named_parameters()}
print(f"intermediate: nli, {INTER_EPOCHS} epochs = {nli_result.steps} steps of 16 "
      f"({16 * nli_result.steps:,} pairs), {time.perf_counter() - t0:.0f} s; nli dev accuracy "
      f"{nli_result.dev['accuracy']:.3f} (majority {nli_result.majority:.3f})")

# %% [markdown]
# **How close is nli to the entailment task?** Both are generated by the same grammar (`data/README.md`):
# a hypothesis repeats the premise with one change, and whether it follows depends on negation and on the
# taxonomy; `entailment` is the two-way version (entailment vs not), drawn from its own random stream
# with no pair in common. So before any training on entailment, the nli model can already answer it:
# call a pair "entailment" when the nli head's first class (entailment) wins.

# %%
entail_dev = stage_one.encoded("entailment", "dev")
nli_model.eval()
nli_pred = np.concatenate([nli_model.forward(b["input_ids"], b["token_type_ids"], b["attention_mask"]).logits.argmax(-1)
                           for b in batches(entail_dev, 128)])
zero_shot = metrics.accuracy((nli_pred == 0).astype(np.int64), entail_dev.labels)
print(f"nli model on the entailment dev set, no entailment training: accuracy {zero_shot:.3f} "
      f"(majority {majority_score('entailment', 'dev'):.3f})")

# %% [markdown]
# Now the targets, each with and without the intermediate stage: the same seeds, the same training
# examples (the first N of the task's training set), 3 epochs.

# %%
two_stage = {}
print(f"{'target':14} {'N':>4} {'start':10} " + " ".join(f"seed {s:<2}" for s in TARGET_SEEDS) + "    mean   s/run")
for task in ("entailment", "acceptability"):
    for size in TARGET_SIZES:
        config = FinetuneConfig(task=task, init=BASE, train_limit=size)
        target = Finetuner(config, log=lambda s: None)
        for start, encoder in (("pretrained", None), ("nli", nli_encoder)):
            t0 = time.perf_counter()
            devs = []
            for seed in TARGET_SEEDS:
                target.config = dataclasses.replace(config, seed=seed)
                _, result = target.run_stage(task, config.epochs, stage=0, encoder_state=encoder)
                devs.append(result.dev["accuracy"])
            two_stage[task, size, start] = devs
            print(f"{task:14} {size:4} {start:10} " + " ".join(f"{d:7.3f}" for d in devs)
                  + f"  {np.mean(devs):6.3f}  {(time.perf_counter() - t0) / len(devs):5.1f}")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
for ax, task in zip(axes, ("entailment", "acceptability")):
    for i, size in enumerate(TARGET_SIZES):
        for j, (start, colour) in enumerate((("pretrained", "tab:blue"), ("nli", "tab:orange"))):
            devs = two_stage[task, size, start]
            ax.scatter([2 * i + j] * len(devs), devs, color=colour, s=20,
                       label=f"from {start}" if i == 0 else None)
            ax.hlines(np.mean(devs), 2 * i + j - 0.25, 2 * i + j + 0.25, color="black", linewidth=1,
                      label="mean" if i == j == 0 else None)
    ax.axhline(0.5, color="tab:red", linestyle="--", linewidth=1, label="majority baseline 0.5")
    ax.set_xticks(range(2 * len(TARGET_SIZES)), [f"N={n}\n{s}" for n in TARGET_SIZES for s in ("pretr.", "nli")])
    ax.set_title(f"{task}: dev accuracy per seed")
# Beside the panels: the points reach any height, and a legend inside would cover some.
axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
fig.savefig(FIGURES / "13_two_stage.png", dpi=120)
print("saved", FIGURES / "13_two_stage.png")
for task in ("entailment", "acceptability"):
    for size in TARGET_SIZES:
        gain = np.mean(two_stage[task, size, "nli"]) - np.mean(two_stage[task, size, "pretrained"])
        print(f"two-stage gain, {task} N={size}: {gain:+.3f} (mean dev accuracy over {len(TARGET_SEEDS)} seed(s))")

# %% [markdown]
# **What the numbers say** (full run, seeds 0-2; see "What you should see" for the values):
#
# * **Entailment: a very strong transfer, for a reason.** 188 steps of nli (a tenth of an epoch) take the
#   nli dev accuracy from chance to 0.82, and that model, with no entailment training at all, already
#   answers 0.85 of the entailment dev pairs. Fine-tuned on 100 entailment examples it reaches 0.81
#   against 0.54 from the pretrained encoder (+0.27); on 500, 0.91 against 0.78. This is not the general
#   STILTs effect at work: our nli task *is* the entailment task with a third label, generated by the same
#   grammar, so the intermediate stage is mostly 3,000 more training pairs of the target. (Note also that
#   100 examples with a fresh head do slightly *worse* than the nli head read directly: a new head
#   trained on 100 pairs throws some of that away.) MNLI and RTE are related, but they are not one
#   distribution, let alone one grammar: do not expect gains like these from STILTs on real data.
# * **Acceptability: little or nothing.** Grammaticality has nothing to do with the nli labels. With 100
#   examples the plain runs are close to chance (0.52) and two-stage is higher on one of the three seeds
#   (mean +0.02); with 500 examples it is 0.01 *lower*. Three seeds cannot separate differences of this
#   size from seed noise (the seeds of one setting differ by up to 0.18): the 20-seed experiment below
#   is what can.
#
# How long an intermediate stage is enough? Measured the same way (seed 0 intermediate, targets seeds
# 0-2), outside this lesson, before the encoder learned to skip padding (which draws other dropout masks
# for the same seed: expect the same picture, not the same digits): after 0.03 epochs (56 steps) nli dev is only 0.41 and entailment with 100
# examples reaches 0.64; after 0.3 epochs (563 steps) nli dev is 0.91 and entailment with 100 examples
# 0.93-0.94, with 500 about the same as after 0.1 epoch (0.93); acceptability is not better after 0.3
# epochs than after 0.1 (500 examples: 0.66 on average). We keep 0.1: enough to see the effect, ten times
# cheaper than an epoch.
#
# ## 5. The stability experiment
#
# `minibert stability` fine-tunes each strategy with 20 seeds on acceptability and entailment with 100 and
# 500 training examples; its runs are kept in `data/results/stability/<task>-<N>/runs.jsonl` (one JSON
# record per run: strategy, seed, dev and test score, majority baseline, failed). A run *fails* when its
# dev score is at or below the majority baseline (0.5). Here are the strategies of this lesson next to
# plain dropout. Its `twostage` runs use a whole epoch of nli (the `--intermediate-epochs` default, 1.0),
# each seed its own. (Set `MINIBERT_STABILITY_RESULTS` to read your own `minibert stability --out` folders
# instead.)

# %%
RESULTS = Path(os.environ.get("MINIBERT_STABILITY_RESULTS") or data_dir() / "results" / "stability")
STRATEGIES = ["dropout", "mix", "concat4", "twostage"]
found = stability.report_settings(RESULTS, STRATEGIES, FIGURES, "13")
print(f"stability settings found: {found} of {len(stability.SHIPPED_SETTINGS)} (in {RESULTS})")

# %% [markdown]
# Reading the table: `mean` and `std` over all restarts; `failed` counts the runs at or below the majority
# baseline, and `mean of the rest` averages the others, so a strategy that only removes failures shows a
# higher mean but the same mean of the rest. With 20 restarts the standard error of a mean is std / 4.5:
# two means closer than about twice that are not told apart by this experiment.
#
# **The 100-example settings** (20 seeds each; `data/results/stability/*-100`):
#
# * acceptability: dropout 0.523 (std 0.036, 5 of 20 runs failed), mix 0.535 (3 failed), concat4 0.542
#   (2 failed), two-stage 0.544 with the largest spread (std 0.059) and the most failures (8), but the
#   best runs (max 0.667, mean of the non-failed 0.576): the nli encoder helps some seeds and not others.
# * entailment: dropout 0.553 (none failed), mix 0.574, concat4 0.565 (1 failed), two-stage **0.984**
#   (std 0.028, median 1.000): after a full epoch of nli, most runs classify every dev pair correctly,
#   well above the 0.808 of section 4 after a tenth of an epoch.
#
# **The 500-example settings** (`data/results/stability/*-500`): no run of these four strategies fails.
#
# * acceptability: dropout 0.665 (std 0.023), mix 0.665 (std 0.016), concat4 0.669 (std 0.020): the
#   readings are 0.000 and 0.004 above the pooler, 0.0 and 0.6 standard errors of the difference. Two-stage
#   0.642 (std 0.030, max 0.677) is 0.023 *below* plain dropout, 2.7 standard errors: the one clear
#   difference in this setting, and a loss, with the sign section 4 saw on three seeds (-0.011). With 100
#   examples it was 0.021 above (1.4 standard errors, not told apart). One way to read it: the full nli
#   epoch (1,875 steps) moves the encoder towards what nli needs, which is not grammaticality, and 96 steps
#   on 500 acceptability examples do not move all of it back.
# * entailment: dropout 0.762 (std 0.060), mix 0.764 (std 0.039), concat4 0.777 (std 0.038): 0.002 and
#   0.015 above the pooler, 0.1 and 0.9 standard errors. The readings' runs spread less (0.039 and 0.038
#   against 0.060; a std from 20 runs is itself uncertain by about a sixth, 1 / sqrt(2 x 19)), but their
#   means are not measurably higher. Two-stage **0.987** (std 0.024, median 1.000), 0.225 above dropout
#   (15.6 standard errors), again above section 4's 0.911 after a tenth of an epoch.
#
# **The 200-example settings** (added later; `data/results/stability/*-200`): on acceptability dropout
# 0.569 (std 0.049, 1 failed), mix 0.577, concat4 0.596 (no failed run), two-stage 0.604 (std 0.040, none
# failed): +0.027 and +0.035 for concat4 and two-stage, about 1.9 and 2.5 standard errors, between the
# gain at 100 and the loss at 500. On entailment dropout 0.643, mix 0.660, concat4 0.653, two-stage 0.984.
#
# Over the four settings of 100 and 500 examples, reading more layers is never below the pooler: 0.01-0.02 above it with 100
# examples (1.1 to 2.2 standard errors of the difference), 0.000-0.015 with 500 (0.0 to 0.9): small if
# real, and with 500 examples not told apart from zero, as the end of section 2 expected of a fine-tuned
# encoder. Two-stage fine-tuning is the one strategy with a large effect, and only on the task that is the
# intermediate task in disguise (+0.431 with 100 examples, +0.225 with 500); on the unrelated task it gains
# nothing measurable with 100 examples and costs 0.023 with 500. A run of it also takes 15 to 74 times as
# long as a plain one (the s/run column: the nli epoch dominates).

# %%
print(f"lesson 13 done in {time.perf_counter() - STARTED:.0f} s")

# %% [markdown]
# ## What you should see
#
# Seed 0 unless a row says seeds 0-2; Numba kernels, one BLAS thread. By-hand comparisons are exact to
# rounding whatever the machine; fine-tuning accuracies can move by a run or two of the 300 dev examples
# (+-0.01) with another BLAS or thread count. Quick-mode runs are too short to learn anything: their
# accuracies (0.45-0.55) are not meaningful, only the checks are.
#
# * Section 1: by hand = `ScalarMix` to 1e-15 (h, dX, dw, dgamma), with and without layer dropout; the
#   replayed draw keeps layers 0 and 2 (s = 0.818 / 0 / 0.182), and the dropped layer gets dw = 0 and
#   dX = 0 (dw = 1.4411 / 0 / -1.4411). The sum of dw is 0 (to 1e-15). Gradient checks: **13 of 13** tensors within
#   1e-6 (worst about 3e-9).
# * Section 2: "mix" and "concat4" by hand = the model's logits (2e-8, 0); concat4 reads **3** hidden
#   states, 384 features. Whole-model checks **86 of 86** ok (worst below 2e-7).
# * Section 3 (acceptability, 500 examples, seeds 0-2): last 0.680 / 0.683 / 0.680 (mean 0.681), mix
#   0.687 / 0.683 / 0.633 (0.668), concat4 0.687 / 0.663 / 0.693 (0.681): **no difference** beyond seed
#   noise. Mixing weights after 96 steps within 0.33 +- 0.01 (seed 0: 0.328 / 0.332 / 0.340), the largest
#   |w_l| 0.019 against the bound 0.048.
# * Section 4: nli after 188 steps: dev accuracy **0.820** (majority 0.334); read directly on entailment
#   dev, **0.853**. Mean dev accuracy over seeds 0-2, pretrained -> two-stage: entailment N=100 0.537 ->
#   0.808 (**+0.271**), N=500 0.778 -> 0.911 (+0.133); acceptability N=100 0.516 -> 0.532 (+0.016),
#   N=500 0.681 -> 0.670 (-0.011).
# * Section 5: a table and a figure for each setting in `data/results/stability/` (acceptability-100:
#   dropout 0.523, mix 0.535, concat4 0.542, twostage 0.544 with 8/20 failed; entailment-100: 0.553,
#   0.574, 0.565, **0.984**; acceptability-500: 0.665, 0.665, 0.669, twostage **0.642**, none failed;
#   entailment-500: 0.762, 0.764, 0.777, **0.987**), a note for each missing one.
#
# ## Exercises
#
# 1. **A learning rate for the mix.** Section 3 bounds |w_l| by the sum of the learning rates. Predict the
#    largest mixing weight after 96 steps if the two scalar-mix parameters had a learning rate of 0.1.
#    Then try it: in `Finetuner.run_stage` (`minibert/finetuning/trainer.py`) give the existing `AdamW`
#    only the triples whose name does not start with `scalar_mix`, make a second `AdamW` with lr 0.1 for
#    those two, and step both. Which layer wins, and does the dev accuracy change? (Why would multiplying
#    the mix's gradient by 100 instead change nothing?)
# 2. **Layer dropout.** Fine-tune "mix" with `FinetuneConfig(..., layer_dropout=0.1)` (and with the larger
#    learning rate of exercise 1). Predict whether the mixing weights become more or less even.
# 3. **How much intermediate training?** Set `INTER_EPOCHS` to 0.03 and to 0.3 and rerun section 4. Predict
#    the nli dev accuracy, the directly-read entailment accuracy, and the two-stage gain on each target,
#    then compare with the measurements quoted after section 4.
# 4. **Frozen encoder, as in the BERT paper's NER table.** Fine-tune only the head: in your own loop
#    (lesson 11) or in `run_stage`, zero every gradient whose name starts with `bert.` before the optimiser
#    step. Compare last / mix / concat4 again. Does the difference between the readings grow, as it did for
#    Devlin et al.'s feature-based NER?
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `dropout` (layer dropout replays a mask the same way) and `linear`.
