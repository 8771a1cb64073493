"""The evaluation sets, words -> WordPiece ids with a word map, and batched forward passes.

The probes work on *words* (the annotations in ``data/eval`` are per word) while the model reads
WordPiece pieces. ``encode_words`` tokenizes a sentence word by word and remembers where each word
starts, so a word-level feature is read from the **first piece** of its word (Hewitt & Manning 2019 and
most probing papers average the pieces or take the first; the first keeps one vector per word without
mixing in the ``##`` continuations, and in the bundled vocabulary almost every word is one piece).

Sequences of different lengths are batched by length (sorted, then padded within a batch) so little
work is spent on padding; every function returns results in the caller's order.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from minibert import kernels
from minibert.corpus.io import read_jsonl
from minibert.paths import data_path
from minibert.validation import positive_int

EVAL_SETS = {
    "agreement": ("agreement.jsonl.gz", ("construction", "attractors", "tokens", "mask_index", "correct",
                                        "wrong", "subject_number", "nearest_noun_number")),
    "npi": ("npi.jsonl.gz", ("group", "licensor", "scope", "item", "tokens", "item_index", "acceptable")),
    "negation": ("negation.jsonl", ("subject", "invented", "affirmative", "negated", "expected", "candidates")),
    "probing": ("probing.jsonl.gz", ("tokens", "upos", "chunks", "heads", "deprels", "agreement", "split")),
}


def load_eval_set(name: str) -> list[dict]:
    """The rows of a bundled evaluation set: ``agreement``, ``npi``, ``negation`` or ``probing``
    (schemas in ``data/README.md``)."""
    if name not in EVAL_SETS:
        raise ValueError(f"unknown evaluation set {name!r}; expected one of {sorted(EVAL_SETS)}")
    file, required = EVAL_SETS[name]
    return read_jsonl(data_path("eval", file), required)


def subsample(rows: list[dict], n: int | None, rng: np.random.Generator, key=None) -> list[dict]:
    """At most ``n`` rows per value of ``key(row)`` (all rows if ``n`` is None), drawn without
    replacement by ``rng`` and returned in their original order."""
    if n is None:
        return list(rows)
    groups: dict = {}
    for i, r in enumerate(rows):
        groups.setdefault(key(r) if key else None, []).append(i)
    keep = []
    for idx in groups.values():
        keep.extend(idx if len(idx) <= n else rng.choice(idx, n, replace=False).tolist())
    return [rows[i] for i in sorted(keep)]


@dataclasses.dataclass
class WordEncoding:
    """``[CLS] pieces [SEP]`` ids and, per word, the index of its first piece and one past its last."""
    input_ids: list[int]
    word_starts: list[int]
    word_ends: list[int]


def encode_words(tokenizer, words: Sequence[str]) -> WordEncoding:
    """WordPiece-encode a sentence given as words; the word ``"[MASK]"`` becomes the mask token.

    Each word is tokenized on its own, so piece boundaries never cross word boundaries (the annotated
    words are already split off their punctuation, so this equals tokenizing the joined sentence).
    """
    ids, starts, ends = [tokenizer.cls_token_id], [], []
    for w in words:
        pieces = tokenizer.tokenize(w)
        if not pieces:
            raise ValueError(f"word {w!r} of {' '.join(words)!r} gives no WordPiece token")
        starts.append(len(ids))
        ids.extend(tokenizer.convert_tokens_to_ids(pieces))
        ends.append(len(ids))
    ids.append(tokenizer.sep_token_id)
    return WordEncoding(ids, starts, ends)


def single_token_id(tokenizer, word: str) -> int | None:
    """The id of ``word`` if it is one WordPiece token (not [UNK]), else None."""
    pieces = tokenizer.tokenize(word)
    if len(pieces) != 1:
        return None
    i = tokenizer.convert_tokens_to_ids(pieces[0])
    return None if i == tokenizer.unk_token_id else i


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (sorted by length, stable)."""
    positive_int("batch_size", batch_size)
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest: ids (B, T) and attention mask (B, T)."""
    T = max(len(s) for s in seqs)
    ids = np.full((len(seqs), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), T), dtype=np.int64)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = s
        mask[b, :len(s)] = 1
    return ids, mask


def _check_length(model, seqs):
    longest = max(len(s) for s in seqs)
    if longest > model.config.max_position_embeddings:
        raise ValueError(f"a sequence has {longest} tokens, more than the model's max_position_embeddings "
                         f"{model.config.max_position_embeddings}")


def encoder(model):
    """The BertModel inside a BertForPreTraining (or the model itself)."""
    return getattr(model, "bert", model)


def masked_lm_log_probs(model, seqs: Sequence[Sequence[int]], positions: Sequence[int], layers=(None,),
                        batch_size: int = 256, targets: Sequence[int] | None = None) -> dict:
    """log softmax of the MLM head at one position per sequence.

    seqs: N id lists (with [CLS]/[SEP]); positions: N indices into them. ``layers`` names the hidden
    states the MLM head reads: None for the last layer (the normal prediction), 0 for the embedding
    output (a context-free baseline: the head sees only the [MASK] embedding plus its position), l for
    encoder layer l. Returns ``{layer: (N, V) float32}``, or with ``targets`` (N ids) only the target's
    log-probability, ``{layer: (N,) float32}``, the same numbers without the (N, V) arrays. Runs in
    eval mode (no dropout).
    """
    if len(seqs) != len(positions):
        raise ValueError(f"got {len(seqs)} sequences but {len(positions)} positions")
    if not len(seqs):
        raise ValueError("masked_lm_log_probs needs at least one sequence")
    _check_length(model, seqs)
    L = model.config.num_hidden_layers
    for layer in layers:
        if layer is not None and not 0 <= layer <= L:
            raise ValueError(f"layer must be None or in [0, {L}], got {layer}")
    V = model.config.vocab_size
    if targets is not None:
        targets = np.asarray(targets)
        if targets.shape != (len(seqs),) or not np.issubdtype(targets.dtype, np.integer):
            raise ValueError(f"targets must be {len(seqs)} token ids, one per sequence, got shape {targets.shape}")
        if len(targets) and (targets.min() < 0 or targets.max() >= V):
            raise ValueError(f"targets must be token ids in [0, {V}), got values in [{targets.min()}, {targets.max()}]")
    out = {layer: np.empty((len(seqs), V) if targets is None else len(seqs), np.float32) for layer in layers}
    # Asked for the last layer (the usual prediction) and the embedding output at most, the encoder's
    # last layer runs only at the masked positions, as in pretraining: a third of the time at tiny
    # (its last layer is half the model), half at mini. Its log-probabilities agree with those of
    # every position computed to float32 rounding (about 1e-5). The embedding output at the masked
    # position is that one token's embedding at that position (the layer reads nothing else), with
    # the same bits as in the whole batch.
    wanted = {L if layer is None else layer for layer in layers}
    at_positions = wanted <= {0, L}
    was_training = model.training
    model.eval()
    try:
        for idx in length_batches([len(s) for s in seqs], batch_size):
            ids, mask = pad([seqs[i] for i in idx], 0)
            pos = np.asarray([positions[i] for i in idx])
            if pos.min() < 0 or (pos >= mask.sum(1)).any():
                raise ValueError("a masked position lies outside its sequence")
            rows = np.arange(len(idx))
            if at_positions:    # the last layer computes the masked positions only (output_positions)
                states = {}                                                                     # (B, H)
                if L in wanted:
                    res = encoder(model).forward(ids, None, mask, output_positions=(rows, pos))
                    states[L] = res.last_hidden_state[rows, pos]
                else:
                    encoder(model).check_inputs(ids, None, mask)
                if 0 in wanted:
                    states[0] = encoder(model).embeddings.forward(ids[rows, pos], np.zeros_like(pos), position_ids=pos)
            else:
                res = encoder(model).forward(ids, None, mask, output_hidden_states=True)
                states = {layer: h[rows, pos] for layer, h in enumerate(res.hidden_states)}    # (B, H)
            for layer in layers:
                h = states[L if layer is None else layer]                                        # (B, H)
                logits = model.cls.predictions.forward(h)                                        # (B, V)
                shift, log_total = kernels.log_softmax_normaliser(logits)     # float64, (B,) each
                if targets is not None:                                       # (B,)
                    out[layer][idx] = (logits[rows, targets[idx]].astype(np.float64) - shift) - log_total
                    continue
                log_probs = logits.astype(np.float64)                                            # (B, V)
                log_probs -= shift[:, None]
                log_probs -= log_total[:, None]
                out[layer][idx] = log_probs
    finally:
        model.train(was_training)
    return out


def hidden_states(model, seqs: Sequence[Sequence[int]], batch_size: int = 128, attentions: bool = False):
    """Every layer's output for each sequence, unpadded.

    Returns a list of N arrays (L+1, T_n, H) (index 0 = the embedding output), and with
    ``attentions=True`` also a list of N arrays (L, A, T_n, T_n) of attention probabilities.
    """
    _check_length(model, seqs)
    states, attn = [None] * len(seqs), [None] * len(seqs)
    was_training = model.training
    model.eval()
    try:
        for idx in length_batches([len(s) for s in seqs], batch_size):
            ids, mask = pad([seqs[i] for i in idx], 0)
            res = encoder(model).forward(ids, None, mask, output_hidden_states=True, output_attentions=attentions)
            hs = np.stack(res.hidden_states, axis=1)                            # (B, L+1, T, H)
            at = np.stack(res.attentions, axis=1) if attentions else None       # (B, L, A, T, T)
            for b, i in enumerate(idx):
                n = len(seqs[i])
                states[i] = hs[b, :, :n].copy()
                if attentions:
                    attn[i] = at[b, :, :, :n, :n].copy()
    finally:
        model.train(was_training)
    return (states, attn) if attentions else states
