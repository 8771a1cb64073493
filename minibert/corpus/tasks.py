"""Fine-tuning tasks with train/dev/test splits, written to tasks/<name>/{train,dev,test}.jsonl.

acceptability  CoLA-like: grammatical sentences vs agreement, NPI and word-order violations  (label 1 = acceptable)
sentiment      SST-like: the label depends on negation and contrast ("not good", "X but Y")   (label 1 = positive)
entailment     RTE-like, small: premise / hypothesis, entailment vs not                       (label 1 = entailment)
nli            MNLI-like, large (the intermediate task): entailment / neutral / contradiction (0 / 1 / 2)

Every item is built from a minimal change, so the classes share their words, lengths and constructions:
an unacceptable sentence is an acceptable one with one verb form flipped, one NPI unlicensed or two
words swapped; a hypothesis repeats its premise with one word or modifier changed, and whether that
change entails depends on the negation around it (monotonicity: "did not see a bird" entails "did not
see a robin", "saw a robin" entails "saw a bird"). No item's sentence occurs in the pretraining corpus.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from . import grammar as g
from . import io
from .documents import rng_for
from .evalsets import BOTH_VERBS
from .lexicon import Adjective, Noun, Verb, lexicon

SIZES = {"acceptability": (500, 300, 300), "sentiment": (1000, 300, 300), "entailment": (500, 300, 300),
         "nli": (30000, 2000, 2000)}
LABELS = {"acceptability": ["unacceptable", "acceptable"], "sentiment": ["negative", "positive"],
          "entailment": ["not_entailment", "entailment"], "nli": ["entailment", "neutral", "contradiction"]}
INPUTS = {"acceptability": ["sentence"], "sentiment": ["sentence"], "entailment": ["premise", "hypothesis"],
          "nli": ["premise", "hypothesis"]}


# ----------------------------------------------------------------------------------------------
# acceptability
# ----------------------------------------------------------------------------------------------
def _recase(tokens: list, upos: list) -> list:
    """Lower-case all but names, then capitalise the first token (after a reordering)."""
    out = [t if u == "PROPN" else t.lower() for t, u in zip(tokens, upos)]
    out[0] = out[0][0].upper() + out[0][1:]
    return out


def _agreement_base(ctx: g.Ctx) -> g.Sentence:
    """A sentence with at least one agreement link (redrawn until it has one)."""
    rng = ctx.rng
    while True:
        x = rng.random()
        if x < 0.7:
            s = g.agreement_sentence(ctx, rng.choice(g.AGREEMENT_KINDS), tense="present")
        elif x < 0.85:
            ctx.tense = rng.choice(("present", "perfect", "progressive"))
            s = g.negated(ctx)
        else:
            ctx.tense = "present"
            s = g.description(ctx)
        if s.agreement:
            return s


def _npi_clause(ctx: g.Ctx, shape: str, licensed: bool) -> g.Sentence:
    """An NPI sentence, licensed or not; the two versions differ only in the licensor or its place.

    ever:  S has (not) ever V-ed [O]          any: S did not V any N / S V-ed any N
    yet:   S has (not) V-ed O yet             that: S knows whether/that E has ever V-ed
    scope: S knows whether E has ever V-ed / S has ever known whether E V-ed
    """
    rng = ctx.rng
    b = g.Builder()
    s = ctx.agent({"person"} if shape in ("that", "scope") else {"person", "animal"}, rng.choice(("sg", "pl")))
    si = g._np(b, s)
    if shape in ("ever", "any", "yet"):
        tense = {"ever": "perfect", "any": "past", "yet": "perfect"}[shape]
        verb = ctx.verb(s.noun, "trans")
        v = g.verb_group(b, verb, tense, s.number, si, neg=licensed, adv="ever" if shape == "ever" else None)
        if shape == "any":
            r = g._any_object(ctx, verb, s.noun)
            d = b.add("any", "DET", "DT", "B-NP")
            n = b.add(r.noun.form(r.number), "NOUN", "NN" if r.number == "sg" else "NNS", "I-NP")
            b.attach(d, n, "det"), b.attach(n, v, "obj")
        else:
            b.attach(g._object(ctx, b, verb, s.noun), v, "obj")
        if shape == "yet":
            b.attach(b.add("yet", "ADV", "RB", "B-ADVP"), v, "advmod")
        return b.finish(v, "npi", tense)
    lic_verb = rng.choice([v for v in ctx.lex.verbs if v.base in BOTH_VERBS])
    inside = shape == "that" or licensed
    mv = g.verb_group(b, lic_verb, "present" if inside else "perfect", s.number, si, adv=None if inside else "ever")
    comp = b.add("that" if shape == "that" and not licensed else "whether", "SCONJ", "IN", "B-SBAR")
    e = ctx.agent()
    ei = g._np(b, e)
    verb = ctx.verb(e.noun, "intr")
    v = g.verb_group(b, verb, "perfect" if inside else "past", e.number, ei, adv="ever" if inside else None)
    b.attach(comp, v, "mark"), b.attach(v, mv, "ccomp")
    return b.finish(mv, "npi", "present")


def acceptability_item(ctx: g.Ctx, label: int) -> dict:
    """One sentence; `phenomenon` names what the unacceptable version breaks (and its acceptable twin)."""
    rng = ctx.rng
    phenomenon = rng.choice(("agreement", "npi", "word_order"))
    if phenomenon == "npi":
        s = _npi_clause(ctx, rng.choice(("ever", "any", "yet", "that", "scope")), licensed=bool(label))
        tokens = s.tokens
    else:
        s = _agreement_base(ctx)
        tokens = list(s.tokens)
        if not label and phenomenon == "agreement":
            link = rng.choice(s.agreement)
            tokens[link["verb"]] = link["other"]
        elif not label:
            # swap two neighbouring words of different parts of speech ("the dog" -> "dog the")
            spots = [i for i in range(len(tokens) - 2) if s.upos[i] != s.upos[i + 1]
                     and "PUNCT" not in (s.upos[i], s.upos[i + 1])]
            i = rng.choice(spots)
            order = list(range(len(tokens)))
            order[i], order[i + 1] = i + 1, i
            tokens = _recase([tokens[j] for j in order], [s.upos[j] for j in order])
    return {"sentence": g.detokenize(tokens), "label": label, "phenomenon": phenomenon}


# ----------------------------------------------------------------------------------------------
# sentiment
# ----------------------------------------------------------------------------------------------
def sentiment_item(ctx: g.Ctx, label: int) -> dict:
    rng = ctx.rng
    shape = rng.choice(g.EVALUATION_SHAPES)
    negs = (rng.random() < 0.4, rng.random() < 0.4)
    ctx.tense = rng.choice(("past", "present"))
    s, polarity = g.evaluation(ctx, shape, 1 if label else -1, negs)
    return {"sentence": s.text, "label": int(polarity > 0), "shape": shape,
            "negations": sum(negs[:1 if shape == "single" else 2])}


# ----------------------------------------------------------------------------------------------
# entailment: premise and hypothesis as one clause with one change
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clause:
    subj: g.Ref
    verb: Verb
    obj: Noun | None       # an indefinite object ("a robin", "some bread"), where monotonicity applies
    obj_number: str
    adj: Adjective | None  # on the object
    pp: tuple | None       # (prep, Noun): where it happened, on the verb
    neg: bool
    tense: str


def render(c: Clause) -> str:
    b = g.Builder()
    si = g._np(b, c.subj)
    v = g.verb_group(b, c.verb, c.tense, c.subj.number, si, neg=c.neg)
    if c.obj is not None:
        det = None if (c.obj_number == "pl" or c.obj.pl is None) else "a"
        b.attach(g.noun_phrase(b, c.obj, c.obj_number, det, c.adj), v, "obj")
    if c.pp:
        g.prep_phrase(b, c.pp[0], c.pp[1], "sg", "the", v, "obl")
    return b.finish(v, "nli", c.tense).text


# the verbs whose object position is upward monotone in a positive clause ("saw a robin" -> "saw a bird")
MONOTONE_VERBS = ("see", "watch", "find", "catch", "feed", "follow", "hear", "eat", "buy", "carry", "draw")


def _clause(ctx: g.Ctx, taxonomic: bool) -> Clause:
    """A random clause; with `taxonomic`, its object is a species whose category can replace it."""
    rng, lex = ctx.rng, ctx.lex
    subj = ctx.agent({"person"}, rng.choice(("sg", "pl")))
    verbs = [v for v in lex.verbs if v.base in MONOTONE_VERBS and lex.accepts(v.subj, subj.noun)]
    verb = rng.choice(verbs)
    pool = [n for n in lex.nouns.values() if lex.accepts(verb.obj, n) and n.sg != subj.noun.sg
            and (n.cat is not None if taxonomic else True) and n.pl is not None and n.cls != "work"]
    obj = rng.choice(pool)
    adjs = [a for a in lex.adjectives if obj.cls in a.applies and a.sentiment == 0]
    place = rng.choice(lex.by_class["place"])
    return Clause(subj, verb, obj, rng.choice(("sg", "pl")), rng.choice(adjs) if rng.random() < 0.3 else None,
                  (rng.choice(("in", "near", "behind")), place) if rng.random() < 0.3 else None,
                  rng.random() < 0.4, rng.choice(("past", "present", "perfect")))


def _category_noun(n: Noun) -> Noun:
    return lexicon().category_nouns[n.cat]


def _other_noun(ctx: g.Ctx, c: Clause) -> Noun:
    lex = ctx.lex
    pool = [n for n in lex.nouns.values() if lex.accepts(c.verb.obj, n) and n.sg not in (c.obj.sg, c.subj.noun.sg)
            and n.pl is not None and n.cat != c.obj.cat and n.cls != "work"]
    return ctx.rng.choice(pool)


def nli_item(ctx: g.Ctx, label: int) -> dict:
    """A premise/hypothesis pair with label 0 entailment, 1 neutral, 2 contradiction (see _nli_pair)."""
    while True:
        item = _nli_pair(ctx)
        if item["label"] == label:
            return item


def _nli_pair(ctx: g.Ctx) -> dict:
    """A premise/hypothesis pair and its label; the change is drawn among those that give `label` once negation
    is taken into account:
      modifier   P has an adjective or place that H drops (entails if P is positive),
                 or H adds one (entails if P is negated; otherwise neutral)
      taxonomy   H swaps the object for its category (entails if positive) or the reverse (entails if negated)
      other      H swaps the object for an unrelated noun (neutral)
      negation   H negates P (or un-negates it): contradiction; with the category in H: also contradiction
    """
    rng = ctx.rng
    c = _clause(ctx, taxonomic=rng.random() < 0.5)
    while True:
        change = rng.choice(("drop", "add", "up", "down", "other", "negate"))
        if change in ("up", "down") and c.obj.cat is None:
            continue
        break
    p, h = c, c
    if change in ("drop", "add"):
        full = replace(c, adj=c.adj or rng.choice([a for a in ctx.lex.adjectives if c.obj.cls in a.applies
                                                     and a.sentiment == 0]))
        bare = replace(full, adj=None)
        p, h = (full, bare) if change == "drop" else (bare, full)
        # dropping a modifier is upward: entailed in a positive clause, in a negated one the reverse
        entailed = (change == "drop") != c.neg
        lab = 0 if entailed else 1
    elif change in ("up", "down"):
        general = replace(c, obj=_category_noun(c.obj), adj=None)
        specific = replace(c, adj=None)
        p, h = (specific, general) if change == "up" else (general, specific)
        entailed = (change == "up") != c.neg
        lab = 0 if entailed else 1
    elif change == "other":
        h = replace(c, obj=_other_noun(ctx, c))
        lab = 1
    else:
        h = replace(c, neg=not c.neg)
        if rng.random() < 0.4 and c.obj.cat is not None:
            # "saw a robin" vs "did not see a bird": still contradictory (the negated side is general)
            specific, general = replace(c, neg=False), replace(c, neg=True, obj=_category_noun(c.obj), adj=None)
            p, h = (specific, general) if rng.random() < 0.5 else (general, specific)
        lab = 2
    return {"premise": render(p), "hypothesis": render(h), "label": lab, "change": change,
            "negated": p.neg}


def entailment_item(ctx: g.Ctx, label: int) -> dict:
    """Two-way version: entailment (1) vs not (0: neutral or contradiction, half each)."""
    if label:
        item = nli_item(ctx, 0)
    else:
        item = nli_item(ctx, ctx.rng.choice((1, 2)))
    return {**item, "label": int(item["label"] == 0), "nli_label": LABELS["nli"][item["label"]]}


# ----------------------------------------------------------------------------------------------
# splits, files and the manifest entry
# ----------------------------------------------------------------------------------------------
MAKERS = {"acceptability": acceptability_item, "sentiment": sentiment_item, "entailment": entailment_item,
          "nli": nli_item}


def _texts(item: dict) -> tuple:
    return tuple(item[k] for k in ("sentence", "premise", "hypothesis") if k in item)


def make_task(name: str, seed: int, corpus: set, taken: set) -> dict:
    """{split: [items]} with labels cycling through the classes (balanced), no duplicates, no corpus sentence."""
    rng = rng_for(seed, 0, f"task-{name}")
    ctx = g.Ctx(rng)
    n_labels = len(LABELS[name])
    splits = {}
    for split, n in zip(("train", "dev", "test"), SIZES[name]):
        items = []
        while len(items) < n:
            item = MAKERS[name](ctx, len(items) % n_labels)
            key = _texts(item)
            if key in taken or any(t in corpus for t in key):
                continue
            taken.add(key)
            items.append(item)
        rng.shuffle(items)
        splits[split] = items
    return splits


def write_all(out: Path, seed: int, corpus: set) -> tuple[list, dict]:
    """Write every task; return (relative paths, manifest entries with label counts and majority baselines)."""
    out = Path(out)
    files, info = [], {}
    taken = set()  # shared, so the small entailment task never repeats an nli pair
    for name in ("acceptability", "sentiment", "nli", "entailment"):
        splits = make_task(name, seed, corpus, taken)
        labels = LABELS[name]
        counts = {s: [sum(r["label"] == k for r in rows) for k in range(len(labels))] for s, rows in splits.items()}
        majority = max(range(len(labels)), key=lambda k: counts["train"][k])
        for split, rows in splits.items():
            rel = f"tasks/{name}/{split}.jsonl"
            io.write_jsonl(out / rel, rows)
            files.append(rel)
        info[name] = {
            "inputs": INPUTS[name], "labels": labels, "metric": "accuracy",
            "sizes": {s: len(r) for s, r in splits.items()}, "label_counts": counts,
            "majority_label": labels[majority],
            "majority_baseline": {s: round(c[majority] / sum(c), 4) for s, c in counts.items()},
        }
    return files, info
