"""Learning a WordPiece vocabulary from a corpus, and the ``minibert vocab`` command.

Google never published how BERT's vocabulary was learned. We do what Hugging Face ``tokenizers`` does
for WordPiece: byte-pair-encoding (BPE) style merges over words written as a first character followed
by "##"-prefixed continuation characters.

    1. Count words: every line goes through BasicTokenizer (so the vocabulary is learned on exactly the
       words WordPiece will later see); "playing" seen 7 times -> {"playing": 7}.
    2. Spell each word in single-character symbols:  playing -> p ##l ##a ##y ##i ##n ##g
    3. Start the vocabulary with the special tokens, then every character seen, in both forms
       ("a" and "##a"), so any word made of seen characters can be covered: no [UNK] on seen text.
    4. Repeat until the vocabulary has ``vocab_size`` tokens: count every adjacent pair of symbols over
       all words (weighted by word frequency), merge the most frequent pair everywhere it occurs
       (p ##l -> pl; ##i ##n -> ##in), and add the merged symbol to the vocabulary.

Ties are broken by the pair itself: among pairs with the same count, the one whose (left, right) token
strings sort first (Python string order) is merged. The result therefore depends only on the word
counts, not on the order of the lines. Training stops early, with fewer than ``vocab_size`` tokens,
when no pair occurs at least ``min_frequency`` times (every word is then one token, or merging would
only memorise rarities); ``train_wordpiece`` returns what it has.

Speed: recounting all pairs after each merge would cost (merges x corpus). Instead we keep the pair
counts and, for each pair, the set of words containing it; a merge visits only those words and adjusts
the counts of the pairs around each merge site. A heap gives the most frequent pair; entries whose
count has since gone down are detected when popped and pushed back with their current count.

Because merges do not depend on ``vocab_size``, the vocabulary of size n is the first n tokens of any
larger one: train once at the largest size and take prefixes.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import gzip
import heapq
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from minibert.tokenization.basic import BasicTokenizer
from minibert.tokenization.vocab import SPECIAL_TOKENS, decode_utf8, write_vocab
from minibert.validation import positive_int

__all__ = ["read_lines", "count_words", "learn_wordpiece", "train_wordpiece", "write_vocab",
           "TrainingResult", "add_arguments", "main"]


# ---------------------------------------------------------------------------------------- reading
def _read_file_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file (gzip-compressed or not), decoded strictly, line endings removed."""
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"  # the gzip magic; never the start of valid UTF-8 text
    where = f"{path} (decompressed)" if compressed else path
    offset = 0
    with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
        for raw in f:  # splitting bytes at b"\n" is safe: that byte never occurs inside a UTF-8 character
            yield decode_utf8(raw, where, offset).rstrip("\r\n")
            offset += len(raw)


def read_lines(lines_or_paths: Iterable[str | os.PathLike] | os.PathLike) -> Iterator[str]:
    """The corpus as lines of text.

    ``lines_or_paths`` mixes two kinds of item: a ``pathlib.Path`` (any ``os.PathLike``) is a file to
    read (UTF-8, ``.gz`` allowed, one sentence per line); a ``str`` is a line of text itself. A single
    Path may be passed alone. A bare str is refused: it would be unclear whether it is text or a file.
    """
    if isinstance(lines_or_paths, os.PathLike):
        lines_or_paths = [lines_or_paths]
    elif isinstance(lines_or_paths, (str, bytes)):
        raise TypeError("pass a list of text lines, or pathlib.Path objects for files, not a bare "
                        f"{type(lines_or_paths).__name__}")
    for item in lines_or_paths:
        if isinstance(item, os.PathLike):
            yield from _read_file_lines(Path(item))
        elif isinstance(item, str):
            yield item
        else:
            raise TypeError(f"corpus items must be str (a line) or Path (a file), got {type(item).__name__}")


def count_words(lines_or_paths, do_lower_case: bool = True) -> Counter:
    """Word -> count over the corpus, words as BasicTokenizer produces them (blank lines add nothing)."""
    basic = BasicTokenizer(do_lower_case=do_lower_case)
    # Two passes, both cheap: count the whitespace-separated chunks of the cleaned lines (C-speed
    # Counter updates), then run the per-word steps once per DISTINCT chunk. Same result as
    # tokenizing every line, because BasicTokenizer treats each chunk independently.
    chunks: Counter = Counter()
    for line in read_lines(lines_or_paths):
        chunks.update(basic.split_whitespace(line))
    counts: Counter = Counter()
    for chunk, n in chunks.items():
        for word in basic.split_word(chunk):
            counts[word] += n
    if not counts:
        raise ValueError("the corpus contains no words (empty input, or only blank lines / whitespace)")
    return counts


# ---------------------------------------------------------------------------------------- learning
@dataclasses.dataclass
class TrainingResult:
    """What ``learn_wordpiece`` learned.

    tokens: the vocabulary in id order: specials, alphabet, then merged tokens in merge order.
    merges: (left, right, merged, count) in the order made. Rarely two merges give the same string
        (e.g. "ab"+"##c" and "a"+"##bc"); the string then enters the vocabulary once.
    num_alphabet: how many single-character tokens (both forms) follow the specials.
    """

    tokens: list[str]
    merges: list[tuple[str, str, str, int]]
    num_alphabet: int


def learn_wordpiece(word_counts: dict[str, int], vocab_size: int, min_frequency: int = 2) -> TrainingResult:
    """Learn a WordPiece vocabulary of at most ``vocab_size`` tokens from word counts (steps 2-4 above)."""
    # The merge loop allocates millions of small tuples and lists but creates no reference cycles.
    # Python's cycle collector, triggered by those allocations, would rescan the big pair tables over
    # and over (half the run time on a 200k-word-type corpus), so it is paused while we learn.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _learn_wordpiece(word_counts, vocab_size, min_frequency)
    finally:
        if gc_was_enabled:
            gc.enable()


def _learn_wordpiece(word_counts: dict[str, int], vocab_size: int, min_frequency: int) -> TrainingResult:
    positive_int("vocab_size", vocab_size)
    positive_int("min_frequency", min_frequency)
    if not word_counts:
        raise ValueError("no words to learn a vocabulary from")

    # Step 3: specials, then the alphabet in code-point order, first forms before "##" forms.
    chars = sorted({c for word in word_counts for c in word})
    tokens = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars]
    if vocab_size < len(tokens):
        raise ValueError(f"vocab_size={vocab_size} is too small: the {len(SPECIAL_TOKENS)} special tokens and "
                         f"the corpus's {len(chars)} characters in both forms ({2 * len(chars)} tokens) need "
                         f"{len(tokens)}")
    token_id = {t: i for i, t in enumerate(tokens)}

    # Step 2: words as lists of symbol ids, with their frequencies.
    words = [[token_id[w[0]]] + [token_id["##" + c] for c in w[1:]] for w in word_counts]
    freqs = list(word_counts.values())

    # Pair statistics: pair -> total count, pair -> indices of the words that (may) contain it.
    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (symbols, freq) in enumerate(zip(words, freqs)):
        for pair in zip(symbols, symbols[1:]):
            pair_count[pair] += freq
            where[pair].add(w)
    # Max-heap through negated counts; the token strings break ties (the documented rule).
    heap = [(-n, tokens[a], tokens[b], a, b) for (a, b), n in pair_count.items()]
    heapq.heapify(heap)

    merges = []
    while len(tokens) < vocab_size and heap:
        neg, left, right, a, b = heapq.heappop(heap)
        count = pair_count.get((a, b), 0)
        if count != -neg:  # stale entry: the pair's count fell since it was pushed
            if count > 0:
                heapq.heappush(heap, (-count, left, right, a, b))
            continue
        if count < min_frequency:
            break  # the best pair is too rare, so is every other
        merged = left + right[2:]  # right always carries "##": it never starts a word
        new = token_id.get(merged)
        if new is None:
            new = token_id[merged] = len(tokens)
            tokens.append(merged)
        merges.append((left, right, merged, count))

        # Apply the merge in every word that contains the pair, and update the counts locally:
        # at a merge site  ... p [a b] n ...  the pairs (p,a), (a,b), (b,n) disappear and (p,new),
        # (new,n) appear. Working on the partly merged word makes runs like "a b a b" come out right.
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for w in where.pop((a, b), ()):
            symbols, freq = words[w], freqs[w]
            n = len(symbols)
            sites = [j for j in range(n - 1) if symbols[j] == a and symbols[j + 1] == b]
            out: list[int] = []
            i = 0  # symbols[:i] are done
            for j in sites:
                if j < i:
                    continue  # overlaps the merge just made ("a a a" with pair (a, a))
                out.extend(symbols[i:j])
                delta[(a, b)] -= freq
                if out:
                    prev = out[-1]
                    delta[(prev, a)] -= freq
                    delta[(prev, new)] += freq
                    where[(prev, new)].add(w)
                if j + 2 < n:
                    nxt = symbols[j + 2]
                    delta[(b, nxt)] -= freq
                    delta[(new, nxt)] += freq
                    where[(new, nxt)].add(w)
                out.append(new)
                i = j + 2
            out.extend(symbols[i:])
            words[w] = out
        for pair, d in delta.items():
            total = pair_count[pair] + d
            if total > 0:
                pair_count[pair] = total
            else:
                del pair_count[pair]
            if d > 0:  # only pairs with the new symbol grow; they need a (fresh) heap entry
                heapq.heappush(heap, (-total, tokens[pair[0]], tokens[pair[1]], *pair))
        # Stale members of `where` (a pair that vanished from a word) are harmless: visiting such a word
        # later finds no merge site. Removing them exactly would cost more than it saves.
    return TrainingResult(tokens=tokens, merges=merges, num_alphabet=2 * len(chars))


def train_wordpiece(lines_or_paths, vocab_size: int, do_lower_case: bool = True,
                    min_frequency: int = 2) -> list[str]:
    """A WordPiece vocabulary (list of tokens, id = position) learned from a corpus.

    ``lines_or_paths``: lines of text (str) and/or files (pathlib.Path), see ``read_lines``.
    Returns ``vocab_size`` tokens, or fewer if the corpus runs out of pairs seen ``min_frequency`` times.
    """
    return learn_wordpiece(count_words(lines_or_paths, do_lower_case), vocab_size, min_frequency).tokens


# ---------------------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", nargs="+", type=Path,
                        help="UTF-8 text files (.gz read transparently), one sentence per line")
    parser.add_argument("--size", type=int, required=True, help="vocabulary size to learn")
    parser.add_argument("--out", type=Path, default=Path("vocab.txt"),
                        help="where to write (default vocab.txt); an existing file is refused")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--no-lower-case", dest="lower_case", action="store_false",
                        help="keep case and accents (a cased vocabulary)")
    parser.add_argument("--min-frequency", type=int, default=2,
                        help="stop when no pair of symbols occurs this often (default 2)")


def main(args: argparse.Namespace) -> int:
    # Checked before the work: a vocab.txt already there may be the one a model was trained with.
    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file path such as "
                         f"{args.out / 'vocab.txt'}")
    if args.out.exists() and not args.overwrite:
        raise ValueError(f"--out {args.out} already exists; give another path, or add --overwrite "
                         f"to replace it")
    t0 = time.perf_counter()
    counts = count_words(list(args.corpus), do_lower_case=args.lower_case)
    t1 = time.perf_counter()
    print(f"read {sum(counts.values()):,} words ({len(counts):,} distinct) from {len(args.corpus)} file(s) "
          f"in {t1 - t0:.1f} s")
    result = learn_wordpiece(counts, args.size, args.min_frequency)
    t2 = time.perf_counter()
    n_merged = len(result.tokens) - len(SPECIAL_TOKENS) - result.num_alphabet
    print(f"learned {len(result.tokens):,} tokens ({len(SPECIAL_TOKENS)} special + {result.num_alphabet} "
          f"alphabet + {n_merged:,} merged) in {t2 - t1:.1f} s")
    if len(result.tokens) < args.size:
        print(f"note: stopped below --size {args.size}: no pair of symbols occurs {args.min_frequency}+ times")
    path = write_vocab(result.tokens, args.out)
    case_note = "" if args.lower_case else " (cased: load it with BertTokenizer(path, do_lower_case=False))"
    print(f"wrote {path}{case_note}")
    return 0
