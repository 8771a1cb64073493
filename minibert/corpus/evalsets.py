"""Evaluation sets for the probes, generated beside the corpus and disjoint from it.

agreement.jsonl.gz    cloze items: mask the verb, compare the correct and the wrong form (Goldberg 2019)
npi.jsonl.gz          minimal pairs: licensor (whether/that) x scope (in/out) x item (ever/often) (Warstadt 2019)
negation.jsonl        "A robin is a [MASK]." / "A robin is not a [MASK]." with the category (Ettinger 2019)
probing.jsonl.gz      annotated sentences for POS / chunk / dependency probes, split train/test

No sentence of any set occurs in the pretraining text: every candidate is checked against the set of
corpus sentences and redrawn if it does. Each set draws from its own random stream seeded by
(seed, set name), so one set can change without moving the others.
"""
from __future__ import annotations

from pathlib import Path

from . import grammar as g
from . import io
from .documents import document, rng_for
from .lexicon import TAXONOMY, lexicon

AGREEMENT_PER_CELL = 80   # items per (construction, number of attractors)
NPI_GROUPS = 250          # groups of 8 minimal-pair sentences
PROBING_SENTENCES = 2000  # 1500 train + 500 test
PROBING_TEST = 500
REAL_WORDS = {w.split("/")[0] for _, members in TAXONOMY.values() for w in members.split()} | set(TAXONOMY)
BOTH_VERBS = ("know", "remember", "forget", "learn", "understand", "doubt")  # take "that" and "whether"


def _nearest_noun(s: g.Sentence, before: int) -> int:
    for i in range(before - 1, -1, -1):
        if s.upos[i] in ("NOUN", "PROPN"):
            return i
    raise ValueError(f"no noun before position {before} in {s.text!r}")


def _number(s: g.Sentence, i: int) -> str:
    return "pl" if s.xpos[i] == "NNS" else "sg"


def agreement_items(seed: int, corpus: set) -> list[dict]:
    """Cloze items per construction and number of attractors (0-3; "simple" has none).

    Attractors are the nouns of the other number than the subject that stand between the subject and
    the masked verb; for sent_complement, the nouns of the matrix clause (its subject and PPs), which
    precede the embedded subject.
    """
    rng = rng_for(seed, 0, "agreement")
    ctx = g.Ctx(rng, det_the_only=True)
    items, seen = [], set()
    for kind in g.AGREEMENT_KINDS:
        for k in ([0] if kind == "simple" else [0, 1, 2, 3]):
            made = 0
            while made < AGREEMENT_PER_CELL:
                number = ("sg", "pl")[made % 2]
                m = 0 if kind == "simple" else max(k, rng.choice((1, 2)))
                opposite = set(rng.sample(range(m), k))
                inter = [g._opposite(number) if j in opposite else number for j in range(m)]
                s = g.agreement_sentence(ctx, kind, number, inter, "present")
                if s.text in corpus or s.text in seen:
                    continue
                seen.add(s.text)
                v = s.focus
                link = next(a for a in s.agreement if a["verb"] == v)
                near = _nearest_noun(s, v)
                masked = list(s.tokens)
                masked[v] = "[MASK]"
                items.append({
                    "id": f"agr-{len(items)}", "construction": kind, "attractors": k, "intervening": m,
                    "sentence": g.detokenize(masked),
                    "tokens": s.tokens, "upos": s.upos, "xpos": s.xpos, "mask_index": v, "correct": s.tokens[v],
                    "wrong": link["other"],
                    "subject_index": link["subject"], "subject_number": number,
                    "nearest_noun_index": near, "nearest_noun_number": _number(s, near),
                })
                made += 1
    return items


def _npi_group(ctx: g.Ctx, lic_verb, subj: g.Ref, emb: g.Ref, emb_verb, obj: g.Ref | None) -> list[g.Sentence]:
    """The 8 sentences of one group, sharing all words but licensor, scope and item."""
    out = []
    for licensor in ("whether", "that"):
        for scope in ("in", "out"):
            for item in ("ever", "often"):
                b = g.Builder()
                si = g._np(b, subj)
                if scope == "in":  # the farmer knows whether the dogs have ever seen the bear
                    mv = g.verb_group(b, lic_verb, "present", subj.number, si)
                    comp = b.add(licensor, "SCONJ", "IN", "B-SBAR")
                    ei = g._np(b, emb)
                    v = g.verb_group(b, emb_verb, "perfect", emb.number, ei, adv=item)
                else:              # the farmer has ever known whether the dogs saw the bear
                    mv = g.verb_group(b, lic_verb, "perfect", subj.number, si, adv=item)
                    comp = b.add(licensor, "SCONJ", "IN", "B-SBAR")
                    ei = g._np(b, emb)
                    v = g.verb_group(b, emb_verb, "past", emb.number, ei)
                if obj is not None:
                    b.attach(g._np(b, obj), v, "obj")
                b.attach(comp, v, "mark"), b.attach(v, mv, "ccomp")
                s = b.finish(mv, "npi_pair", "present" if scope == "in" else "perfect")
                s.focus = (licensor, scope, item)
                out.append(s)
    return out


def npi_items(seed: int, corpus: set) -> list[dict]:
    """Groups of 8 sentences; acceptable unless the NPI "ever" lacks a licensor in scope."""
    rng = rng_for(seed, 0, "npi")
    ctx = g.Ctx(rng, det_the_only=True)
    lex = ctx.lex
    both = [v for v in lex.verbs if v.base in BOTH_VERBS]
    items, seen = [], set()
    while len(items) < 8 * NPI_GROUPS:
        subj = ctx.ref({"person"}, countable=True)
        emb = ctx.ref({"person", "animal"}, avoid=(subj.noun.sg,), countable=True)
        trans = rng.random() < 0.5
        emb_verb = ctx.verb(emb.noun, "trans" if trans else "intr")
        obj = ctx.ref(emb_verb.obj, avoid=(emb.noun.sg,)) if trans else None
        group = _npi_group(ctx, rng.choice(both), subj, emb, emb_verb, obj)
        texts = [s.text for s in group]
        if any(t in corpus or t in seen for t in texts):
            continue
        seen.update(texts)
        gid = len(items) // 8
        for s in group:
            licensor, scope, item = s.focus
            j = s.tokens.index(item)
            fact = next(f for f in s.npi if f["index"] == j)
            items.append({
                "id": f"npi-{len(items)}", "group": gid, "licensor": licensor, "scope": scope, "item": item,
                "npi": item == "ever", "sentence": s.text, "tokens": s.tokens, "item_index": j,
                "in_scope": fact["in_scope"], "acceptable": item != "ever" or fact["in_scope"],
            })
    return items


def negation_items(seed: int, corpus: set) -> list[dict]:
    """One item per species (and per category): the affirmative and negated frames and the answer.

    expected: the category (bird); candidates: the categories at the same level (the negated frame is
    true for every candidate but the expected one). The article before [MASK] agrees with the
    expected category ("an insect"), in both frames alike.
    """
    lex = lexicon()
    items = []
    animals = [c for c in TAXONOMY if TAXONOMY[c][0] == "animal"]
    others = [c for c in TAXONOMY if TAXONOMY[c][0] != "animal"]
    for cat in sorted(TAXONOMY):
        peers = animals if cat in animals else others
        for noun in sorted(lex.by_cat[cat], key=lambda n: n.sg):
            items.append(_negation_item(noun, cat, peers, len(items), corpus))
    for cat in sorted(TAXONOMY):
        items.append(_negation_item(lex.category_nouns[cat], TAXONOMY[cat][0], ["animal", "food", "plant"],
                                    len(items), corpus))
    return items


def _negation_item(noun, cat, peers, k, corpus):
    aff, neg = g.fact_frame(noun, cat, False), g.fact_frame(noun, cat, True)
    for filled in (g.fact_frame(noun, cat, False, masked=False), g.fact_frame(noun, cat, True, masked=False)):
        if filled.text in corpus:
            raise ValueError(f"the reserved probe frame occurs in the corpus: {filled.text!r}")
    return {"id": f"neg-{k}", "subject": noun.sg, "invented": noun.sg not in REAL_WORDS,
            "affirmative": aff.text, "negated": neg.text, "expected": cat,
            "candidates": sorted(peers), "mask_index_affirmative": aff.tokens.index("[MASK]"),
            "mask_index_negated": neg.tokens.index("[MASK]")}


def probing_sentences(seed: int, corpus: set) -> list[dict]:
    """Annotated sentences from fresh documents (a separate stream), none of them in the corpus."""
    rows, seen, i = [], set(), 0
    while len(rows) < PROBING_SENTENCES:
        for j, s in enumerate(document(seed, i, stream="probing")):
            if s.text in corpus or s.text in seen or len(rows) >= PROBING_SENTENCES:
                continue
            seen.add(s.text)
            row = s.to_json(f"p{i}.s{j}")
            row["split"] = "test" if len(rows) >= PROBING_SENTENCES - PROBING_TEST else "train"
            rows.append(row)
        i += 1
    return rows


def write_all(out: Path, seed: int, corpus: set) -> list[str]:
    """Write the four sets under out/eval/; return their relative paths."""
    out = Path(out)
    sets = {"eval/agreement.jsonl.gz": agreement_items, "eval/npi.jsonl.gz": npi_items,
            "eval/negation.jsonl": negation_items, "eval/probing.jsonl.gz": probing_sentences}
    for rel, make in sets.items():
        io.write_jsonl(out / rel, make(seed, corpus))
    return list(sets)
