"""Cloze probes: ask the masked-LM head, and read the answer off its scores.

    agreement   "The dogs that chase the cat [MASK] ." -- is log p(run) > log p(runs)?  (Goldberg 2019)
    npi         pseudo-log-likelihood of minimal pairs: licensor x scope x NPI present  (Warstadt et al. 2019)
    negation    "A robin is a [MASK]." vs "A robin is not a [MASK]."                    (Ettinger 2020)
    facts       "Robins are [MASK]." / "Robins have [MASK]." over the corpus's taxonomy  (Petroni et al. 2019)
    malformed   shuffle or truncate the masked sentence: how far do the predictions move?
                (after Ettinger 2020, who shuffled a separate context sentence instead)

Every probe takes ``layers`` and returns one summary per entry: None reads the last layer (the
model's real prediction); 0 feeds the embedding output straight into the MLM head, a baseline that
sees the masked word's position but no context; l reads encoder layer l. All layers come from one
forward pass. Scores are log-probabilities over the whole vocabulary, compared between candidate
words; candidates must be single WordPiece tokens (items whose words are split are counted and
skipped).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from minibert.probing.data import encode_words, masked_lm_log_probs, single_token_id


def _rate(flags) -> float | None:
    flags = list(flags)
    return float(np.mean(flags)) if flags else None


def _wins(diffs) -> float | None:
    """Fraction of positive differences, a tie counting one half (a context-free baseline can score two
    sentences exactly alike)."""
    d = np.asarray(list(diffs), dtype=np.float64)
    return float(np.mean((d > 0) + 0.5 * (d == 0))) if d.size else None


def _breakdown(keys, flags) -> dict:
    """{key: {"accuracy", "n"}} in sorted key order."""
    groups = defaultdict(list)
    for k, f in zip(keys, flags):
        groups[k].append(bool(f))
    return {str(k): {"accuracy": _rate(v), "n": len(v)} for k, v in sorted(groups.items())}


def _masked(tokens, index):
    words = list(tokens)
    words[index] = "[MASK]"
    return words


# ----------------------------------------------------------------------------------------------
# agreement
# ----------------------------------------------------------------------------------------------
def agreement_margins(model, tokenizer, items, layers=(None,), batch_size: int = 256):
    """log p(correct form) - log p(wrong form) at the masked verb, per item and layer.

    Returns ({layer: (N,) margins}, kept item indices); items whose forms are not single tokens are
    left out. A positive margin means the model chose the right number.
    """
    seqs, pos, pairs, kept = [], [], [], []
    for i, it in enumerate(items):
        good, bad = single_token_id(tokenizer, it["correct"]), single_token_id(tokenizer, it["wrong"])
        if good is None or bad is None:
            continue
        enc = encode_words(tokenizer, _masked(it["tokens"], it["mask_index"]))
        seqs.append(enc.input_ids)
        pos.append(enc.word_starts[it["mask_index"]])
        pairs.append((good, bad))
        kept.append(i)
    if not seqs:
        raise ValueError("no agreement item has single-token verb forms in this vocabulary")
    logp = masked_lm_log_probs(model, seqs, pos, layers, batch_size)
    pairs = np.asarray(pairs)
    rows = np.arange(len(pairs))
    return {layer: lp[rows, pairs[:, 0]] - lp[rows, pairs[:, 1]] for layer, lp in logp.items()}, kept


def summarise_agreement(items, margins) -> dict:
    """Accuracy overall, per construction, per number of attractors and per cell, with the
    nearest-noun baseline on the same items, and how often the model's choice agrees with the
    nearest noun where that noun has the other number (attraction errors)."""
    correct = np.asarray(margins) > 0
    cons = [it["construction"] for it in items]
    att = [it["attractors"] for it in items]
    baseline = [it["nearest_noun_number"] == it["subject_number"] for it in items]
    attracted = [not c for c, b in zip(correct, baseline) if not b]
    return {
        "accuracy": _rate(correct), "n": len(items),
        "by_construction": _breakdown(cons, correct),
        "by_attractors": _breakdown(att, correct),
        "by_cell": _breakdown([f"{c}/{a}" for c, a in zip(cons, att)], correct),
        "nearest_noun_baseline": {"accuracy": _rate(baseline),
                                  "by_construction": _breakdown(cons, baseline),
                                  "by_attractors": _breakdown(att, baseline),
                                  "by_cell": _breakdown([f"{c}/{a}" for c, a in zip(cons, att)], baseline)},
        "follows_nearest_noun_when_it_differs": _rate(attracted),
        "mean_margin": float(np.mean(margins)),
    }


def agreement_probe(model, tokenizer, items, layers=(None,), batch_size: int = 256) -> dict:
    """Agreement accuracy (mask the verb, compare the two forms) per requested layer.

    Returns ``{layer: summary}`` (see ``summarise_agreement``); each summary also gives ``skipped``, the
    number of items whose verb forms are not single tokens.
    """
    margins, kept = agreement_margins(model, tokenizer, items, layers, batch_size)
    used = [items[i] for i in kept]
    return {layer: {**summarise_agreement(used, m), "skipped": len(items) - len(kept)} for layer, m in margins.items()}


# ----------------------------------------------------------------------------------------------
# pseudo-log-likelihood and NPIs
# ----------------------------------------------------------------------------------------------
def pseudo_log_likelihood(model, tokenizer, sentences, layers=(None,), batch_size: int = 512) -> dict:
    """PLL(s) = sum over pieces t of log p(s_t | s with only t masked) (Salazar et al. 2020).

    sentences: lists of words. One masked copy per piece (not [CLS]/[SEP]), each scored at its piece
    alone (``targets``: no (copies, V) array). Returns ``{layer: (N,)}``.
    """
    copies, pos, target, owner = [], [], [], []
    for n, words in enumerate(sentences):
        ids = encode_words(tokenizer, words).input_ids
        for t in range(1, len(ids) - 1):
            masked = list(ids)
            masked[t] = tokenizer.mask_token_id
            copies.append(masked)
            pos.append(t)
            target.append(ids[t])
            owner.append(n)
    total = {layer: np.zeros(len(sentences)) for layer in layers}
    for layer, lp in masked_lm_log_probs(model, copies, pos, layers, batch_size, targets=target).items():
        np.add.at(total[layer], owner, lp)
    return total


# The minimal pairs of one group: (acceptable cell, unacceptable cell), cells (licensor, scope, item).
NPI_PAIRS = {
    "licensor": [(("whether", "in", "ever"), ("that", "in", "ever"))],
    "scope": [(("whether", "in", "ever"), ("whether", "out", "ever"))],
    "npi_present": [(("that", "in", "often"), ("that", "in", "ever")),
                    (("whether", "out", "often"), ("whether", "out", "ever")),
                    (("that", "out", "often"), ("that", "out", "ever"))],
}
# Differences in differences: the same comparison made with the decoy "often", which is acceptable in
# both sentences, is subtracted, so the words' own frequencies (whether vs that, ...) cancel.
NPI_CONTROLLED = {
    "licensor": ((("whether", "in", "ever"), ("that", "in", "ever")),
                 (("whether", "in", "often"), ("that", "in", "often"))),
    "scope": ((("whether", "in", "ever"), ("whether", "out", "ever")),
              (("whether", "in", "often"), ("whether", "out", "often"))),
}


def npi_probe(model, tokenizer, items, layers=(None,), batch_size: int = 512) -> dict:
    """Minimal pairs scored by PLL, per layer: for each contrast (licensor, scope, NPI present) the
    fraction of groups in which the acceptable sentence scores higher and the mean PLL difference
    (nats), the frequency-controlled differences in differences, and the mean PLL per cell.

    Every group repeats the same critical words, so even a tiny systematic effect (a random model's)
    can give accuracies of 0 or 1: read the accuracies next to the margins and the random baseline.
    """
    pll = pseudo_log_likelihood(model, tokenizer, [it["tokens"] for it in items], layers, batch_size)
    out = {}
    for layer, scores in pll.items():
        groups = defaultdict(dict)
        for it, score in zip(items, scores):
            groups[it["group"]][(it["licensor"], it["scope"], it["item"])] = score
        complete = [g for g in groups.values() if len(g) == 8]
        if not complete:
            raise ValueError("no complete NPI group (8 sentences: licensor x scope x item) among the items")
        res = {"groups": len(complete), "pairs": {}, "margins": {}, "controlled": {}, "controlled_margins": {},
               "mean_pll": {}}
        for name, pairs in NPI_PAIRS.items():
            diffs = [g[good] - g[bad] for g in complete for good, bad in pairs]
            res["pairs"][name] = _wins(diffs)
            res["margins"][name] = float(np.mean(diffs))
        for name, ((a, b), (c, d)) in NPI_CONTROLLED.items():
            diffs = [(g[a] - g[b]) - (g[c] - g[d]) for g in complete]
            res["controlled"][name] = _wins(diffs)
            res["controlled_margins"][name] = float(np.mean(diffs))
        for cell in sorted(complete[0]):
            res["mean_pll"]["/".join(cell)] = float(np.mean([g[cell] for g in complete]))
        out[layer] = res
    return out


# ----------------------------------------------------------------------------------------------
# negation
# ----------------------------------------------------------------------------------------------
def negation_probe(model, tokenizer, items, layers=(None,), batch_size: int = 256) -> dict:
    """Rank the categories for "A X is a [MASK]." and "A X is not a [MASK]." (Ettinger 2020), per layer.

    affirmative_accuracy: the true category ranks first among the candidates (the same level of the
    taxonomy). negated_accuracy: a *true* completion of the negated frame ranks first, i.e. anything
    but the true category. same_top_candidate / same_top_vocab: the two frames' best candidate / best
    word of the whole vocabulary coincide. logp_change: mean log p(true category) in the negated frame
    minus the affirmative one (a model that understood "not" would push it down).
    """
    seqs, pos, meta = [], [], []
    for it in items:
        cands = [single_token_id(tokenizer, c) for c in it["candidates"]]
        if any(c is None for c in cands):
            continue
        for frame in ("affirmative", "negated"):
            words = it[frame].replace("[MASK]", " [MASK] ").replace(".", " .").split()
            enc = encode_words(tokenizer, words)
            seqs.append(enc.input_ids)
            pos.append(enc.word_starts[words.index("[MASK]")])
        meta.append((it, cands, it["candidates"].index(it["expected"])))
    if not meta:
        raise ValueError("no negation item has single-token candidates in this vocabulary")

    def summary(rs):
        return {"n": len(rs), "affirmative_accuracy": _rate(r["aff_ok"] for r in rs),
                "negated_accuracy": _rate(r["neg_ok"] for r in rs),
                "same_top_candidate": _rate(r["same_cand"] for r in rs),
                "same_top_vocab": _rate(r["same_vocab"] for r in rs),
                "logp_change": float(np.mean([r["change"] for r in rs])) if rs else None}

    out = {}
    for layer, lp in masked_lm_log_probs(model, seqs, pos, layers, batch_size).items():
        aff, neg = lp[0::2], lp[1::2]
        rows = []
        for n, (it, cands, e) in enumerate(meta):
            a_top, n_top = int(np.argmax(aff[n, cands])), int(np.argmax(neg[n, cands]))
            rows.append({"invented": it["invented"], "aff_ok": a_top == e, "neg_ok": n_top != e,
                         "same_cand": a_top == n_top, "same_vocab": int(aff[n].argmax()) == int(neg[n].argmax()),
                         "change": float(neg[n, cands[e]] - aff[n, cands[e]])})
        res = summary(rows)
        res["real"] = summary([r for r in rows if not r["invented"]])
        res["invented"] = summary([r for r in rows if r["invented"]])
        res["chance_affirmative"] = float(np.mean([1 / len(c) for _, c, _ in meta]))
        res["examples"] = [
            {"sentence": it["affirmative"], "expected": it["expected"],
             "affirmative_top": tokenizer.convert_ids_to_tokens(int(aff[n].argmax())),
             "negated_top": tokenizer.convert_ids_to_tokens(int(neg[n].argmax()))}
            for n, (it, _, _) in enumerate(meta[:6])]
        out[layer] = res
    return out


# ----------------------------------------------------------------------------------------------
# facts
# ----------------------------------------------------------------------------------------------
def fact_items() -> list[dict]:
    """Cloze items built from the corpus's own world (``minibert.corpus``'s taxonomy and properties).

    taxonomy_plural  "Robins are [MASK] ."           candidates: the plural categories at that level
    taxonomy_kind    "The robin is a kind of [MASK] ." candidates: the categories at that level
    property         "Robins have [MASK] ."          candidates: every "have" property; true: the category's
    Every species (real and invented) gives one item per frame; the category words themselves give the
    superordinate level ("Birds are [MASK] ." -> animals). These facts are stated in the pretraining
    text (in these and other words), so the probe asks what the model *remembers*.
    """
    from minibert.corpus.grammar import PROPERTIES
    from minibert.corpus.lexicon import ANIMAL_CATS, TAXONOMY, lexicon

    lex = lexicon()
    cat_noun = lex.category_nouns
    levels = [list(ANIMAL_CATS), [c for c in TAXONOMY if c not in ANIMAL_CATS], ["animal", "food", "plant"]]
    real = {w.split("/")[0] for _, members in TAXONOMY.values() for w in members.split()}
    have = {c: sorted(p.split()[-1] for p in props if p.startswith("have ")) for c, props in PROPERTIES.items()}
    have_all = sorted({w for ws in have.values() for w in ws})

    def plural(word):
        n = cat_noun[word]
        return n.pl or n.sg

    items = []

    def add(frame, words, expected, candidates, subject, invented, true=None):
        items.append({"frame": frame, "tokens": words, "mask_index": words.index("[MASK]"),
                      "expected": expected, "candidates": candidates, "true": true or [expected],
                      "subject": subject, "invented": invented})

    for cat, members in lex.by_cat.items():
        level = next(lv for lv in levels if cat in lv)
        for noun in members:
            invented = noun.sg not in real
            if noun.pl:
                add("taxonomy_plural", [noun.pl.capitalize(), "are", "[MASK]", "."], plural(cat),
                    [plural(c) for c in level], noun.sg, invented)
            add("taxonomy_kind", ["The", noun.sg, "is", "a", "kind", "of", "[MASK]", "."], cat, level,
                noun.sg, invented)
            if have.get(cat) and noun.pl:
                add("property", [noun.pl.capitalize(), "have", "[MASK]", "."], have[cat][0], have_all,
                    noun.sg, invented, have[cat])
    for cat in levels[0] + levels[1]:
        sup = TAXONOMY[cat][0]
        add("taxonomy_plural", [plural(cat).capitalize(), "are", "[MASK]", "."], plural(sup),
            [plural(c) for c in levels[2]], cat, False)
        add("taxonomy_kind", ["The", cat, "is", "a", "kind", "of", "[MASK]", "."], sup, levels[2], cat, False)
    return items


def facts_probe(model, tokenizer, items, layers=(None,), batch_size: int = 256) -> dict:
    """Per layer: accuracy (the best-scoring candidate is a true answer) per frame, real vs invented
    species, with chance (|true| / |candidates|), and how often a true answer is the top word of the
    whole vocabulary."""
    seqs, pos, kept = [], [], []
    for it in items:
        cands = [single_token_id(tokenizer, c) for c in it["candidates"]]
        if any(c is None for c in cands):
            continue
        enc = encode_words(tokenizer, it["tokens"])
        seqs.append(enc.input_ids)
        pos.append(enc.word_starts[it["mask_index"]])
        kept.append((it, cands))
    if not kept:
        raise ValueError("no fact item has single-token candidates in this vocabulary")

    def summary(rs):
        return {"n": len(rs), "accuracy": _rate(r[1] for r in rs), "top_vocab": _rate(r[2] for r in rs),
                "chance": float(np.mean([r[3] for r in rs])) if rs else None}

    out = {}
    for layer, lp in masked_lm_log_probs(model, seqs, pos, layers, batch_size).items():
        rows = []
        for n, (it, cands) in enumerate(kept):
            best = it["candidates"][int(np.argmax(lp[n, cands]))]
            top = tokenizer.convert_ids_to_tokens(int(lp[n].argmax()))
            rows.append((it, best in it["true"], top in it["true"], len(it["true"]) / len(cands)))
        res = {"all": summary(rows), "skipped": len(items) - len(kept), "frames": {}}
        for frame in sorted({r[0]["frame"] for r in rows}):
            fr = [r for r in rows if r[0]["frame"] == frame]
            res["frames"][frame] = summary(fr)
            res["frames"][frame]["real"] = summary([r for r in fr if not r[0]["invented"]])
            res["frames"][frame]["invented"] = summary([r for r in fr if r[0]["invented"]])
        out[layer] = res
    return out


# ----------------------------------------------------------------------------------------------
# malformed input
# ----------------------------------------------------------------------------------------------
def malformed_items(sentences, rng: np.random.Generator, keep_before: int = 1) -> list[dict]:
    """For each annotated sentence, mask one noun or verb (chosen by ``rng``) and build three inputs:

    original   the sentence with that word masked
    shuffled   the other words in a random order (the mask keeps its word position, the final period
               stays; its piece position moves when a word of several pieces crosses it)
    truncated  only ``keep_before`` words before the mask are kept, everything after it stays
    Sentences without a noun or verb, or of fewer than four words, are skipped.
    """
    items = []
    for s in sentences:
        words, upos = s["tokens"], s["upos"]
        body = len(words) - 1 if upos[-1] == "PUNCT" else len(words)
        targets = [i for i in range(body) if upos[i] in ("NOUN", "VERB")]
        if body < 4 or not targets:
            continue
        m = int(rng.choice(targets))
        original = _masked(words, m)
        others = [i for i in range(body) if i != m]
        perm = [others[j] for j in rng.permutation(len(others))]
        shuffled = list(original)
        for slot, src in zip(others, perm):
            shuffled[slot] = original[src]
        start = max(0, m - keep_before)
        truncated = original[start:]
        items.append({"target": words[m], "original": (original, m), "shuffled": (shuffled, m),
                      "truncated": (truncated, m - start)})
    return items


def malformed_probe(model, tokenizer, items, layers=(None,), batch_size: int = 256) -> dict:
    """How far predictions move when the input is shuffled or truncated, per layer.

    For each perturbation: same_top (the vocabulary's top word is unchanged), kl (mean
    KL(original || perturbed) in nats over the whole vocabulary); for every condition the accuracy of
    the masked word (top-1) and its mean log-probability.
    """
    conditions = ("original", "shuffled", "truncated")
    seqs, pos = [], []
    for it in items:
        for c in conditions:
            words, m = it[c]
            enc = encode_words(tokenizer, words)
            seqs.append(enc.input_ids)
            pos.append(enc.word_starts[m])
    if not seqs:
        raise ValueError("malformed_probe got no items")
    ids = [single_token_id(tokenizer, it["target"]) for it in items]
    rows = np.asarray([n for n, i in enumerate(ids) if i is not None], dtype=np.int64)
    target = np.asarray([ids[n] for n in rows], dtype=np.int64)
    out = {}
    for layer, lp in masked_lm_log_probs(model, seqs, pos, layers, batch_size).items():
        lp = {c: lp[k::3].astype(np.float64) for k, c in enumerate(conditions)}
        res = {"n": len(items), "n_single_token_targets": len(rows)}
        p = np.exp(lp["original"])
        for c in conditions:
            res[c] = {"accuracy": _rate(lp[c][rows].argmax(1) == target),
                      "target_logp": float(np.mean(lp[c][rows, target]))}
            if c != "original":
                res[c]["same_top"] = _rate(lp[c].argmax(1) == lp["original"].argmax(1))
                res[c]["kl"] = float(np.mean((p * (lp["original"] - lp[c])).sum(1)))
        out[layer] = res
    return out
