"""Pretraining data: a corpus becomes masked-LM + next-sentence-prediction instances, stored as .npz shards.

This follows google-research/bert ``create_pretraining_data.py`` step by step (our code, same algorithm,
same random draws in the same order; the deviations are listed at the end).

1. Read. The corpus has one sentence per line and a blank line between documents. Every line is
   tokenised once into WordPiece ids; lines that give no tokens are dropped, documents left with no
   sentences are dropped. The documents are shuffled.
2. Pair (per document, ``instances_from_document``). Walk through the document's sentences, collecting
   them into a chunk until the chunk holds ``target_length`` tokens (or the document ends). The target is
   ``max_num_tokens = max_seq_length - 3`` (room for [CLS], [SEP], [SEP]), except that with probability
   ``short_seq_prob`` it is uniform in [2, max_num_tokens] for this document, so the model also sees
   short inputs, as it will when fine-tuned. Then split the chunk:

       A = the first a_end sentences,  a_end uniform in [1, len(chunk) - 1]
       B = the rest of the chunk                                   label 0 (IsNext)
         or, with probability 1/2 (always when the chunk holds one sentence),
           sentences of a random OTHER document, from a random start,
           until B reaches target_length - len(A) tokens            label 1 (random)

   When B is random, the chunk's sentences after A were not used: the walk steps back to them, so they
   start the next chunk (nothing is wasted). Then ``truncate_seq_pair`` cuts the longer of A and B, one
   token at a time from its front or its back (a coin flip each time), until len(A) + len(B) fits.
3. Assemble ``[CLS] A [SEP] B [SEP]``; token types 0 for [CLS] A [SEP], 1 for B [SEP].
4. Mask (``InstanceMaker.mask``). Candidates are all positions except [CLS] and [SEP]; with whole-word
   masking a "##" piece joins the word before it and a word is masked all or nothing. The candidates
   are shuffled and taken in order until ``num_to_predict = min(max_predictions_per_seq,
   max(1, round(len(tokens) * masked_lm_prob)))`` positions are chosen (a whole word that would overshoot
   is skipped). Each chosen token becomes [MASK] with probability 0.8, stays itself with 0.1, and becomes
   a random vocabulary token with 0.1, and the model must predict the original token at every chosen
   position. The paper's reasons: fine-tuning inputs never contain [MASK], and since any input token
   may have been replaced, the model has to build a good representation of every token, not only of the
   masked ones; keeping some biases that representation towards the word actually there.
5. Repeat 2-4 ``dupe_factor`` times over all documents (different pairs and masks each time), shuffle
   all instances, write them as padded arrays in ``.npz`` shards with a ``meta.json``.

One ``random.Random(seed)`` drives every draw, so the output is a pure function of (corpus, vocabulary,
options, seed). Python's ``random`` is what the original uses; it is also ~10x faster than a NumPy
Generator for the single scalar draws this code makes.

As in the original, and worth knowing:

* The random token of the 10% case is uniform over the whole vocabulary, special tokens included (the
  original draws from all of ``vocab_words``; Hugging Face's collator does the same).
* A document of one sentence can only form one-sentence chunks, so every instance made from it has a
  random B (label 1).
* The coin is fair, but more than half the instances have a random B: a random B puts the rest of its
  chunk back to make further instances, and one-sentence chunks never flip the coin.

Deviations from the original, all deliberate:

* The original tries 10 times to draw a random document different from the current one and, if all 10
  draws hit the current document, silently uses it: B then comes from the same document yet is labelled
  random. We make the same 10 draws (same random stream) and, in that rare case (probability
  (1/n_documents)^10), take the next document instead, so a label-1 B always comes from another
  document. A corpus therefore needs at least 2 documents (ValueError otherwise).
* With whole-word masking, the original attaches a "##" piece to the previous candidate even across a
  [SEP] (after front truncation B can start with a "##" piece); we attach it only to the token right
  before it.
* The original chains documents across input files (a file that does not end with a blank line runs
  into the next file's first document); each file starts a new document here.
* Held-out data (an addition): ``--heldout-fraction`` keeps a share of the shuffled documents apart; they
  become the ``heldout`` split (dupe factor 1, random B drawn from held-out documents only), so no
  held-out sentence is seen in training, not even under another mask. The held-out instances are made
  first, so they stay the same when training options such as ``dupe_factor`` change.

Shape legend: N instances, T = max_seq_length, P = max_predictions_per_seq.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import random
import shlex
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from minibert import outputs
from minibert.tokenization import BertTokenizer
from minibert.tokenization.vocab import SPECIAL_TOKENS, decode_utf8, vocab_sha256
from minibert.validation import positive_int

FORMAT = "minibert-pretraining-data"
FORMAT_VERSION = 1

# The batch arrays, named like BertForPreTraining.forward's arguments: name -> (dtype, shape in N/T/P).
# Padding is 0 everywhere (as in the original): input ids 0 beyond the sequence, masked_lm_* 0 beyond the
# predictions, with attention_mask and masked_lm_weights saying which entries are real.
ARRAYS = {
    "input_ids": (np.int32, ("N", "T")),
    "token_type_ids": (np.int8, ("N", "T")),
    "attention_mask": (np.int8, ("N", "T")),
    "masked_lm_positions": (np.int32, ("N", "P")),
    "masked_lm_ids": (np.int32, ("N", "P")),
    "masked_lm_weights": (np.float32, ("N", "P")),
    "next_sentence_labels": (np.int32, ("N",)),
}
SPLITS = ("train", "heldout")


# ---------------------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Options of instance creation (the original's flags and defaults)."""

    max_seq_length: int = 128           # T
    max_predictions_per_seq: int = 20   # P
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 10
    whole_word_mask: bool = False

    def __post_init__(self):
        for name, low in (("max_seq_length", 5), ("max_predictions_per_seq", 1), ("dupe_factor", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value < low:
                if name == "max_seq_length":
                    raise ValueError(f"max_seq_length={value} is too small: [CLS] A [SEP] B [SEP] needs at "
                                     f"least 5 positions (3 special tokens + 1 token in each of A and B)")
                raise ValueError(f"{name} must be >= {low}, got {value}")
            object.__setattr__(self, name, int(value))  # plain ints, so the options serialise to JSON
        for name in ("masked_lm_prob", "short_seq_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "whole_word_mask", bool(self.whole_word_mask))

    @property
    def max_num_tokens(self) -> int:
        """Tokens of A and B together: T minus [CLS], [SEP], [SEP]."""
        return self.max_seq_length - 3


def _vocab_tokens(vocab) -> list[str]:
    """The tokens (id order) of a BertTokenizer, a token list, or a vocab.txt path / folder."""
    if isinstance(vocab, BertTokenizer):
        return vocab.convert_ids_to_tokens(range(vocab.vocab_size))
    if isinstance(vocab, (str, os.PathLike)):
        vocab = BertTokenizer(vocab)
        return vocab.convert_ids_to_tokens(range(vocab.vocab_size))
    return list(vocab)


# ---------------------------------------------------------------------------------------- 1. reading
@dataclasses.dataclass
class CorpusStats:
    files: int = 0
    lines: int = 0
    lines_without_tokens: int = 0   # non-blank lines that tokenise to nothing (e.g. only control characters)
    documents: int = 0
    sentences: int = 0
    tokens: int = 0
    unknown_tokens: int = 0         # [UNK]s: many of them mean the vocabulary does not fit the corpus


def _read_text(path: Path) -> str:
    """A UTF-8 text file (gzip-compressed or not) as a str; ValueError naming file and byte offset if not UTF-8."""
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic; never the start of UTF-8 text
        return decode_utf8(gzip.decompress(data), f"{path} (decompressed)")
    return decode_utf8(data, path)


def documents_from_lines(lines: Iterable[str], tokenizer: BertTokenizer, stats: CorpusStats | None = None
                         ) -> list[list[list[int]]]:
    """Documents -> sentences -> WordPiece ids of one file's lines (counts added to ``stats`` if given).

    A blank (or whitespace-only) line ends a document; lines that give no token are dropped, and so are
    documents left empty.
    """
    stats = CorpusStats() if stats is None else stats
    documents: list[list[list[int]]] = []
    document: list[list[int]] = []
    unk = tokenizer.unk_token_id
    vocab_get = tokenizer.vocab.get
    for line in lines:
        stats.lines += 1
        line = line.strip()
        if not line:
            if document:
                documents.append(document)
            document = []
            continue
        ids = [vocab_get(t, unk) for t in tokenizer.tokenize(line)]
        if not ids:
            stats.lines_without_tokens += 1
            continue
        document.append(ids)
        stats.tokens += len(ids)
        stats.unknown_tokens += ids.count(unk)
    if document:
        documents.append(document)
    stats.documents += len(documents)
    stats.sentences += sum(len(d) for d in documents)
    return documents


def read_documents(paths: Iterable[str | os.PathLike], tokenizer: BertTokenizer
                   ) -> tuple[list[list[list[int]]], CorpusStats]:
    """The corpus files as documents -> sentences -> WordPiece ids, and counts.

    Each file starts a new document (see ``documents_from_lines``). Raises ValueError when no document
    is left, FileNotFoundError for a missing file, ValueError naming file and byte offset for bytes that
    are not UTF-8.
    """
    paths = [Path(p) for p in paths]
    stats = CorpusStats()
    documents: list[list[list[int]]] = []
    for path in paths:
        stats.files += 1
        lines = _read_text(path).split("\n")
        if lines[-1] == "":
            lines.pop()  # the newline ending the last line does not start another one
        documents += documents_from_lines(lines, tokenizer, stats)
    if not documents:
        raise ValueError(f"the corpus ({', '.join(str(p) for p in paths)}) has no text: no line gives any "
                         f"token (empty files, or only blank lines)")
    return documents, stats


# ---------------------------------------------------------------------------------------- 2-4. instances
@dataclasses.dataclass(slots=True)
class TrainingInstance:
    """One example, before padding.

    input_ids: ``[CLS] A [SEP] B [SEP]`` after masking (length <= T).
    num_a: tokens in A, so token types are 0 up to position num_a + 1 (its [SEP]) and 1 after.
    masked_lm_positions / masked_lm_ids: where the predictions are (increasing) and the original tokens there.
    is_random_next: NSP label (True = B from another document, label 1).
    """

    input_ids: list[int]
    num_a: int
    masked_lm_positions: list[int]
    masked_lm_ids: list[int]
    is_random_next: bool

    def original_ids(self) -> list[int]:
        """The sequence before masking."""
        ids = list(self.input_ids)
        for p, t in zip(self.masked_lm_positions, self.masked_lm_ids):
            ids[p] = t
        return ids


def truncate_seq_pair(a: list, b: list, max_num_tokens: int, rng: random.Random) -> None:
    """Shorten ``a`` and ``b`` in place until len(a) + len(b) <= max_num_tokens.

    Each step removes one token from the longer list (``b`` on a tie), from its front or its back with
    equal probability: cutting only the end would teach the model that sentences never start mid-way,
    a pattern it never meets elsewhere. Both lists keep at least one token when max_num_tokens >= 2.
    """
    # Index bounds instead of repeated deletions from the front (O(n) each); same draws as deleting.
    a0, a1, b0, b1 = 0, len(a), 0, len(b)
    while (a1 - a0) + (b1 - b0) > max_num_tokens:
        if a1 - a0 > b1 - b0:
            if rng.random() < 0.5:
                a0 += 1
            else:
                a1 -= 1
        else:
            if rng.random() < 0.5:
                b0 += 1
            else:
                b1 -= 1
    a[:] = a[a0:a1]
    b[:] = b[b0:b1]


class InstanceMaker:
    """Builds instances with a tokenizer's vocabulary and a ``DataConfig`` (steps 2-4 of the module docstring)."""

    def __init__(self, tokenizer: BertTokenizer, config: DataConfig):
        self.config = config
        self.cls_id, self.sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = tokenizer.vocab_size
        tokens = tokenizer.convert_ids_to_tokens(range(self.vocab_size))
        self.is_continuation = [t.startswith("##") for t in tokens]

    # ------------------------------------------------------------------ 4. masking
    def mask(self, ids: list[int], rng: random.Random) -> tuple[list[int], list[int], list[int]]:
        """(masked ids, positions, original ids at those positions), positions increasing."""
        cfg = self.config
        cls_id, sep_id = self.cls_id, self.sep_id
        num_to_predict = min(cfg.max_predictions_per_seq, max(1, round(len(ids) * cfg.masked_lm_prob)))
        if cfg.whole_word_mask:
            groups: list[list[int]] = []
            cont = self.is_continuation
            for i, t in enumerate(ids):
                if t == cls_id or t == sep_id:
                    continue
                if cont[t] and groups and groups[-1][-1] == i - 1:
                    groups[-1].append(i)
                else:
                    groups.append([i])
            rng.shuffle(groups)
            chosen: list[int] = []
            for group in groups:
                if len(chosen) >= num_to_predict:
                    break
                if len(chosen) + len(group) > num_to_predict:
                    continue  # the whole word does not fit in what is left: try a shorter one
                chosen.extend(group)  # groups are disjoint, so no position is chosen twice
        else:
            # One-element groups: shuffling the positions makes the same draws as shuffling [[i], ...].
            candidates = [i for i, t in enumerate(ids) if t != cls_id and t != sep_id]
            rng.shuffle(candidates)
            chosen = candidates[:num_to_predict]

        output = list(ids)
        for i in chosen:  # in shuffled order, so the draws happen in the original's order
            if rng.random() < 0.8:
                output[i] = self.mask_id
            elif rng.random() < 0.5:
                pass  # keep the original token
            else:
                output[i] = rng.randint(0, self.vocab_size - 1)
        chosen.sort()
        return output, chosen, [ids[i] for i in chosen]

    def make_instance(self, a: list[int], b: list[int], is_random_next: bool,
                      rng: random.Random) -> TrainingInstance:
        """[CLS] a [SEP] b [SEP], masked (a and b already fit)."""
        ids = [self.cls_id, *a, self.sep_id, *b, self.sep_id]
        masked, positions, labels = self.mask(ids, rng)
        return TrainingInstance(masked, len(a), positions, labels, is_random_next)

    # ------------------------------------------------------------------ 2-3. pairs
    def instances_from_document(self, documents: Sequence[Sequence[list[int]]], index: int,
                                rng: random.Random) -> list[TrainingInstance]:
        """The instances of one pass over ``documents[index]`` (step 2 of the module docstring)."""
        if len(documents) < 2:
            raise ValueError(f"next sentence prediction needs at least 2 documents (a random B comes from "
                             f"another document), got {len(documents)}")
        document = documents[index]
        max_num_tokens = self.config.max_num_tokens
        # One target per document per pass, as in the original.
        target_length = max_num_tokens
        if rng.random() < self.config.short_seq_prob:
            target_length = rng.randint(2, max_num_tokens)

        instances = []
        chunk: list[list[int]] = []
        chunk_length = 0
        i = 0
        while i < len(document):
            chunk.append(document[i])
            chunk_length += len(document[i])
            if i == len(document) - 1 or chunk_length >= target_length:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for sentence in chunk[:a_end] for t in sentence]
                b: list[int] = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_length - len(a)
                    for _ in range(10):
                        other = rng.randint(0, len(documents) - 1)
                        if other != index:
                            break
                    else:  # ten draws of the same document (see the module docstring): take the next one
                        other = (index + 1) % len(documents)
                    random_document = documents[other]
                    start = rng.randint(0, len(random_document) - 1)
                    for sentence in random_document[start:]:
                        b.extend(sentence)
                        if len(b) >= target_b_length:
                            break
                    # The chunk's sentences after A were not used: walk back so the next chunk starts there.
                    i -= len(chunk) - a_end
                else:
                    is_random_next = False
                    for sentence in chunk[a_end:]:
                        b.extend(sentence)
                truncate_seq_pair(a, b, max_num_tokens, rng)
                instances.append(self.make_instance(a, b, is_random_next, rng))
                chunk = []
                chunk_length = 0
            i += 1
        return instances

    def create_instances(self, documents: Sequence[Sequence[list[int]]], rng: random.Random,
                         dupe_factor: int | None = None) -> list[TrainingInstance]:
        """All instances: ``dupe_factor`` passes over every document, then shuffled (step 5)."""
        dupe_factor = self.config.dupe_factor if dupe_factor is None else dupe_factor
        instances: list[TrainingInstance] = []
        for _ in range(dupe_factor):
            for index in range(len(documents)):
                instances.extend(self.instances_from_document(documents, index, rng))
        rng.shuffle(instances)
        return instances

    def create_arrays(self, documents: Sequence[Sequence[list[int]]], rng: random.Random,
                      dupe_factor: int | None = None) -> dict[str, np.ndarray]:
        """``instances_to_arrays(create_instances(...))``, equal to it bit for bit, in less memory.

        Each pass is converted to arrays before the next starts (the instances as Python objects are
        never all alive at once), and the final shuffle permutes rows: shuffling a list of row indices
        makes the same draws as shuffling the instances (``shuffle`` only looks at the length).
        """
        dupe_factor = self.config.dupe_factor if dupe_factor is None else dupe_factor
        T, P = self.config.max_seq_length, self.config.max_predictions_per_seq
        parts = []
        for _ in range(dupe_factor):
            instances: list[TrainingInstance] = []
            for index in range(len(documents)):
                instances.extend(self.instances_from_document(documents, index, rng))
            parts.append(instances_to_arrays(instances, T, P))
            del instances
        order = list(range(sum(len(part["input_ids"]) for part in parts)))
        rng.shuffle(order)
        order = np.array(order, dtype=np.int64)
        # One array at a time, releasing the parts as they are used: at most one extra array's worth.
        return {name: np.concatenate([part.pop(name) for part in parts])[order] for name in ARRAYS}


# ---------------------------------------------------------------------------------------- arrays and shards
def instances_to_arrays(instances: Sequence[TrainingInstance], max_seq_length: int,
                        max_predictions_per_seq: int) -> dict[str, np.ndarray]:
    """The padded batch arrays of ``instances`` (see ``ARRAYS`` for names, dtypes and shapes)."""
    N, T, P = len(instances), max_seq_length, max_predictions_per_seq
    out = {name: np.zeros((N, T) if shape[1:] == ("T",) else (N, P) if shape[1:] == ("P",) else (N,), dtype)
           for name, (dtype, shape) in ARRAYS.items()}
    for k, inst in enumerate(instances):
        n, m = len(inst.input_ids), len(inst.masked_lm_positions)
        if n > T or m > P:
            raise ValueError(f"instance {k} has {n} tokens and {m} predictions; the arrays hold {T} and {P}")
        out["input_ids"][k, :n] = inst.input_ids
        out["token_type_ids"][k, inst.num_a + 2:n] = 1
        out["attention_mask"][k, :n] = 1
        out["masked_lm_positions"][k, :m] = inst.masked_lm_positions
        out["masked_lm_ids"][k, :m] = inst.masked_lm_ids
        out["masked_lm_weights"][k, :m] = 1.0
        out["next_sentence_labels"][k] = inst.is_random_next
    return out


def write_shards(arrays: dict[str, np.ndarray], out_dir: Path, split: str, instances_per_shard: int,
                 compress: bool = False) -> list[dict]:
    """Write ``arrays`` as ``{split}-00000.npz``, ... of at most ``instances_per_shard`` instances each.

    ``compress`` uses ``np.savez_compressed`` (zip deflate): padding makes the arrays mostly zeros, so
    shards shrink ~10x, at ~0.5 s of writing per 10,000 instances; ``np.load`` reads both kinds.
    Returns one entry per shard: file name, instance count, sha256 (for ``meta.json``).
    """
    save = np.savez_compressed if compress else np.savez
    n = len(arrays["input_ids"])
    shards = []
    for k, start in enumerate(range(0, n, instances_per_shard)):
        name = f"{split}-{k:05d}.npz"
        part = {key: value[start:start + instances_per_shard] for key, value in arrays.items()}
        outputs.write_file(out_dir / name, lambda path: save(path, **part))
        shards.append({"file": name, "instances": len(part["input_ids"]),
                       "sha256": outputs.sha256_file(out_dir / name)})
    return shards


def _split_summary(arrays: dict[str, np.ndarray], documents: int, dupe_factor: int, shards: list[dict]) -> dict:
    n = len(arrays["input_ids"])
    lengths = arrays["attention_mask"].sum(axis=1, dtype=np.int64)
    predictions = arrays["masked_lm_weights"].sum(dtype=np.float64)
    return {
        "documents": documents,
        "dupe_factor": dupe_factor,
        "instances": n,
        "random_next": int(arrays["next_sentence_labels"].sum()),
        "tokens": int(lengths.sum()),
        "masked_predictions": int(predictions),
        "mean_length": round(float(lengths.mean()), 3) if n else 0.0,
        "shards": shards,
    }


def prepare(corpus: Sequence[str | os.PathLike], vocab: str | os.PathLike | BertTokenizer,
            out_dir: str | os.PathLike, config: DataConfig = DataConfig(), seed: int = 12345,
            heldout_fraction: float = 0.0, instances_per_shard: int = 10000, compress: bool = False,
            do_lower_case: bool | None = None, command: str | None = None, log=None) -> dict:
    """Read ``corpus``, create instances, write shards and ``meta.json`` to ``out_dir``; returns the meta dict.

    ``vocab``: a BertTokenizer, or a vocab.txt / tokenizer folder (``do_lower_case`` None = the folder's
    tokenizer_config.json, else True). ``heldout_fraction``: share of documents (at least 2 when > 0)
    kept for the ``heldout`` split. ``compress``: see ``write_shards``. ``log``: a function receiving
    progress lines (e.g. ``print``).
    """
    log = log or (lambda message: None)
    positive_int("instances_per_shard", instances_per_shard)
    if not isinstance(heldout_fraction, (int, float)) or not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    corpus = [Path(p) for p in corpus]
    if not corpus:
        raise ValueError("no corpus files given")
    t_start = time.perf_counter()
    tokenizer = vocab if isinstance(vocab, BertTokenizer) else BertTokenizer.from_pretrained(vocab, do_lower_case)
    tokens = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))

    documents, stats = read_documents(corpus, tokenizer)
    t_read = time.perf_counter()
    unk_share = stats.unknown_tokens / max(stats.tokens, 1)
    log(f"read {stats.files} file(s): {stats.documents:,} documents, {stats.sentences:,} sentences, "
        f"{stats.tokens:,} tokens ([UNK] {100 * unk_share:.2f}%) in {t_read - t_start:.1f} s")

    rng = random.Random(seed)
    rng.shuffle(documents)
    n_heldout = 0
    if heldout_fraction > 0:
        n_heldout = max(2, round(heldout_fraction * len(documents)))
    if len(documents) - n_heldout < 2:
        raise ValueError(f"the corpus has {len(documents)} document(s); next sentence prediction needs at least 2 "
                         f"for training" + (f" plus {n_heldout} held out (use heldout_fraction 0 to hold out "
                                            f"none)" if n_heldout else ""))
    heldout_docs, train_docs = documents[:n_heldout], documents[n_heldout:]

    maker = InstanceMaker(tokenizer, config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A folder with meta.json is complete; remove it first so a failed run never looks finished.
    (out_dir / "meta.json").unlink(missing_ok=True)

    splits = {}
    # Held-out instances first, so they do not depend on the training options (e.g. dupe_factor).
    for split, docs, dupe in (("heldout", heldout_docs, 1), ("train", train_docs, config.dupe_factor)):
        if not docs:
            continue
        t0 = time.perf_counter()
        arrays = maker.create_arrays(docs, rng, dupe)
        t1 = time.perf_counter()
        shards = write_shards(arrays, out_dir, split, instances_per_shard, compress)
        splits[split] = _split_summary(arrays, len(docs), dupe, shards)
        s = splits[split]
        log(f"{split}: {len(docs):,} documents x {dupe} -> {s['instances']:,} instances "
            f"(random next {100 * s['random_next'] / max(s['instances'], 1):.1f}%, "
            f"{s['masked_predictions'] / max(s['instances'], 1):.1f} predictions and {s['mean_length']:.1f} tokens "
            f"per instance) in {t1 - t0:.1f} s; {len(shards)} shard(s) written in {time.perf_counter() - t1:.1f} s")

    # Remove shards of an earlier run that this run did not overwrite.
    written = {s["file"] for split in splits.values() for s in split["shards"]}
    for split in SPLITS:
        for stale in out_dir.glob(f"{split}-*.npz"):
            if stale.name not in written:
                stale.unlink()

    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "command": command,
        "seed": seed,
        **dataclasses.asdict(config),
        "do_lower_case": tokenizer.do_lower_case,
        "vocab_size": tokenizer.vocab_size,
        "vocab_sha256": vocab_sha256(tokens),
        "special_token_ids": {t: tokenizer.vocab[t] for t in SPECIAL_TOKENS},
        "heldout_fraction": heldout_fraction,
        "instances_per_shard": instances_per_shard,
        "compress": compress,
        "corpus": {"paths": [str(p) for p in corpus], **dataclasses.asdict(stats)},
        "splits": splits,
    }
    outputs.write_file(out_dir / "meta.json", json.dumps(meta, indent=2) + "\n")
    log(f"wrote {out_dir} in {time.perf_counter() - t_start:.1f} s in total")
    return meta


# ---------------------------------------------------------------------------------------- reading shards
def _seed_sequence(rng: int | np.random.Generator) -> np.random.SeedSequence:
    if isinstance(rng, np.random.Generator):
        bit_generator = rng.bit_generator
        seed_seq = getattr(bit_generator, "seed_seq", None) or getattr(bit_generator, "_seed_seq", None)
        if not isinstance(seed_seq, np.random.SeedSequence):
            raise ValueError("the Generator was not created from a SeedSequence (use np.random.default_rng(seed))")
        return seed_seq
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.SeedSequence(int(rng))
    raise ValueError(f"rng must be a np.random.Generator or a non-negative integer seed, got {rng!r}")


def trim_columns(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch without the (B, T) columns past its longest sequence: T shrinks to that length."""
    t = int(batch["attention_mask"].sum(axis=1).max())
    return {name: np.ascontiguousarray(a[:, :t]) if name in ("input_ids", "token_type_ids", "attention_mask")
            else a for name, a in batch.items()}


class PretrainingDataset:
    """The instances of one split of a folder written by ``prepare``, checked and held in memory.

    Args:
        directory: the ``--out`` folder of ``minibert prepare``.
        split: "train" or "heldout".
        verify_checksums: compare each shard's sha256 with ``meta.json`` (after the structural checks).

    Every shard is checked on load: the seven arrays and no others, their dtypes and shapes, and their
    values (ids inside the vocabulary, 0/1 masks that are a run of ones then zeros, predictions inside the
    sequence, in increasing order, never on [CLS]/[SEP], padding zero). A missing, truncated or otherwise
    corrupt shard raises FileNotFoundError / ValueError naming the file.

    ``arrays`` holds the concatenated arrays (N rows); ``batches`` yields them in a shuffled order.
    """

    def __init__(self, directory: str | os.PathLike, split: str = "train", verify_checksums: bool = True):
        self.directory = Path(directory)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.meta = meta = self._read_meta()
        if split not in meta["splits"]:
            raise ValueError(f"{self.directory} has no {split!r} split (it has: {', '.join(meta['splits'])}); "
                             f"a held-out split is written by `minibert prepare --heldout-fraction F`")
        self.max_seq_length = meta["max_seq_length"]
        self.max_predictions_per_seq = meta["max_predictions_per_seq"]
        self.vocab_size = meta["vocab_size"]
        parts = []
        for shard in meta["splits"][split]["shards"]:
            path = self.directory / shard["file"]
            arrays = self._load_shard(path, shard["instances"])
            if verify_checksums and outputs.sha256_file(path) != shard["sha256"]:
                raise ValueError(f"{path}: sha256 differs from meta.json: the file was modified or corrupted "
                                 f"after `minibert prepare` wrote it")
            parts.append(arrays)
        if not parts:
            raise ValueError(f"{self.directory / 'meta.json'}: the {split!r} split lists no shards")
        self.arrays = {name: np.concatenate([p[name] for p in parts]) for name in ARRAYS}
        expected = meta["splits"][split]["instances"]
        if len(self) != expected:
            raise ValueError(f"{self.directory}: the {split!r} shards hold {len(self)} instances, meta.json says "
                             f"{expected}")

    def _read_meta(self) -> dict:
        path = self.directory / "meta.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {self.directory} is not a folder written by "
                                    f"`minibert prepare` (or that run did not finish)")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a minibert pretraining data description (format {FORMAT!r} expected)")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format version {meta.get('version')!r}, this minibert reads version "
                             f"{FORMAT_VERSION}; run `minibert prepare` again")
        for key in ("max_seq_length", "max_predictions_per_seq", "vocab_size", "vocab_sha256",
                    "special_token_ids", "splits"):
            if key not in meta:
                raise ValueError(f"{path}: the field {key!r} is missing")
        return meta

    def _load_shard(self, path: Path, expected_n: int) -> dict[str, np.ndarray]:
        if not path.is_file():
            raise FileNotFoundError(f"shard {path} listed in meta.json is missing")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError (pickled objects), OSError, ...
            raise ValueError(f"shard {path} cannot be read as .npz ({type(exc).__name__}: {exc}); it is "
                             f"truncated or corrupt: run `minibert prepare` again") from None
        missing, extra = set(ARRAYS) - set(arrays), set(arrays) - set(ARRAYS)
        if missing or extra:
            raise ValueError(f"shard {path}: arrays missing {sorted(missing)}, unexpected {sorted(extra)}; "
                             f"expected exactly {list(ARRAYS)}")
        sizes = {"N": expected_n, "T": self.max_seq_length, "P": self.max_predictions_per_seq}
        for name, (dtype, dims) in ARRAYS.items():
            a = arrays[name]
            shape = tuple(sizes[d] for d in dims)
            if a.dtype != dtype or a.shape != shape:
                raise ValueError(f"shard {path}: {name} is {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape}")
        problem = self._check_values(arrays)
        if problem:
            raise ValueError(f"shard {path}: {problem}")
        return arrays

    def _check_values(self, a: dict[str, np.ndarray]) -> str | None:
        """A description of the first invalid value found, or None."""
        ids, types, mask = a["input_ids"], a["token_type_ids"], a["attention_mask"]
        pos, labels, weights = a["masked_lm_positions"], a["masked_lm_ids"], a["masked_lm_weights"]
        V, T = self.vocab_size, self.max_seq_length
        specials = self.meta["special_token_ids"]
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            return f"input_ids outside [0, {V}) (values {ids.min()}..{ids.max()})"
        for name, x in (("token_type_ids", types), ("attention_mask", mask), ("masked_lm_weights", weights),
                        ("next_sentence_labels", a["next_sentence_labels"])):
            if not np.isin(x, (0, 1)).all():
                return f"{name} holds values other than 0 and 1"
        # Masks are runs of ones followed by zeros (a sequence, then its padding).
        if (np.diff(mask, axis=1) > 0).any() or (np.diff(weights, axis=1) > 0).any():
            return "attention_mask or masked_lm_weights is not a run of ones followed by zeros"
        lengths = mask.sum(axis=1, dtype=np.int64)
        if lengths.size and lengths.min() < 5:
            return f"a sequence of {lengths.min()} tokens (at least 5: [CLS] A [SEP] B [SEP])"
        rows = np.arange(len(ids))
        if (ids[:, 0] != specials["[CLS]"]).any() or (ids[rows, lengths - 1] != specials["[SEP]"]).any():
            return "a sequence does not start with [CLS] and end with [SEP]"
        # Token types: 0 for [CLS] A [SEP], then 1 up to the end of the sequence, with A's [SEP] just before
        # the first 1 ([SEP] is never masked, so it is still there).
        first_b = np.argmax(types, axis=1)
        if ((np.diff(types, axis=1) < 0) & (mask[:, 1:] == 1)).any() or (types[rows, lengths - 1] != 1).any() \
                or (first_b < 2).any() or (ids[rows, first_b - 1] != specials["[SEP]"]).any():
            return "token_type_ids are not 0 for [CLS] A [SEP] and 1 for B [SEP]"
        pad = mask == 0
        if (ids[pad] != 0).any() or (types[pad] != 0).any():
            return "padding positions hold non-zero input_ids or token_type_ids"
        real = weights == 1
        if (pos[~real] != 0).any() or (labels[~real] != 0).any():
            return "padding predictions hold non-zero masked_lm_positions or masked_lm_ids"
        if (pos < 0).any() or (pos >= np.where(real, lengths[:, None], T)).any():
            return "a masked_lm_position is outside its sequence"
        if ((np.diff(pos, axis=1) <= 0) & real[:, 1:]).any():
            return "masked_lm_positions are not strictly increasing"
        if labels.size and (labels.min() < 0 or labels.max() >= V):
            return f"masked_lm_ids outside [0, {V})"
        if (real & ((labels == specials["[CLS]"]) | (labels == specials["[SEP]"]))).any():
            return "a masked prediction sits on [CLS] or [SEP]"
        return None

    # ------------------------------------------------------------------ the vocabulary
    def check_vocab(self, vocab) -> None:
        """Raise ValueError unless ``vocab`` (BertTokenizer, token list, vocab.txt path or folder) is the
        vocabulary the data was made with (same tokens in the same order)."""
        tokens = _vocab_tokens(vocab)
        if vocab_sha256(tokens) != self.meta["vocab_sha256"]:
            raise ValueError(f"{self.directory} was prepared with a different vocabulary ({self.vocab_size} tokens, "
                             f"sha256 {self.meta['vocab_sha256'][:12]}...) than the one given ({len(tokens)} tokens, "
                             f"sha256 {vocab_sha256(tokens)[:12]}...): token ids would mean different tokens")

    # ------------------------------------------------------------------ batches
    def __len__(self) -> int:
        return len(self.arrays["input_ids"])

    def order(self, rng: int | np.random.Generator | None, epoch: int = 0) -> np.ndarray:
        """The instance order of ``epoch``: a permutation of range(N) (stored order when ``rng`` is None).

        The order is a pure function of the seed and the epoch: it is drawn from a SeedSequence spawned
        from the Generator's own seed with the key ``epoch``. The Generator's state is neither used nor
        advanced, so a run that resumes needs only (seed, epoch, batch index) to continue exactly.
        """
        if rng is None:
            return np.arange(len(self))
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        seed_seq = _seed_sequence(rng)
        child = np.random.SeedSequence(seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, int(epoch)),
                                       pool_size=seed_seq.pool_size)
        return np.random.default_rng(child).permutation(len(self))

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Batches per epoch."""
        positive_int("batch_size", batch_size)
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def batch(self, indices: np.ndarray, trim_padding: bool = False) -> dict[str, np.ndarray]:
        """The arrays of the instances ``indices`` (a batch of B rows).

        ``trim_padding`` drops the columns past the longest sequence of the batch (T shrinks), which
        saves work on short batches; the model's outputs do not change, as those columns are padding.
        """
        out = {name: a[indices] for name, a in self.arrays.items()}
        return trim_columns(out) if trim_padding and len(indices) else out

    def batches(self, batch_size: int, rng: int | np.random.Generator | None = None, epoch: int = 0,
                start: int = 0, drop_last: bool = False, trim_padding: bool = False
                ) -> Iterator[dict[str, np.ndarray]]:
        """Batches of one epoch, as dicts named like ``BertForPreTraining.forward``'s arguments.

        Batch k holds instances ``order(rng, epoch)[k * batch_size:(k + 1) * batch_size]``; ``start``
        skips the first ``start`` batches (to resume). The last batch is smaller unless ``drop_last``.
        """
        n_batches = self.num_batches(batch_size, drop_last)
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start <= n_batches:
            raise ValueError(f"start must be a batch index in [0, {n_batches}], got {start!r}")
        order = self.order(rng, epoch)
        for k in range(start, n_batches):
            yield self.batch(order[k * batch_size:(k + 1) * batch_size], trim_padding)


# ---------------------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DataConfig()
    parser.add_argument("corpus", nargs="+", type=Path,
                        help="UTF-8 text files (.gz read transparently): one sentence per line, a blank line "
                             "between documents")
    parser.add_argument("--vocab", type=Path, required=True, help="vocab.txt, or a tokenizer folder holding one")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (shards + meta.json): a new folder, or one `minibert "
                             "prepare` wrote")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out that holds other files (only shards and "
                             "meta.json are replaced)")
    parser.add_argument("--max-seq-length", type=int, default=d.max_seq_length, help="T (default %(default)s)")
    parser.add_argument("--max-predictions-per-seq", type=int, default=d.max_predictions_per_seq,
                        help="P (default %(default)s)")
    parser.add_argument("--masked-lm-prob", type=float, default=d.masked_lm_prob, help="(default %(default)s)")
    parser.add_argument("--short-seq-prob", type=float, default=d.short_seq_prob, help="(default %(default)s)")
    parser.add_argument("--dupe-factor", type=int, default=d.dupe_factor,
                        help="passes over the corpus, each with new pairs and masks (default %(default)s)")
    parser.add_argument("--whole-word-mask", action="store_true", help="mask all pieces of a word together")
    parser.add_argument("--seed", type=int, default=12345, help="(default %(default)s)")
    parser.add_argument("--instances-per-shard", type=int, default=10000, help="(default %(default)s)")
    parser.add_argument("--compress", action="store_true",
                        help="write compressed shards (~10x smaller, slower to write)")
    parser.add_argument("--heldout-fraction", type=float, default=0.0,
                        help="share of documents (at least 2 when > 0) kept apart as the 'heldout' split "
                             "(default %(default)s)")
    parser.add_argument("--no-lower-case", dest="lower_case", action="store_false", default=None,
                        help="keep case and accents (a cased vocabulary); default: the tokenizer folder's "
                             "tokenizer_config.json, else lowercase")


def _command_line(args: argparse.Namespace) -> str:
    """The command with every option spelled out, so meta.json says exactly how to redo the data."""
    words = ["minibert", "prepare", *map(str, args.corpus), "--vocab", str(args.vocab), "--out", str(args.out),
             "--max-seq-length", str(args.max_seq_length), "--max-predictions-per-seq",
             str(args.max_predictions_per_seq), "--masked-lm-prob", str(args.masked_lm_prob),
             "--short-seq-prob", str(args.short_seq_prob), "--dupe-factor", str(args.dupe_factor),
             "--seed", str(args.seed), "--instances-per-shard", str(args.instances_per_shard),
             "--heldout-fraction", str(args.heldout_fraction)]
    if args.whole_word_mask:
        words.append("--whole-word-mask")
    if args.compress:
        words.append("--compress")
    if args.lower_case is False:
        words.append("--no-lower-case")
    return shlex.join(words)


def main(args: argparse.Namespace) -> int:
    outputs.claim(args.out, "prepare", overwrite=args.overwrite,
                  recognise=lambda folder: (folder / "meta.json").is_file())
    config = DataConfig(max_seq_length=args.max_seq_length, max_predictions_per_seq=args.max_predictions_per_seq,
                        masked_lm_prob=args.masked_lm_prob, short_seq_prob=args.short_seq_prob,
                        dupe_factor=args.dupe_factor, whole_word_mask=args.whole_word_mask)
    prepare(args.corpus, args.vocab, args.out, config, seed=args.seed, heldout_fraction=args.heldout_fraction,
            instances_per_shard=args.instances_per_shard, compress=args.compress, do_lower_case=args.lower_case,
            command=_command_line(args), log=print)
    return 0
