# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 07 — The corpus and the pretraining data: documents, NSP pairs, MLM masking (80/10/10)
#
# BERT learns from two games played on plain text, with no human labels:
#
# * **Masked language modelling (MLM):** about 15% of the tokens are hidden or altered; the model must
#   say what was there.
# * **Next sentence prediction (NSP):** the input is two segments `[CLS] A [SEP] B [SEP]`; half the
#   time B really follows A in the same document, half the time B comes from another document; the
#   model must say which.
#
# Both games are decided *before* training: a preprocessing script turns the corpus into fixed
# "instances" (token ids, segment ids, masked positions and their answers, the NSP label) and writes them
# to disk. This lesson builds those instances on the bundled corpus, one step at a time, and prints them
# as text with the masks visible. The package's version (`minibert/pretraining/data.py`, the command
# `minibert prepare`) follows google-research/bert `create_pretraining_data.py` draw by draw.
#
# **Run time:** about 35 s on a 2-core laptop (quick mode `MINIBERT_QUICK=1`: the first 600 lines of the
# corpus, about 3 s). Builds on lesson 06 (tokenisation).

# %%
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minibert import lessons
from minibert.paths import data_dir
from minibert.pretraining.data import (DataConfig, InstanceMaker, PretrainingDataset, documents_from_lines,
                                       prepare, truncate_seq_pair)
from minibert.tokenization import BertTokenizer, write_vocab
from minibert.tokenization.trainer import train_wordpiece

QUICK, FIGURES = lessons.setup(globals().get("__file__"))
SEED = 12345                             # the original script's default seed

# %% [markdown]
# ## 1. The corpus: sentences and documents
#
# The input format is the original's: **one sentence per line, a blank line between documents.** The
# sentence boundaries matter (segments A and B are made of whole sentences) and so do the document
# boundaries (a "next" sentence must come from the same document, a "random" one from another).
#
# minibert ships a generated corpus, `data/corpus/train.txt`: little stories and fact sheets written
# by a grammar (see `data/README.md`). If it is missing we fall back to a few hand-written documents.

# %%
FALLBACK = """Mira was a farmer in Dunmere.
The farmer fed the goats every morning.
One day, a goat that the children liked ran away.
The children searched the hills behind the village.
They found the goat beside the old mill.
In the end, Mira was happy.

Robins are birds.
A robin has feathers.
Robins eat worms.
Robins are not fish.

There was a sailor named Tobin in Harwick.
The sailor painted his boat blue.
A storm broke the mast of the boat.
Tobin did not give up.
The neighbors helped him repair the mast.
That night, Tobin slept well.

Cows are animals.
A cow has four legs.
Cows eat grass.
Cows do not have feathers.

There was a cook named Lena in Brookfield.
The cook baked bread for the market.
The bread was warm but the soup was cold.
The customers that the cook knew came back every day.
In the end, Lena opened a second shop.
""".split("\n")

corpus_file = data_dir() / "corpus" / "train.txt"
if corpus_file.is_file():
    with open(corpus_file, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line, _ in zip(f, range(600))] if QUICK else f.read().split("\n")
    source = f"{corpus_file.relative_to(data_dir().parent)}" + (" (first 600 lines)" if QUICK else "")
else:
    lines, source = FALLBACK, "the fallback documents (no bundled corpus found)"
documents_text = [[]]
for line in lines:
    if line.strip():
        documents_text[-1].append(line)
    elif documents_text[-1]:
        documents_text.append([])
documents_text = [d for d in documents_text if d]
n_words = sum(len(line.split()) for d in documents_text for line in d)
print(f"{source}: {len(documents_text):,} documents, {sum(map(len, documents_text)):,} sentences, "
      f"{n_words:,} words (split at spaces)")
for d in documents_text[:2]:
    print("\n".join("  | " + s for s in d))
    print("  |")

# %% [markdown]
# ## 2. Token ids, once per sentence
#
# Every sentence is tokenised once (lesson 06), and the ids are reused by every pass over the corpus.
# We learn a small WordPiece vocabulary on the text itself. 1,000 tokens is small on purpose: many words
# then split into pieces (`##...`), which makes whole-word masking (section 6) visible. (The bundled
# `data/vocab.txt`, 4,096 tokens, the default of `minibert pretrain`, makes almost every word of this
# corpus one token.)

# %%
t0 = time.perf_counter()
tokenizer = BertTokenizer(train_wordpiece(lines, vocab_size=1000))
documents = documents_from_lines(lines, tokenizer)
print(f"vocabulary: {tokenizer.vocab_size} tokens; tokenised in {time.perf_counter() - t0:.1f} s")
print(f"{len(documents):,} documents, {sum(len(s) for d in documents for s in d):,} tokens, "
      f"{np.mean([sum(map(len, d)) for d in documents]):.1f} tokens per document")
print(documents_text[0][1], "->", tokenizer.tokenize(documents_text[0][1]))
print("                ids ->", documents[0][1])

# %% [markdown]
# ## 3. NSP pairs: chunks of sentences, A and B
#
# For each document, walk through its sentences and collect them into a **chunk** until the chunk holds
# `target_length` tokens or the document ends. `target_length` is `max_seq_length - 3` (room for
# `[CLS]`, `[SEP]`, `[SEP]`), except that for 10% of the documents (`short_seq_prob = 0.1`) it is drawn
# uniformly from [2, max_seq_length - 3], so the model also meets short inputs, as it will when
# fine-tuned on single sentences.
#
# Each chunk is split at a random sentence boundary: A is the first `a_end` sentences (`a_end` uniform in
# [1, len(chunk) - 1]). Then a coin:
#
# * heads (probability 1/2): B is the **rest of the chunk**, label 0 ("IsNext");
# * tails (and always when the chunk has a single sentence): B is text from a **random other document**,
#   starting at a random sentence and long enough to fill the target, label 1 ("NotNext"). The chunk's
#   sentences after A were not used, so they are **put back**: the walk steps back and they start the
#   next chunk.
#
# To see several chunks in one of these short documents, we use a small `max_seq_length` of 24 here.

# %%
small = DataConfig(max_seq_length=24, short_seq_prob=0.0)
maker = InstanceMaker(tokenizer, small)
doc_index = max(range(min(len(documents), 50)), key=lambda i: len(documents[i]))  # a long document


def text(ids):
    return tokenizer.decode(ids, skip_special_tokens=False)


def segments(inst):
    ids = inst.original_ids()
    return ids[1:1 + inst.num_a], ids[2 + inst.num_a:-1]


print(f"document {doc_index}:")
for s in documents[doc_index]:
    print("  |", text(s))
for inst in maker.instances_from_document(documents, doc_index, random.Random(3)):
    a, b = segments(inst)
    print(f"\nlabel {int(inst.is_random_next)} ({'random B' if inst.is_random_next else 'IsNext'})")
    print("  A:", text(a))
    print("  B:", text(b))

# %% [markdown]
# Follow the A segments: after an IsNext pair the next A starts after B; after a random pair it starts
# right after A, because the sentences that would have been B were put back. Some segments start or end
# in mid-sentence: that is truncation at work, next.
#
# **Truncation.** When A + B is longer than `max_seq_length - 3` (a chunk can overshoot the target by
# the sentence that crossed it; a random B can be long), `truncate_seq_pair` removes one token at a time
# from the **longer** segment, from its front or its back with equal probability. Cutting only the back
# would teach the model that a segment never starts in mid-sentence.

# %%
a = "the goat that the children liked ran away over the hills".split()
b = "the children searched".split()
for seed in range(3):
    a2, b2 = list(a), list(b)
    truncate_seq_pair(a2, b2, 8, random.Random(seed))
    print(f"seed {seed}: A = {' '.join(a2)!r:40} B = {' '.join(b2)!r}")

# %% [markdown]
# ## 4. MLM masking: 15%, then 80/10/10
#
# For each instance: the candidates are all positions except `[CLS]` and `[SEP]`; they are shuffled and
# the first `num_to_predict = min(max_predictions_per_seq, max(1, round(0.15 * len(tokens))))` are chosen
# (the length counts the three special tokens). Each chosen token is
#
# * replaced by `[MASK]` with probability 0.8,
# * **kept** with probability 0.1,
# * replaced by a **random** vocabulary token with probability 0.1 (uniform over the whole vocabulary,
#   special tokens included, as in the original).
#
# and the model must predict the original token at every chosen position. Why not always `[MASK]`?
# Fine-tuning inputs never contain `[MASK]`; if the model only ever had to think about masked positions,
# it could learn that an unmasked token is always right and not build a good representation of it.
# Keeping or corrupting some chosen tokens forces it to check every token.
#
# Below, `x(y)` means: the model sees `x` and must predict `y`. So `[MASK](dog)` is masked, `dog(dog)`
# was chosen but kept, `cat(dog)` was replaced by a random token.

# %%
config = DataConfig(dupe_factor=2 if QUICK else 5)  # the original's defaults, fewer passes
maker = InstanceMaker(tokenizer, config)


def show_masked(inst):
    answers = dict(zip(inst.masked_lm_positions, inst.masked_lm_ids))
    seen = tokenizer.convert_ids_to_tokens(inst.input_ids)
    words = [f"{w}({tokenizer.convert_ids_to_tokens(answers[i])})" if i in answers else w
             for i, w in enumerate(seen)]
    return " ".join(words)


rng = random.Random(SEED)
examples = [inst for i in range(3) for inst in maker.instances_from_document(documents, i, rng)]
for inst in examples[:3]:
    print(f"label {int(inst.is_random_next)}, {len(inst.input_ids)} tokens, "
          f"{len(inst.masked_lm_positions)} predictions:")
    print("  ", show_masked(inst), "\n")

# %% [markdown]
# ## 5. The whole corpus, and the statistics
#
# `create_instances` makes `dupe_factor` passes over all documents (each pass draws new chunks, pairs and
# masks from the same tokenised text) and shuffles the result. One `random.Random(seed)` makes every
# draw, so the same seed gives the same instances.

# %%
t0 = time.perf_counter()
rng = random.Random(SEED)
docs = list(documents)
rng.shuffle(docs)                                      # as the original (and `minibert prepare`) do
instances = maker.create_instances(docs, rng)
print(f"{len(instances):,} instances from {len(docs):,} documents x {config.dupe_factor} passes "
      f"in {time.perf_counter() - t0:.1f} s")

kinds = Counter()
n_tokens = n_pred = 0
for inst in instances:
    n_tokens += len(inst.input_ids)
    for p, label in zip(inst.masked_lm_positions, inst.masked_lm_ids):
        seen = inst.input_ids[p]
        n_pred += 1
        kinds["[MASK]" if seen == tokenizer.mask_token_id else "kept" if seen == label else "random"] += 1
random_share = np.mean([inst.is_random_next for inst in instances])
print(f"predicted: {n_pred:,} of {n_tokens:,} tokens = {n_pred / n_tokens:.3f}")
print("of the predictions: " + ", ".join(f"{k} {kinds[k] / n_pred:.3f}" for k in ("[MASK]", "kept", "random")))
print(f"NSP: label 1 (random B) in {random_share:.3f} of the instances")
lengths = np.array([len(inst.input_ids) for inst in instances])
print(f"length: mean {lengths.mean():.1f}, max {lengths.max()} of {config.max_seq_length}")

# %% [markdown]
# Three things to notice.
#
# * The prediction rate is 15% of the tokens, counting `[CLS]` and the two `[SEP]`s (they are never
#   chosen, so 15% of the *text* tokens is slightly more). The 80/10/10 split comes out as drawn; "kept"
#   is a hair above 10% because a random token is the original one with probability 1/V.
# * **More than half the instances are "random B"**, although the coin is fair: a random B leaves the
#   rest of its chunk to be used again, so tails make more instances than heads, and a one-sentence
#   chunk never flips the coin at all. The original script has the same imbalance.
# * The instances are much shorter than `max_seq_length`: these documents are short, and a chunk never
#   crosses a document boundary. The rest of each row is padding (section 7).
#
# **Short targets.** One pass with `short_seq_prob` 0.1 and one with 0, side by side. On this corpus the
# effect is small: a document shorter than its (short) target is one chunk either way, so only the 10% of
# documents whose target falls below their length are cut into more, shorter instances. On long
# documents (Wikipedia articles, books) those 10% are the only short inputs the model ever sees.

# %%
one_pass = {p: InstanceMaker(tokenizer, DataConfig(short_seq_prob=p)).create_instances(docs, random.Random(SEED), 1)
            for p in (0.1, 0.0)}
fig, ax = plt.subplots(figsize=(6, 3))
bins = np.arange(0, config.max_seq_length + 5, 4)
for p, made in one_pass.items():
    lens = np.array([len(inst.input_ids) for inst in made])
    print(f"short_seq_prob {p}: {len(made):,} instances, mean length {lens.mean():.1f}, "
          f"under 32 tokens {np.mean(lens < 32):.3f}")
    ax.hist(lens, bins=bins, histtype="step", lw=2, label=f"short_seq_prob {p}")
ax.set_xlabel("instance length (tokens, with [CLS] and [SEP]s)")
ax.set_ylabel("instances")
ax.set_title("lengths of one pass of instances", fontsize=10)
ax.set_ylim(0, ax.get_ylim()[1] * 1.3)           # headroom: the legend sits above the bars, not on them
ax.legend(loc="upper center", ncol=2, fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "07_lengths.png", dpi=100)
print("saved", FIGURES / "07_lengths.png")

# %% [markdown]
# ## 6. Whole-word masking
#
# With WordPiece, masking `##ing` alone is an easy guess from the piece before it. Whole-word masking
# (a later release of BERT) groups a word's pieces and masks all or none of them; the 80/10/10 draw is
# still made per piece. We mask the same sequence both ways and count the words that were only partly
# chosen.

# %%
wwm = InstanceMaker(tokenizer, DataConfig(whole_word_mask=True))
cont = [t.startswith("##") for t in tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))]


def partial_words(inst):
    ids, chosen = inst.original_ids(), set(inst.masked_lm_positions)
    words = []
    for i, t in enumerate(ids):
        if cont[t] and words:
            words[-1].append(i)
        else:
            words.append([i])
    return sum(0 < len(chosen.intersection(w)) < len(w) for w in words)


example = next(inst for inst in examples if any(cont[t] for t in inst.original_ids()))
ids = example.original_ids()
a, b = ids[1:1 + example.num_a], ids[2 + example.num_a:-1]
for name, m in (("per piece ", maker), ("whole word", wwm)):
    inst = m.make_instance(list(a), list(b), example.is_random_next, random.Random(1))
    print(f"{name}:", show_masked(inst))
for name, m in (("per piece", maker), ("whole word", wwm)):
    made = m.create_instances(docs[:200], random.Random(SEED), 1)
    print(f"{name}: {sum(map(partial_words, made))} partly masked words in {len(made)} instances")

# %% [markdown]
# ## 7. Arrays, shards, and `minibert prepare`
#
# For training, each instance becomes a row of fixed-size arrays, padded with 0, named exactly like the
# arguments of `BertForPreTraining.forward`:
#
# | array | shape | content |
# |---|---|---|
# | `input_ids` | (N, T) int32 | `[CLS] A [SEP] B [SEP]` after masking, then 0 |
# | `token_type_ids` | (N, T) int8 | 0 for `[CLS] A [SEP]`, 1 for `B [SEP]`, 0 for padding |
# | `attention_mask` | (N, T) int8 | 1 for tokens, 0 for padding |
# | `masked_lm_positions` | (N, P) int32 | where the predictions are, increasing, then 0 |
# | `masked_lm_ids` | (N, P) int32 | the original tokens there, then 0 |
# | `masked_lm_weights` | (N, P) float32 | 1 for a real prediction, 0 for padding |
# | `next_sentence_labels` | (N,) int32 | 0 IsNext, 1 random |
#
# `prepare` does everything above on files and writes `.npz` shards with a `meta.json` (options, seed,
# counts, the vocabulary's sha256 so a model with another vocabulary is refused). The same from the
# command line, with the bundled 4,096-token vocabulary (`data/vocab.txt`):
#
# ```
# minibert prepare data/corpus/train.txt --vocab data/vocab.txt --out runs/data --dupe-factor 5 --heldout-fraction 0.02
# ```

# %%
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    (tmp / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    vocab_file = write_vocab(tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size)), tmp / "vocab.txt")
    meta = prepare([tmp / "corpus.txt"], vocab_file, tmp / "data", DataConfig(dupe_factor=1), seed=SEED,
                   heldout_fraction=0.05, log=print)
    dataset = PretrainingDataset(tmp / "data")
    heldout = PretrainingDataset(tmp / "data", split="heldout")
    print(f"train {len(dataset):,} instances, heldout {len(heldout):,} (from documents never used in train)")
    batch = next(dataset.batches(8, np.random.default_rng(SEED), epoch=0))
for name, array in batch.items():
    print(f"{name:22} {str(array.dtype):8} {array.shape}")
n = int(batch["attention_mask"][0].sum())
print("row 0, first", n, "positions:")
for name in ("input_ids", "token_type_ids", "attention_mask"):
    print(f"  {name:16}", batch[name][0, :n].tolist())
for name in ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights", "next_sentence_labels"):
    print(f"  {name:22}", batch[name][0].tolist())
print(f"padding: {1 - dataset.arrays['attention_mask'].mean():.0%} of all token slots")

# %% [markdown]
# `dataset.batches(batch_size, rng, epoch)` shuffles with an order that depends only on the seed and
# the epoch, and `start=k` skips the first k batches, so a training run that stops can resume on exactly
# the batch it would have seen next. Lesson 08 trains on these batches.
#
# ## What you should see
#
# Seed 12345 throughout. Counts depend on the corpus (the numbers below are for the bundled corpus as
# generated by `minibert corpus --seed 0 --words 1400000`, first the full run, then `MINIBERT_QUICK=1`);
# the rates hold for any corpus within the stated tolerance.
#
# - Corpus: 28,282 documents, 204,337 sentences, 1,371,975 words; 74.5 tokens per document with the
#   1,000-token vocabulary. Quick: 73 documents, 528 sentences, 70.3 tokens per document.
# - Section 5 (5 passes; quick 2): 266,151 instances (quick 285). Predictions 0.150 of all tokens in both
#   modes; of them `[MASK]` / kept / random 0.800 / 0.100 / 0.100 (quick 0.790 / 0.101 / 0.109: a few
#   thousand predictions, so expect +- 0.02 there).
# - NSP: label 1 in 0.581 of the instances (quick 0.600), not 0.50 (see section 5).
# - Mean length 63.9 of 128 tokens (quick 58.3). One pass with / without short targets: 53,284 / 50,159
#   instances, 0.184 / 0.140 of them under 32 tokens (quick 134 / 125, 0.216 / 0.152).
# - Whole-word masking: 0 partly masked words; per piece: 1,029 in the first 200 documents (quick 281).
# - `prepare` with `--heldout-fraction 0.05`: 26,868 + 1,414 documents, 50,569 + 2,692 instances; 50% of
#   the token slots are padding (quick: 124 + 7 instances, 56%).
#
# ## Exercises
#
# 1. In `InstanceMaker.mask`, always use `[MASK]` (drop the 10% keep / 10% random). Predict what the
#    statistics of section 5 print, which test in `tests/test_pretraining_data.py` fails, and what a
#    model trained this way would be worse at when fine-tuned.
# 2. Delete the "put back" line (`i -= len(chunk) - a_end`) in `instances_from_document`. Predict how the
#    number of instances and the share of label 1 change, then run section 5 again.
# 3. Set `max_seq_length=64` in section 5. Predict the mean length and the padding share; which is the
#    better choice for this corpus if the goal is to train fast?
# 4. Make the random replacement skip the special tokens. How many of the random replacements in section
#    5 were special tokens before the change? (Count them, then compare with 5/V of the 10%.)
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `masking` (80/10/10, labels only at the chosen positions).
