"""What do the attention heads look at? (Clark et al. 2019, "What does BERT look at?")

From the attention probabilities (``output_attentions``: L arrays (B, A, T, T), row = the query token,
column = the key token it reads) we compute, per head:

    to_cls, to_sep, to_punct   mean attention mass on [CLS], on [SEP], on punctuation pieces
    to_prev, to_next           mean attention on the token just before / just after the query
    entropy                    mean entropy of a query's attention distribution (nats); log T is uniform

and, on word-level attention, how often a head's most-attended word is the dependency head of the
query word, per relation, against the best **fixed offset** ("the head is always k words to the
left") -- a head that only beats that baseline tracks more than position.

Word-level attention follows Clark et al.: attention *to* a word is the sum over its pieces (mass
received adds up); attention *from* a word is the mean over its pieces (each piece is one query).
[CLS] and [SEP] are not words and are left out of the word-level argmax.
"""
from __future__ import annotations

import unicodedata
from collections import defaultdict

import numpy as np

from minibert.probing.data import encode_words, hidden_states

STATS = ("to_cls", "to_sep", "to_punct", "to_prev", "to_next", "entropy")


def is_punctuation(token: str) -> bool:
    return bool(token) and all(unicodedata.category(c).startswith("P") for c in token)


def sentence_attentions(model, tokenizer, sentences, batch_size: int = 64):
    """Encode word lists and run the model. Returns (encodings, attentions), attentions being a list of
    (L, A, T_n, T_n) arrays, and the piece strings of each sentence."""
    encs = [encode_words(tokenizer, words) for words in sentences]
    _, attn = hidden_states(model, [e.input_ids for e in encs], batch_size, attentions=True)
    pieces = [tokenizer.convert_ids_to_tokens(e.input_ids) for e in encs]
    return encs, attn, pieces


def head_statistics(attentions, pieces) -> dict:
    """Per-head statistics (see the module docstring), averaged over every query token of every
    sentence. attentions: list of (L, A, T, T); pieces: list of the T token strings (for [CLS], [SEP]
    and punctuation). Returns ``{stat: (L, A) array}``."""
    sums = {s: 0.0 for s in STATS}
    counts = {s: 0 for s in STATS}
    for a, toks in zip(attentions, pieces):
        a = np.asarray(a, np.float64)
        T = a.shape[-1]
        if a.ndim != 4 or a.shape[-2] != T or len(toks) != T:
            raise ValueError(f"attention must be (L, A, T, T) with T = {len(toks)} tokens, got {a.shape}")
        kinds = {"to_cls": np.array([t == "[CLS]" for t in toks]),
                 "to_sep": np.array([t == "[SEP]" for t in toks]),
                 "to_punct": np.array([is_punctuation(t) for t in toks])}
        for s, mask in kinds.items():
            sums[s] = sums[s] + a[..., mask].sum(-1).sum(-1)          # (L, A): summed over queries
            counts[s] += T
        idx = np.arange(T - 1)
        sums["to_prev"] = sums["to_prev"] + a[..., idx + 1, idx].sum(-1)
        sums["to_next"] = sums["to_next"] + a[..., idx, idx + 1].sum(-1)
        counts["to_prev"] += T - 1
        counts["to_next"] += T - 1
        ent = -(a * np.log(np.where(a > 0, a, 1.0))).sum(-1)          # (L, A, T)
        sums["entropy"] = sums["entropy"] + ent.sum(-1)
        counts["entropy"] += T
    if not counts["entropy"]:
        raise ValueError("head_statistics needs at least one sentence")
    return {s: np.asarray(sums[s]) / max(counts[s], 1) for s in STATS}


def word_attention(attn, starts, ends) -> np.ndarray:
    """Piece-level (..., T, T) -> word-level (..., W, W): rows (from a word) average the word's pieces,
    columns (to a word) sum them."""
    attn = np.asarray(attn, np.float64)
    to_word = np.stack([attn[..., s:e].sum(-1) for s, e in zip(starts, ends)], axis=-1)      # (..., T, W)
    return np.stack([to_word[..., s:e, :].mean(-2) for s, e in zip(starts, ends)], axis=-2)  # (..., W, W)


def dependency_accuracy(word_attentions, heads, deprels) -> dict:
    """For every relation, the fraction of dependents whose most-attended word (per head) is their
    dependency head. word_attentions: list of (L, A, W, W); heads: list of 1-based head indices (0 =
    root, skipped); deprels: list of relation names. Returns ``{rel: {"n", "accuracy" (L, A)}}`` with
    an ``"all"`` entry pooling every relation."""
    hits, n = defaultdict(lambda: 0), defaultdict(int)
    for wa, hs, rels in zip(word_attentions, heads, deprels):
        wa = np.asarray(wa)
        if wa.shape[-1] != len(hs) or len(rels) != len(hs):
            raise ValueError(f"word attention covers {wa.shape[-1]} words but the annotation has {len(hs)}")
        best = wa.argmax(-1)                                                          # (L, A, W)
        for i, (h, rel) in enumerate(zip(hs, rels)):
            if h == 0:
                continue
            hit = (best[..., i] == h - 1).astype(np.float64)
            for key in (rel, "all"):
                hits[key] = hits[key] + hit
                n[key] += 1
    return {rel: {"n": n[rel], "accuracy": np.asarray(hits[rel]) / n[rel]} for rel in sorted(n)}


def offset_baseline(heads, deprels, offsets=(-4, -3, -2, -1, 1, 2, 3, 4)) -> dict:
    """The best fixed-offset guess per relation: predict "the head is the word at i + k" and keep the
    k that is right most often. Returns ``{rel: {"offset", "accuracy", "n"}}`` with ``"all"``."""
    table = defaultdict(lambda: np.zeros(len(offsets)))
    n = defaultdict(int)
    for hs, rels in zip(heads, deprels):
        for i, (h, rel) in enumerate(zip(hs, rels)):
            if h == 0:
                continue
            right = np.asarray([h - 1 == i + k for k in offsets], np.float64)
            for key in (rel, "all"):
                table[key] += right
                n[key] += 1
    out = {}
    for rel in sorted(n):
        k = int(np.argmax(table[rel]))
        out[rel] = {"offset": offsets[k], "accuracy": float(table[rel][k] / n[rel]), "n": n[rel]}
    return out


def best_heads(dep: dict, baseline: dict, min_count: int = 20) -> dict:
    """Per relation with at least ``min_count`` dependents: the best head (layer, head, accuracy)
    next to the fixed-offset baseline."""
    out = {}
    for rel, d in dep.items():
        if d["n"] < min_count:
            continue
        l, a = np.unravel_index(int(np.argmax(d["accuracy"])), d["accuracy"].shape)
        out[rel] = {"n": d["n"], "layer": int(l) + 1, "head": int(a), "accuracy": float(d["accuracy"][l, a]),
                    "offset": baseline[rel]["offset"], "offset_accuracy": baseline[rel]["accuracy"]}
    return out


def attention_analysis(model, tokenizer, rows, batch_size: int = 64) -> dict:
    """Head statistics and dependency accuracy on annotated sentences (``probing.jsonl`` rows).

    Returns ``{"stats": {stat: (L, A)}, "dependency": {rel: ...}, "offset": {rel: ...},
    "best": {rel: ...}}`` (arrays as nested lists are left to the caller).
    """
    encs, attn, pieces = sentence_attentions(model, tokenizer, [r["tokens"] for r in rows], batch_size)
    stats = head_statistics(attn, pieces)
    words = [word_attention(a, e.word_starts, e.word_ends) for a, e in zip(attn, encs)]
    heads = [r["heads"] for r in rows]
    rels = [r["deprels"] for r in rows]
    dep = dependency_accuracy(words, heads, rels)
    base = offset_baseline(heads, rels)
    return {"stats": stats, "dependency": dep, "offset": base, "best": best_heads(dep, base)}
