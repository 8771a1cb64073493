# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 10 — Inside the representations: linear probes per layer, control tasks, attention heads
#
# Lesson 09 asked the model questions through its masked-LM head. Here we open it up. For every layer
# we take the vectors the encoder computes and ask: **can a linear classifier read a feature from
# them?** Part of speech, chunk tags, the number of a verb's subject, the parts of an NPI construction.
# Then we look at the attention heads: what does each one look at?
#
# Three questions keep us honest (they are the lesson's real subject):
# 1. **Would a random model do as well?** A randomly initialised encoder of the same size mixes the
#    word vectors of a sentence too; whatever it makes decodable, pretraining did not add.
# 2. **Is it already in the embeddings?** Layer 0 (word + position embeddings) is the starting point of
#    every curve; a feature that is lexical (the part of speech of *the*) is decodable there already.
# 3. **Is the probe reading the feature or memorising words?** Hewitt & Liang (2019) give every word
#    type a random label (a *control task*); a probe that scores well on it is memorising. The
#    **selectivity** is accuracy minus control accuracy.
#
# **Run time:** about 80 s on a 2-core laptop (quick mode `MINIBERT_QUICK=1`: about 10 s, 300 + 100
# sentences and shorter probe training). Builds on lesson 09; uses `minibert.probing`.

# %%
import numpy as np

from minibert import functional as F
from minibert import lessons
from minibert.models import BertForPreTraining
from minibert.optim import AdamW
from minibert.paths import data_dir
from minibert.probing import attention, figures, representations, structural
from minibert.probing.data import encode_words, hidden_states, load_eval_set
from minibert.probing.linear import LinearProbe, ProbeConfig, control_labels, probe_layers
from minibert.tokenization import BertTokenizer

QUICK, FIGURES = lessons.setup(globals().get("__file__"))
SEED = 0

MODEL_DIR = lessons.pretrained_model()        # MINIBERT_MODEL: tiny (default), mini, a folder
model = BertForPreTraining.from_pretrained(MODEL_DIR).eval()
tokenizer = BertTokenizer.from_pretrained(MODEL_DIR if (MODEL_DIR / "vocab.txt").is_file() else data_dir())
random_model = BertForPreTraining(model.config, np.random.default_rng(SEED)).eval()
LABELS = {"model": "pretrained", "random": "random init"}
L = model.config.num_hidden_layers
CONFIG = ProbeConfig(steps=300 if QUICK else 1500)

rows = load_eval_set("probing")
if QUICK:
    rows = [r for r in rows if r["split"] == "train"][:300] + [r for r in rows if r["split"] == "test"][:100]
npi_rows = load_eval_set("npi")
if QUICK:
    npi_rows = [r for r in npi_rows if r["group"] < 50]
print(f"{len(rows)} annotated sentences ({sum(r['split'] == 'train' for r in rows)} train), "
      f"{len(npi_rows)} NPI sentences; probes trained for {CONFIG.steps} updates")

# %% [markdown]
# ## 1. One vector per word, per layer
#
# `hidden_states` are the L + 1 arrays the encoder produces: the embedding output, then each layer's.
# The annotations are per word, the model's vectors per WordPiece, so we read each word at its **first
# piece** (the usual choice; averaging the pieces is the other). An invented name shows the difference.

# %%
words = rows[0]["tokens"]
enc = encode_words(tokenizer, words)
pieces = tokenizer.convert_ids_to_tokens(enc.input_ids)
print("words: ", words)
print("pieces:", pieces)
print("first piece of each word:", [pieces[s] for s in enc.word_starts])
states = hidden_states(model, [enc.input_ids])[0]                 # (L+1, T, H)
print("hidden states:", states.shape, "-> word vectors:", states[:, enc.word_starts].shape)

# %% [markdown]
# ## 2. A linear probe, by hand
#
# A probe is softmax regression: `logits = x W^T + b`, cross-entropy, AdamW. Everything is already in
# the package from lessons 01-02 and 08: `functional.linear_forward/backward`,
# `functional.cross_entropy_forward/backward`, `optim.AdamW`. We standardise the features with the
# training set's mean and deviation (an affine change a linear probe could undo, so it changes what is
# easy to optimise, not what is decodable). Here is the training loop for POS on the last layer.

# %%
tasks = representations.build_tasks(model, tokenizer, rows, npi_rows, np.random.default_rng(SEED))
pos = tasks["pos"]
x, y, train = pos["features"][L], pos["labels"], pos["train"]
C, H = len(pos["classes"]), x.shape[1]
print(f"POS: {len(pos['classes'])} tags {pos['classes']}; {train.sum()} training words, {(~train).sum()} test words")

rng = np.random.default_rng(SEED)
W = (rng.standard_normal((C, H)) * 0.01).astype(np.float32)          # (C, H)
b = np.zeros(C, np.float32)
dW, db = np.zeros_like(W), np.zeros_like(b)
mean, std = x[train].mean(0), x[train].std(0)
std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
xs = ((x - mean) / std).astype(np.float32)
opt = AdamW([("weight", W, dW), ("bias", b, db)], lr=CONFIG.lr, weight_decay=CONFIG.weight_decay, eps=1e-8)
xtr, ytr = xs[train], y[train]
step = 0
while step < CONFIG.steps:
    order = rng.permutation(len(xtr))
    for s in range(0, len(order), CONFIG.batch_size):
        if step == CONFIG.steps:
            break
        idx = order[s:s + CONFIG.batch_size]
        logits, cache = F.linear_forward(xtr[idx], W, b)               # (N, C)
        loss, ce_cache = F.cross_entropy_forward(logits, ytr[idx])
        dW.fill(0)
        db.fill(0)
        F.linear_backward(F.cross_entropy_backward(1.0, ce_cache), cache, dW, db)
        opt.step()
        step += 1
by_hand = float((F.linear_forward(xs[~train], W, b)[0].argmax(1) == y[~train]).mean())

rng = np.random.default_rng(SEED)                  # the same draws: initialisation, then the batch order
probe = LinearProbe(H, C, rng)
probe.fit(x[train], y[train], rng, CONFIG)
package = probe.accuracy(x[~train], y[~train])
print(f"POS test accuracy, last layer: by hand {by_hand:.4f}, LinearProbe {package:.4f} (equal: {by_hand == package})")

# %% [markdown]
# ## 3. Control tasks and selectivity
#
# Part of speech is mostly a property of the word: *the* is always DET. A probe could score well by
# recognising words and remembering their tags, without the vector encoding anything syntactic. The
# control task keeps the structure of the real one (same words, one label per word type, the same label
# distribution) and throws away the linguistics: each word type gets a **random** tag.

# %%
control = control_labels(pos["types"], y, np.random.default_rng([SEED, 0]))
example = {}
for word, tag, ctrl in zip(pos["types"], y, control):
    example.setdefault(word, (pos["classes"][tag], pos["classes"][ctrl]))
print("word -> (real tag, control tag):", {w: example[w] for w in ["the", "dog", "runs", "happy", "."] if w in example})
res = probe_layers(pos["features"], y, train, C, np.random.default_rng(SEED), CONFIG, control)
for layer in range(L + 1):
    print(f"POS layer {layer}: accuracy {res['test_accuracy'][layer]:.3f}  control {res['control_accuracy'][layer]:.3f}  "
          f"selectivity {res['selectivity'][layer]:+.3f}")

# %% [markdown]
# ## 4. Every task, every layer, both models
#
# `representations.TASKS`:
# * **pos**, **chunk**: every word (the chunk tag says where a word sits in its phrase: B-NP, I-VP, ...);
# * **subject_number**: the verb is replaced by `[MASK]` and the probe reads the mask's vector: is the
#   verb's subject singular or plural? Nothing at the mask says so; it can only come from context
#   (singular and plural examples are balanced, chance is 0.5);
# * **npi**, **licensor**, **scope** (from `npi.jsonl.gz`, read at the item *ever*/*often*): is the item
#   the NPI; is its clause introduced by *whether* or *that*; is it inside that clause.

# %%
results = {"model": representations.probe_tasks(tasks, np.random.default_rng(SEED), CONFIG)}
random_tasks = representations.build_tasks(random_model, tokenizer, rows, npi_rows, np.random.default_rng(SEED))
results["random"] = representations.probe_tasks(random_tasks, np.random.default_rng(SEED), CONFIG)
for task in representations.TASKS:
    for name in ("model", "random"):
        r = results[name][task]
        ctrl = (" control " + " ".join(f"{a:.2f}" for a in r["control_accuracy"])) if "control_accuracy" in r else ""
        print(f"layers {task:15} {LABELS[name]:11} accuracy " + " ".join(f"{a:.2f}" for a in r["test_accuracy"])
              + ctrl + f"   (majority {r['majority']:.2f})")
figures.plot_layers(results, LABELS, FIGURES / "10_layers.png")
figures.plot_selectivity(results, LABELS, FIGURES / "10_selectivity.png")
best = int(np.argmax(results["model"]["pos"]["test_accuracy"]))
print(f"\nbest layer for POS: {best} (accuracy {results['model']['pos']['test_accuracy'][best]:.3f}, "
      f"selectivity {results['model']['pos']['selectivity'][best]:+.3f})")

# %% [markdown]
# ![layers](figures/10_layers.png)
# ![selectivity](figures/10_selectivity.png)
#
# **Reading it.**
# * POS and chunk tags are high at layer 0 already (0.98, 0.95): mostly lexical. The encoder adds the
#   last few points (0.99-1.00 at layers 1-2) while the control accuracy *falls* (0.74 -> 0.68), so the
#   selectivity grows with depth (+0.25 -> +0.32): the upper layers make the tag easier to read and the
#   word identity harder to memorise. The random model reaches 0.83 with a selectivity of 0.07.
# * The random model's curves are not at chance: it averages word vectors with near-uniform attention,
#   so the identity of the words nearby becomes decodable (that is why *licensor* rises above 0.5 in
#   the random model too). Only the difference to the pretrained curve is pretraining's work.
# * *subject_number* at the mask is the cleanest test of syntax here: layer 0 holds no information
#   about it (0.53), so any accuracy is built by attention from context: 0.84 after layer 1, 0.88 after
#   layer 2, against 0.57 for the random model. The number is decodable at the mask even though the
#   MLM head's agreement (lesson 09) follows the nearest noun across attractors: decodable is not used
#   (or not used well).
# * *npi* is lexical (1.0 at layer 0) and *scope* is given away by position (the item stands at a
#   fixed place in each frame): both are 1.0 everywhere, for both models, and say nothing about the
#   encoder. A probe result is only as good as its controls.
#
# "Are representations hierarchical?" Tenney et al. (2019) found parts of speech and other syntactic
# labels best decoded in the lower layers of a 24-layer BERT and semantic ones (roles, coreference)
# higher up; Hewitt & Manning (2019, section 5 below) found parse trees best encoded in the middle
# layers. With 2 layers the question is smaller, and the answer a modest yes: the lexical features
# are nearly complete at layer 0 and peak at layer 1, while the context-dependent ones
# (*subject_number*, *licensor*: 0.50 -> 0.95 -> 0.98) still gain from the second layer.

# %% [markdown]
# ## 5. The structural probe: is the parse tree a linear map away?
#
# Hewitt & Manning (2019) asked for more than a label per word. They learn one matrix B so that the
# squared distance `||B (h_i - h_j)||^2` between two words' vectors approximates the number of edges
# between them in the dependency tree, then read a tree back (the minimum spanning tree of the
# predicted distances) and score it against the gold tree (UUAS, punctuation left out). The gradient is
# derived in `minibert/probing/structural.py` (a graph Laplacian appears) and checked against finite
# differences in the tests. The baseline is the **linear chain**: link every word to the next one.

# %%
tree = {}
for name, m in (("model", model), ("random", random_model)):
    vectors = representations.word_features(m, tokenizer, [r["tokens"] for r in rows])
    tree[name] = structural.structural_probe_layers(vectors, rows, np.random.default_rng(SEED),
                                                    steps=200 if QUICK else 400)
    print(f"structural {LABELS[name]:11} UUAS " + " ".join(f"{u:.2f}" for u in tree[name]["uuas"])
          + "   Spearman " + " ".join(f"{r:.2f}" for r in tree[name]["spearman"]))
print(f"linear chain baseline UUAS {tree['model']['linear_chain_uuas']:.2f}")
figures.plot_structural(tree, LABELS, FIGURES / "10_structural.png")

# %% [markdown]
# ![structural](figures/10_structural.png)
#
# Hewitt & Manning found the tree best encoded in the middle layers of BERT and ELMo, far above the
# linear chain and above the same probe on non-contextual (layer-0) vectors. Here the pretrained model
# rises from UUAS 0.64 at layer 0 to 0.71-0.73 at layers 1-2, against 0.51 for the linear chain and
# 0.51-0.55 for the random model: the embeddings already hold some tree (word classes predict
# attachments), and the encoder adds more.

# %% [markdown]
# ## 6. Attention heads (Clark et al. 2019)
#
# Per head we average, over every token of the test sentences: the attention mass on `[CLS]`, on
# `[SEP]`, on punctuation, on the previous and the next token, and the entropy of the attention
# distribution (log T nats is uniform attention). Clark et al. found BERT-base heads that attend almost
# entirely to the previous or next token, heads that put most of their mass on `[SEP]` (a "no-op" when
# the head has nothing to do), and broad heads in the lower layers.

# %%
test_rows = [r for r in rows if r["split"] == "test"]
att = {name: attention.attention_analysis(m, tokenizer, test_rows) for name, m in
       (("model", model), ("random", random_model))}
A = model.config.num_attention_heads
print(f"{'head':8}" + "".join(f"{s:>18}" for s in attention.STATS))
for layer in range(L):
    for h in range(A):
        print(f"L{layer + 1} H{h}   " + "".join(
            f"{att['model']['stats'][s][layer, h]:>9.2f} /{att['random']['stats'][s][layer, h]:>6.2f} " for s in attention.STATS))
figures.plot_head_stats({k: v["stats"] for k, v in att.items()}, LABELS, FIGURES / "10_head_stats.png")

# %% [markdown]
# **Dependency heads.** Turn the attention into word-level attention (attention *to* a word is the sum
# over its pieces, *from* a word the mean over its pieces) and ask, for each dependency relation: how
# often is a head's most-attended word the dependent's syntactic head? Clark et al. compare the best
# head with a **fixed-offset baseline** (always predict "the head is k words to the left/right", best k
# per relation): determiners' heads are almost always the next word, so a head that only looks one
# word ahead is not doing syntax.

# %%
for rel, b in att["model"]["best"].items():
    rb = att["random"]["best"].get(rel)
    print(f"dependency {rel:10} n={b['n']:4}  best head L{b['layer']} H{b['head']} {b['accuracy']:.2f}   "
          f"random model {rb['accuracy'] if rb else float('nan'):.2f}   fixed offset {b['offset']:+d}: {b['offset_accuracy']:.2f}")
figures.plot_dependency({k: v["best"] for k, v in att.items()}, LABELS, FIGURES / "10_dependencies.png")

sentence = next(r for r in test_rows if r["construction"] == "subject_rc" and r["agreement"])["tokens"]
encs, maps, pcs = attention.sentence_attentions(model, tokenizer, [sentence])
_, rmaps, _ = attention.sentence_attentions(random_model, tokenizer, [sentence])
figures.plot_attention_maps({"model": maps[0], "random": rmaps[0]}, pcs[0], LABELS, " ".join(sentence),
                            FIGURES / "10_attention_map.png")
print("heat map of:", " ".join(sentence))

# %% [markdown]
# ![heads](figures/10_head_stats.png)
# ![dependencies](figures/10_dependencies.png)
# ![map](figures/10_attention_map.png)
#
# **Reading it.** The random model's heads are all the same: near-uniform attention (entropy 2.39 nats,
# about the mean log T) spread evenly over [CLS], [SEP] and the neighbours. Pretraining made every head
# sharper and gave them Clark et al.'s "positional" roles: two heads read mostly the previous token
# (0.38, 0.59), one the next (0.54). Unlike BERT-base, no head parks on [CLS], and only one puts a fifth
# of its mass on [SEP]. The dependency table shows why the fixed-offset baseline matters: the head that
# "finds" determiners' heads 99% of the time is the next-token head, and a fixed offset of +1 does as
# well. Where an offset fails (objects, relative clauses), no head of this model succeeds either;
# Clark et al. found BERT-base heads that beat the offset baseline on such relations (a head in which
# direct objects attend to their verb, for one).
#
# ## 7. The limits of probing
#
# * **Decodable is not used.** A probe shows that a feature can be read out linearly, not that the
#   model's predictions rely on it. (Lesson 09's cloze probes test use, but only through the head.)
# * **Capacity.** A more powerful probe (an MLP) reads more, including what the model merely
#   memorised; control tasks and selectivity put a number on that. Our probes are linear and trained
#   for a fixed number of updates with a little weight decay; change either and the curves move.
# * **Baselines decide the story.** Without layer 0 and the random model, the *npi* and *scope* curves
#   would look like a triumph.
# * **Attention is not explanation.** A head's argmax hitting the dependency head is a correlation; the
#   value vectors, the residual stream and the other heads carry the rest.
# * **Methods disagree.** Cloze, linear probes and attention can give different answers about the same
#   feature; report all three, with their baselines (`minibert probe` does).

# %% [markdown]
# ## What you should see
#
# Seed 0, the shipped `data/pretrained/tiny`. Full run; quick run (400 sentences, 300 probe updates, 200
# structural-probe updates) in brackets, expect +-0.05 on accuracies there.
#
# * Section 2: the hand-written loop and `LinearProbe` give exactly the same test accuracy, 0.9974
#   (0.9942).
# * POS by layer 0 / 1 / 2: 0.98 / 1.00 / 1.00, control 0.74 / 0.71 / 0.68, selectivity +0.25 / +0.29 /
#   +0.32 (control 0.66 / 0.65 / 0.62); the random model 0.83 everywhere, selectivity 0.07.
# * subject_number 0.53 / 0.84 / 0.88 (0.53 / 0.82 / 0.84); random model 0.57 (0.53) at every layer.
# * licensor 0.50 / 0.95 / 0.98 (random model 0.50 / 0.81 / 0.84); npi and scope 1.00 everywhere, both
#   models.
# * Structural probe UUAS 0.64 / 0.71 / 0.73 (0.59 / 0.63 / 0.66); random model 0.51-0.55; linear chain
#   0.51 (0.49).
# * Attention: the random model's heads have entropy 2.39 nats and 0.09-0.10 on [CLS], [SEP], the previous and
#   the next token. The pretrained heads are sharper (1.1-2.2 nats): L1 H1 and L2 H1 read the previous
#   token (0.38, 0.59), L2 H0 the next one (0.54) and [SEP] (0.21); no head reads [CLS]. L2 H0's argmax
#   hits the head of 0.99 of the determiners (fixed offset +1: 1.00) and of 0.42 of all dependents (best
#   offset 0.40); object and relative-clause attachments (obj 0.12 vs offset 0.79, acl:relcl 0.01 vs 0.47)
#   are not found by any head.
#
# ## Exercises
#
# 1. Read each word at the *mean* of its pieces instead of the first piece (`word_features`). Which
#    task changes most? (Hint: which words are split?)
# 2. Replace the linear probe by a two-layer MLP (`linear -> gelu -> linear`, all in `functional`).
#    Predict what happens to accuracy and to selectivity on POS, then check.
# 3. Build a control task for *subject_number* from the *verb's* word type instead of the subject's.
#    Why is that a bad control here?
# 4. Give the structural probe rank 2 instead of 64 (`rank=2`). Predict the UUAS of each layer before
#    running it: how many dimensions does a tree of ten words need?
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `attention_head` and `multihead_attention` (the probabilities the head
# analysis reads).
