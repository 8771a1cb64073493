# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lesson 06 — Tokenisation: BasicTokenizer, WordPiece, and learning a vocabulary
#
# A model sees integers, not text. BERT turns text into integers in three moves:
#
# ```
# "Unaffable!"  --BasicTokenizer-->  ["unaffable", "!"]  --WordPiece-->  ["un", "##aff", "##able", "!"]  --vocab-->  ids
# ```
#
# 1. **BasicTokenizer** cleans the text and cuts it into words and punctuation marks. It knows nothing
#    about the vocabulary.
# 2. **WordPiece** cuts each word into pieces that *are* in the vocabulary, greedily, longest first.
#    A piece inside a word carries `##`, so the pieces can be glued back.
# 3. The vocabulary (`vocab.txt`, one token per line) maps each piece to its line number.
#
# Why pieces? A vocabulary of whole words is either huge or full of holes: every new name, typo or
# inflection becomes `[UNK]` and the model learns nothing from it. A vocabulary of characters has no
# holes but makes sequences long. Subword pieces sit in between: frequent words are one token, rare
# words are spelled with a few frequent pieces, and nothing is ever unknown if every character is in.
#
# Google never published how BERT's vocabulary was learned; at the end we learn one the way Hugging
# Face's `tokenizers` does, with byte-pair-encoding merges, on the corpus that ships with minibert.
#
# **Run time:** about 5 seconds (`MINIBERT_QUICK=1`: about 2 seconds).

# %%
import time
import unicodedata
from collections import Counter

import matplotlib.pyplot as plt

from minibert import lessons
from minibert.paths import data_dir
from minibert.tokenization import SPECIAL_TOKENS, BasicTokenizer, BertTokenizer, WordpieceTokenizer
from minibert.tokenization.basic import clean_text, is_punctuation, split_on_punctuation, strip_accents
from minibert.tokenization.trainer import count_words, learn_wordpiece, train_wordpiece

QUICK, FIGURES = lessons.setup(globals().get("__file__"))

# %% [markdown]
# ## 1. BasicTokenizer, one step at a time
#
# **Clean.** NUL, the replacement character U+FFFD and every "control" character (Unicode categories
# C\*: format characters like the zero-width space, private-use characters, ...) are deleted; every
# whitespace character becomes a plain space. CJK ideographs get a space on each side, because Chinese
# is written without spaces and a single character is the only safe unit.

# %%
raw = "Caf\u00e9\u200b au\u00a0lait\x00 我爱北京!"
print(repr(raw))
print(repr(clean_text(raw)))

# %% [markdown]
# The zero-width space and the NUL vanished (so "Café" and "au" no longer touch invisible junk), the
# no-break space became a space, and each Chinese character stands alone. Note a quirk of the rules:
# vertical tab `\x0b` is a *control* character, not whitespace, so it glues words together:

# %%
print(BasicTokenizer().tokenize("one\x0btwo three"))

# %% [markdown]
# **Lowercase and strip accents** (uncased models only). Accents are removed by decomposing each
# character (Unicode NFD: "é" becomes "e" followed by a *combining* acute accent, category Mn) and
# dropping the combining marks:

# %%
for word in ["Café", "naïve", "Ångström"]:
    nfd = unicodedata.normalize("NFD", word.lower())
    print(f"{word:10s} NFD: {[unicodedata.name(c) for c in nfd if unicodedata.category(c) == 'Mn']}"
          f"  ->  {strip_accents(word.lower())}")

# %% [markdown]
# **Split punctuation.** Every punctuation character becomes its own token. "Punctuation" is Unicode's
# P\* categories *plus* every ASCII character that is not a letter or digit, so `$ + ^ | ~` count too,
# while non-ASCII symbols such as `€` or emoji do not:

# %%
for ch in ".?«—$^+€😀":
    print(f"{ch!r:6} category {unicodedata.category(ch)}  punctuation: {is_punctuation(ch)}")
print(split_on_punctuation("wait...what?!"), split_on_punctuation("3.14"), split_on_punctuation("5€"))

# %% [markdown]
# All steps together:

# %%
basic = BasicTokenizer(do_lower_case=True)
for text in ["Wait...what?!", "The café in Ångström costs 3.14€, naïve!", "BERT是模型 😀ok"]:
    print(f"{text!r:45} -> {basic.tokenize(text)}")
print("cased:", BasicTokenizer(do_lower_case=False).tokenize("The café in Ångström"))

# %% [markdown]
# ## 2. WordPiece by hand
#
# Greedy longest-match-first: at each position take the longest vocabulary piece that starts there
# (with `##` unless it is the start of the word); if nothing fits, the *whole word* becomes `[UNK]`.

# %%
def wordpiece_by_hand(word, vocab, trace=False):
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):          # longest candidate first
            piece = ("##" if start > 0 else "") + word[start:end]
            if trace:
                print(f"  try {piece!r:14} {'<- take it' if piece in vocab else ''}")
            if piece in vocab:
                break
        else:
            return ["[UNK]"]                              # no piece fits at `start`
        pieces.append(piece)
        start = end
    return pieces


toy_vocab = {"un", "##aff", "##able", "##a", "aff", "able", "run", "##ning", "##n", "##ing"}
print(wordpiece_by_hand("unaffable", toy_vocab, trace=True))

# %% [markdown]
# Greedy is not optimal: it never backtracks. With `ab` and `##bc` but no `##c`, the word "abc" takes
# "ab" first and then fails, although "a" + "##bc" would cover it:

# %%
print(wordpiece_by_hand("abc", {"a", "ab", "##bc"}))
print(wordpiece_by_hand("running", toy_vocab), wordpiece_by_hand("runs", toy_vocab))

# %% [markdown]
# The package's `WordpieceTokenizer` gives the same answers (it only skips candidates longer than the
# longest vocabulary token, which cannot match anyway, and caches words it has seen):

# %%
wp = WordpieceTokenizer(toy_vocab)
for word in ["unaffable", "running", "runs", "affable", "unable"]:
    assert list(wp.tokenize_word(word)) == wordpiece_by_hand(word, toy_vocab)
    print(f"{word:10s} -> {wp.tokenize_word(word)}")

# %% [markdown]
# ## 3. BertTokenizer: the input format
#
# `encode` wraps the pieces in BERT's input format: `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, with
# segment ids (`token_type_ids`) 0 for the first part and 1 for the second, and an attention mask that
# is 0 on padding. Special tokens written in the text are kept whole.

# %%
tiny = BertTokenizer(list(SPECIAL_TOKENS) + sorted(toy_vocab | {"the", "cat", "!", "sat"}))
enc = tiny.encode("The cat sat!", "unaffable [MASK]", max_length=12, pad_to_max_length=True)
print("tokens        ", tiny.convert_ids_to_tokens(enc.input_ids))
print("input_ids     ", enc.input_ids)
print("token_type_ids", enc.token_type_ids)
print("attention_mask", enc.attention_mask)
print("decode        ", repr(tiny.decode(enc.input_ids)))

# %% [markdown]
# ## 4. Learning a vocabulary
#
# The trainer (as in Hugging Face `tokenizers`) is byte-pair encoding over WordPiece spellings:
#
# 1. count the words (BasicTokenizer output) in the corpus;
# 2. spell every word as its first character followed by `##` continuation characters:
#    `playing -> p ##l ##a ##y ##i ##n ##g`;
# 3. the vocabulary starts with the 5 special tokens and every character in both forms (`a`, `##a`), so
#    every word built from seen characters can be covered: no `[UNK]` on the training text;
# 4. repeatedly merge the most frequent adjacent pair of symbols (counts weighted by word frequency)
#    and add the merged symbol to the vocabulary, until it has the size you asked for.
#
# First by hand, recounting every pair at every step (slow, but obviously right):

# %%
def merges_by_hand(word_counts, n_merges):
    words = {w: [w[0]] + ["##" + c for c in w[1:]] for w in word_counts}
    merged_tokens = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, symbols in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += word_counts[w]
        # Most frequent; ties go to the pair whose strings sort first (the package's documented rule).
        (left, right), count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        new = left + right[2:]
        merged_tokens.append(new)
        print(f"  merge {left!r:8} + {right!r:8} -> {new!r:10} (seen {count} times)")
        for w, symbols in words.items():
            out, i = [], 0
            while i < len(symbols):
                if symbols[i:i + 2] == [left, right]:
                    out.append(new)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[w] = out
    print("  words now:", {w: " ".join(s) for w, s in words.items()})
    return merged_tokens


toy_counts = {"play": 5, "played": 4, "playing": 3, "player": 2, "laying": 2, "pray": 1}
by_hand = merges_by_hand(toy_counts, 6)

# %% [markdown]
# The package's trainer keeps the pair counts between merges and updates only the words a merge
# touches (a heap finds the most frequent pair), so it learns the same tokens far faster:

# %%
package = learn_wordpiece(toy_counts, vocab_size=1000, min_frequency=1)
alphabet_end = len(SPECIAL_TOKENS) + package.num_alphabet
print("alphabet:", package.tokens[len(SPECIAL_TOKENS):alphabet_end])
print("merges:  ", package.tokens[alphabet_end:alphabet_end + 6])
assert package.tokens[alphabet_end:alphabet_end + 6] == by_hand

# %% [markdown]
# ### On the bundled corpus
#
# minibert ships a generated English-like corpus (`data/corpus/train.txt`, BERT's format: one sentence
# per line, blank lines between documents). If it is missing, a paragraph stands in.

# %%
FALLBACK = """\
The keeper that the lizard saw drew quietly by the old lighthouse.
The parrot beside the hunters wanted every bucket that the sailors had carried.
In the morning, the meat was horrible but the song was not awful.
That night, the traveler slept well and dreamed of the singing camels.
A pilot doubted whether the sailors have often listened to the parrots.
The camels that touched a penguin sat quietly by the lighthouse.
The judges with the kitchen hoped that the cook has closed the gate.
The mouse climbed behind those hotels and watched the travelers walking home.
Every hunter that the pilots noticed was singing loudly in the kitchen.
The cooks were not tired, but the keepers walked slowly to the hotels.
The sailor noticed that the parrot was singing by the gate.
A traveler that the judges watched climbed quietly behind the lighthouse.""".split("\n")

corpus_dir = data_dir() / "corpus"
if (corpus_dir / "train.txt").is_file() and (corpus_dir / "heldout.txt").is_file():
    train_lines = (corpus_dir / "train.txt").read_text(encoding="utf-8").splitlines()
    heldout_lines = (corpus_dir / "heldout.txt").read_text(encoding="utf-8").splitlines()
    source = "bundled corpus"
else:
    train_lines, heldout_lines, source = FALLBACK[:-2], FALLBACK[-2:], "fallback paragraph"
if QUICK:
    train_lines, heldout_lines = train_lines[:20000], heldout_lines[:1000]

t0 = time.perf_counter()
train_counts = count_words(train_lines)
heldout_counts = count_words(heldout_lines)
print(f"{source}: {sum(train_counts.values()):,} training words, {len(train_counts):,} distinct; "
      f"{sum(heldout_counts.values()):,} held-out words")
print("most frequent:", train_counts.most_common(10))

result = learn_wordpiece(train_counts, vocab_size=8000)
print(f"learned {len(result.tokens):,} tokens in {time.perf_counter() - t0:.2f} s "
      f"({len(SPECIAL_TOKENS)} special + {result.num_alphabet} alphabet + {len(result.merges):,} merges)")
print("first merges:")
for left, right, merged, count in result.merges[:12]:
    print(f"  {left:>5} + {right:<5} -> {merged:<6} {count:>8,}")

# %% [markdown]
# We asked for 8000 tokens and got fewer: the trainer stops when no pair occurs at least
# `min_frequency` (2) times, that is, when every word that occurs twice is already one token. This
# corpus has only a few thousand word types, so the vocabulary runs out of useful merges early.
#
# The first merges build the most frequent word ("the" from "t"+"##h", then "th"+"##e") and common
# endings ("##er", "##ed", "##es"). Because merges never depend on the requested size, the vocabulary
# of size n is simply the first n tokens: one training run gives every size.
#
# ### How many pieces per word, as the vocabulary grows?
#
# For each size we measure, on the **held-out** text: the average number of pieces per word, the share
# of words that are a single token, and the share that are `[UNK]`. For comparison, a *word-level*
# vocabulary with the same budget (the most frequent training words) and its rate of unknown words.

# %%
def evaluate(tokens, counts):
    wp = WordpieceTokenizer(tokens)
    total = sum(counts.values())
    pieces = single = unk = 0
    for word, n in counts.items():
        p = wp.tokenize_word(word)
        pieces += n * len(p)
        single += n * (len(p) == 1 and p[0] != "[UNK]")
        unk += n * (p == ("[UNK]",))
    return pieces / total, single / total, unk / total


def word_level_unknown(size, counts):
    known = {w for w, _ in train_counts.most_common(size - len(SPECIAL_TOKENS))}
    return sum(n for w, n in counts.items() if w not in known) / sum(counts.values())


smallest = len(SPECIAL_TOKENS) + result.num_alphabet
sizes = sorted({smallest, *[s for s in (100, 200, 400, 800, 1600, 3200) if s < len(result.tokens)],
                len(result.tokens)})
rows = []
print(f"{'size':>6} {'pieces/word':>12} {'single':>8} {'[UNK]':>7} {'word-level [UNK]':>17}")
for size in sizes:
    ppw, single, unk = evaluate(result.tokens[:size], heldout_counts)
    rows.append((size, ppw, single, unk, word_level_unknown(size, heldout_counts)))
    print(f"{size:>6} {ppw:>12.3f} {single:>8.1%} {unk:>7.1%} {rows[-1][4]:>17.1%}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label="WordPiece: pieces per word")
ax.set_xscale("log")
ax.set_xlabel("vocabulary size")
ax.set_ylabel("pieces per held-out word")
ax2 = ax.twinx()
ax2.plot([r[0] for r in rows], [100 * r[4] for r in rows], "s--", color="tab:red",
         label="word-level vocabulary: % [UNK]")
ax2.set_ylabel("% unknown (word-level)", color="tab:red")
handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "06_pieces_per_word.png", dpi=100)
print("saved", FIGURES / "06_pieces_per_word.png")

# %% [markdown]
# WordPiece never produces `[UNK]` here (every character is in the alphabet) and pays instead in
# sequence length: with only the alphabet every word is spelled letter by letter; a few hundred merges
# already bring most frequent words down to one token. A word-level vocabulary of the same size keeps
# sequences short but loses a share of the words to `[UNK]`.
#
# One caveat about this corpus: it is generated from a grammar with a closed list of about 2,900 word
# types, and the held-out text uses no word the training text lacks, so a word-level vocabulary of
# 3,200 entries knows every held-out word. Real text has an endless tail of new words (names, typos,
# numbers), and there the word-level column never reaches zero while WordPiece's `[UNK]` stays at 0.
#
# Words the corpus never contained are spelled from pieces it did:

# %%
tok = BertTokenizer(result.tokens)
for text in ["The keepers were unpainting glorbish lighthouses.", "Zorblatt lived in Quixford."]:
    print(f"{text!r:52} -> {tok.tokenize(text)}")
for size in sorted({smallest, min(200, len(result.tokens)), len(result.tokens)}):
    small = BertTokenizer(result.tokens[:size])
    print(f"size {size:>5}: {small.tokenize('The travelers noticed the lighthouse.')}")

# %% [markdown]
# The same vocabulary from the command line (it prints the sizes and the time):
#
# ```
# minibert vocab data/corpus/train.txt --size 8000 --out vocab.txt
# ```
#
# and `BertTokenizer("vocab.txt")` loads it. `train_wordpiece(lines_or_paths, vocab_size)` does
# `count_words` + `learn_wordpiece` in one call:

# %%
assert train_wordpiece(train_lines, vocab_size=len(result.tokens)) == result.tokens

# %% [markdown]
# ## What you should see
#
# Everything here is deterministic (no random numbers), so the numbers are exact for the bundled
# corpus as generated by `minibert corpus --seed 0 --words 1400000`; a regenerated corpus of another
# version may move them by a few percent.
#
# - Training text: 1,609,924 words (punctuation included), 2,859 distinct; held-out 32,888 words.
# - 4,675 tokens learned (5 special + 56 alphabet + 4,614 merges), fewer than the 8000 asked for.
# - First merges: `t + ##h -> th` (254,995), `th + ##e -> the` (186,089), `##e + ##r -> ##er` (124,063).
# - Pieces per held-out word: 3.99 with the alphabet only (61 tokens), 1.76 at 400 tokens, 1.00 with
#   the full vocabulary; `[UNK]` 0.0% at every size. A word-level vocabulary of 400 tokens leaves 17.8%
#   of the held-out words unknown, of 800 tokens 9.6%.
# - With `MINIBERT_QUICK=1` (the first 20,000 lines): 138,824 training words, 4,471 tokens learned,
#   pieces per word 3.98 / 1.77 / 1.007 at 61 / 400 / all tokens (within 0.02 of the full run).
#
# ## Exercises
#
# 1. Add NFC normalisation (`unicodedata.normalize("NFC", text)`) at the start of `BasicTokenizer`
#    with `do_lower_case=False`. Predict which test in `tests/test_tokenization.py` fails, then run it.
#    (Hugging Face's Python tokenizer does this; the original BERT and HF's Rust tokenizer do not.)
# 2. Change `wordpiece_by_hand` so that a word that cannot be covered keeps the pieces it found and
#    puts `[UNK]` only where it got stuck. Which is better for a masked language model, and why did
#    BERT choose the whole-word `[UNK]`?
# 3. Train with `min_frequency=1`. Predict the vocabulary size at which training stops now, then check.
#    (Hint: when is there no pair left at all?)
# 4. Train a cased vocabulary (`count_words(..., do_lower_case=False)`). Predict how the alphabet and
#    the number of merges needed to reach 1.2 pieces per word change.
#
# **Graded exercises** (`minibert exercise start NAME`, then `minibert exercise check NAME`;
# lessons/README.md): `wordpiece` (greedy longest match, the whole word as [UNK]).
