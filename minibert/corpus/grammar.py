"""Constructions that build annotated sentences.

A sentence is built left to right by a ``Builder``: each word is added with its universal POS tag (UD
UPOS), its Penn Treebank tag (XPOS), its chunk tag (BIO over NP, VP, PP, SBAR, ADJP, ADVP; CoNLL-2000
style, except that a VP chunk holds the whole verb group, auxiliaries, "not" and pre-verbal adverbs
included), and a dependency arc (UD relations) attached as soon as its head exists. Agreement links are
recorded where the grammar makes a verb agree; negation and NPI facts are derived from the finished tree:
a licensor's scope is every word after it that its head dominates ("not" scopes over the rest of its
clause, "whether" over its whole clause), which is what c-command gives for these constructions.

Indexing: token positions in ``agreement``, ``negation`` and ``npi`` are 0-based; ``heads`` follow the
CoNLL convention (1-based, 0 = root).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .lexicon import (ANIMAL_CATS, DECOYS, MANNER_ADVERBS, NPIS, PERSON_PREPOSITIONS,
                      PREPOSITIONS, TAXONOMY, Adjective, Lexicon, Noun, Verb, lexicon)

PUNCT = {".", ",", "?", "!"}
LICENSORS = ("not", "whether")

# determiner -> (UPOS, XPOS, relation to its noun)
DET_INFO = {w: ("DET", "DT", "det") for w in
            "the a an this that these those every some any many no".split()}
DET_INFO.update({w: ("NUM", "CD", "nummod") for w in ("two", "three")})
DET_INFO.update({w: ("PRON", "PRP$", "nmod:poss") for w in ("my", "his", "her", "their", "our")})
SG_DETS = ["the"] * 8 + ["a"] * 4 + ["this", "that", "every", "my", "his", "her"]
PL_DETS = ["the"] * 8 + [None] * 3 + ["these", "those", "some", "many", "two", "three", "my", "their"]
MASS_DETS = ["the"] * 8 + [None, None, "this", "that", "my", "her", "some"]

# auxiliaries: word -> (XPOS, number it marks or None)
AUX = {"is": ("VBZ", "sg"), "are": ("VBP", "pl"), "was": ("VBD", "sg"), "were": ("VBD", "pl"),
       "has": ("VBZ", "sg"), "have": ("VBP", "pl"), "does": ("VBZ", "sg"), "do": ("VBP", "pl"),
       "did": ("VBD", None), "will": ("MD", None), "be": ("VB", None), "been": ("VBN", None)}
OTHER_FORM = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has",
              "does": "do", "do": "does"}
TENSES = ("present", "past", "perfect", "progressive", "future")


# ----------------------------------------------------------------------------------------------
# the annotated sentence
# ----------------------------------------------------------------------------------------------
@dataclass
class Sentence:
    tokens: list
    upos: list
    xpos: list
    chunks: list
    heads: list          # 1-based head per token, 0 = root
    deprels: list
    construction: str
    tense: str
    agreement: list      # {"verb", "subject", "number", "other"}: 0-based indexes; other = the wrong form
    negation: list       # 0-based indexes of "not"
    npi: list            # {"index", "word", "npi", "licensor", "licensor_word", "in_scope"}
    focus: int | None = field(default=None, compare=False)  # the verb a probe asks about (not saved)

    @property
    def text(self) -> str:
        return detokenize(self.tokens)

    def to_json(self, sid: str) -> dict:
        return {"id": sid, "text": self.text, "tokens": self.tokens, "upos": self.upos, "xpos": self.xpos,
                "chunks": self.chunks, "heads": self.heads, "deprels": self.deprels,
                "construction": self.construction, "tense": self.tense, "agreement": self.agreement,
                "negation": self.negation, "npi": self.npi}


def detokenize(tokens: list) -> str:
    """Join tokens with spaces, punctuation attached to the word before it."""
    out = ""
    for t in tokens:
        out += t if (t in PUNCT or not out) else " " + t
    return out


class Builder:
    """Accumulates tokens and their annotation; arcs may be attached after both ends exist."""

    def __init__(self):
        self.tok, self.upos, self.xpos, self.chunk, self.head, self.rel = [], [], [], [], [], []
        self.agreement = []

    def add(self, word, upos, xpos, chunk="O", head=None, rel=None) -> int:
        self.tok.append(word), self.upos.append(upos), self.xpos.append(xpos), self.chunk.append(chunk)
        self.head.append(head), self.rel.append(rel)
        return len(self.tok) - 1

    def attach(self, child: int, head: int, rel: str):
        self.head[child], self.rel[child] = head, rel

    def attach_all(self, pending, head: int):
        for child, rel in pending:
            self.attach(child, head, rel)

    def agree(self, verb: int, subject: int, number: str):
        """Record that the finite word at `verb` agrees with the noun at `subject`."""
        w = self.tok[verb]
        other = OTHER_FORM.get(w) or _other_verb_form(w, number)
        self.agreement.append({"verb": verb, "subject": subject, "number": number, "other": other})

    def finish(self, root: int, construction: str, tense: str, punct: str = ".") -> Sentence:
        p = self.add(punct, "PUNCT", ".", "O")
        self.attach(p, root, "punct")
        self.head[root], self.rel[root] = None, "root"
        n = len(self.tok)
        missing = [self.tok[i] for i in range(n) if self.head[i] is None and i != root]
        if missing:
            raise AssertionError(f"unattached tokens {missing} in {self.tok}")
        heads = [0 if i == root else self.head[i] + 1 for i in range(n)]
        tokens = list(self.tok)
        tokens[0] = tokens[0][0].upper() + tokens[0][1:]
        negation = [i for i, w in enumerate(self.tok) if w == "not"]
        return Sentence(tokens, list(self.upos), list(self.xpos), list(self.chunk), heads, list(self.rel),
                        construction, tense, self.agreement, negation, npi_facts(self.tok, self.upos, heads))


def _other_verb_form(word: str, number: str) -> str:
    """The present-tense form of the other number (a lookup over the lexicon's verbs)."""
    forms = _present_forms()
    if word not in forms:
        raise ValueError(f"{word!r} is not a present-tense verb form the lexicon knows")
    return forms[word]


_PRESENT = {}


def _present_forms() -> dict:
    if not _PRESENT:
        for v in lexicon().verbs + list(PROPERTY_VERBS.values()):
            _PRESENT[v.s], _PRESENT[v.base] = v.base, v.s
    return _PRESENT


def descendants(heads: list, i: int) -> set:
    """Indexes (0-based) of the tokens dominated by token i (heads 1-based, 0 = root)."""
    children = {}
    for j, h in enumerate(heads):
        children.setdefault(h - 1, []).append(j)
    out, stack = set(), [i]
    while stack:
        for c in children.get(stack.pop(), []):
            out.add(c)
            stack.append(c)
    return out


def npi_facts(tokens: list, upos: list, heads: list) -> list:
    """For every NPI (ever, any, yet) and decoy (often, some, already): is a licensor in scope?

    A licensor's scope is the set of tokens after it that its head dominates. If no licensor covers
    the item, the nearest licensor in the sentence (if any) is named with in_scope False.
    """
    words = [t.lower() for t in tokens]
    licensors = [i for i, w in enumerate(words) if w in LICENSORS]
    scopes = {i: {j for j in descendants(heads, heads[i] - 1) if j > i} for i in licensors}
    facts = []
    for j, w in enumerate(words):
        if w not in NPIS and w not in DECOYS:
            continue
        covering = [i for i in licensors if j in scopes[i]]
        if covering:
            lic = max(covering)
        elif licensors:
            lic = min(licensors, key=lambda i: abs(i - j))
        else:
            lic = None
        facts.append({"index": j, "word": w, "npi": w in NPIS, "licensor": lic,
                      "licensor_word": None if lic is None else words[lic], "in_scope": bool(covering)})
    return facts


# ----------------------------------------------------------------------------------------------
# phrases
# ----------------------------------------------------------------------------------------------
def article(next_word: str) -> str:
    return "an" if next_word[0].lower() in "aeiou" else "a"


def choose_det(rng: random.Random, noun: Noun, number: str):
    if noun.proper:
        return None
    if noun.mass:
        return rng.choice(MASS_DETS)
    return rng.choice(SG_DETS if number == "sg" else PL_DETS)


def noun_phrase(b: Builder, noun: Noun, number: str, det="the", adj: Adjective | None = None) -> int:
    """Add [det] [adj] noun as one NP chunk; return the index of the head noun."""
    if noun.proper:
        return b.add(noun.sg, "PROPN", "NNP", "B-NP")
    tags = iter(["B-NP", "I-NP", "I-NP"])
    d = None
    if det:
        if det == "a":
            det = article(adj.word if adj else noun.sg)
        upos, xpos, rel = DET_INFO[det]
        d = b.add(det, upos, xpos, next(tags))
    a = b.add(adj.word, "ADJ", "JJ", next(tags)) if adj else None
    n = b.add(noun.form(number), "NOUN", "NN" if number == "sg" else "NNS", next(tags))
    if d is not None:
        b.attach(d, n, DET_INFO[det][2])
    if a is not None:
        b.attach(a, n, "amod")
    return n


def prep_phrase(b: Builder, prep: str, noun: Noun, number: str, det, head: int, rel: str) -> int:
    """Add prep + NP attached to `head` (rel nmod for a noun, obl for a verb); return the noun index."""
    p = b.add(prep, "ADP", "IN", "B-PP")
    n = noun_phrase(b, noun, number, det)
    b.attach(p, n, "case")
    b.attach(n, head, rel)
    return n


def verb_group(b: Builder, verb: Verb, tense: str, number: str, subj: int | None, neg=False, adv=None,
               attach_subj=True) -> int:
    """Add the auxiliaries, "not", a pre-verbal adverb and the verb; return the verb's index.

    The finite word agrees with `subj` (a noun index) when its form marks number: a present-tense
    verb, do/does, has/have, is/are. The subject is attached to the verb as nsubj unless
    attach_subj is False (a relative clause, whose subject is "that", or a second conjunct).
    """
    chunks = iter(["B-VP"] + ["I-VP"] * 4)
    pending = []
    sg = number == "sg"
    if tense == "present" and not neg:
        aux, form, xpos = None, (verb.s if sg else verb.base), ("VBZ" if sg else "VBP")
    elif tense == "present":
        aux, form, xpos = ("does" if sg else "do"), verb.base, "VB"
    elif tense == "past" and not neg:
        aux, form, xpos = None, verb.past, "VBD"
    elif tense == "past":
        aux, form, xpos = "did", verb.base, "VB"
    elif tense == "perfect":
        aux, form, xpos = ("has" if sg else "have"), verb.pp, "VBN"
    elif tense == "progressive":
        aux, form, xpos = ("is" if sg else "are"), verb.ing, "VBG"
    elif tense == "future":
        aux, form, xpos = "will", verb.base, "VB"
    else:
        raise ValueError(f"unknown tense {tense!r}; expected one of {TENSES}")
    if aux:
        a = b.add(aux, "AUX", AUX[aux][0], next(chunks))
        pending.append((a, "aux"))
        if AUX[aux][1] and subj is not None:
            b.agree(a, subj, number)
    if neg:
        pending.append((b.add("not", "PART", "RB", next(chunks)), "advmod"))
    if adv:
        pending.append((b.add(adv, "ADV", "RB", next(chunks)), "advmod"))
    v = b.add(form, "VERB", xpos, next(chunks))
    if not aux and tense == "present" and subj is not None:
        b.agree(v, subj, number)
    b.attach_all(pending, v)
    if subj is not None and attach_subj:
        b.attach(subj, v, "nsubj")
    return v


def copula(b: Builder, tense: str, number: str, subj: int | None, neg=False, adv=None) -> list:
    """Add be (and "will", "not", an adverb); return the arcs to attach once the predicate exists."""
    sg = number == "sg"
    words = {"present": ["is" if sg else "are"], "past": ["was" if sg else "were"],
             "perfect": ["has" if sg else "have", "been"], "future": ["will", "be"],
             "progressive": ["is" if sg else "are"]}[tense]
    chunks = iter(["B-VP"] + ["I-VP"] * 4)
    pending = []
    for k, w in enumerate(words):
        i = b.add(w, "AUX", AUX[w][0], next(chunks))
        pending.append((i, "cop" if k == len(words) - 1 else "aux"))
        if AUX[w][1] and subj is not None:
            b.agree(i, subj, number)
        if k == 0 and neg:
            pending.append((b.add("not", "PART", "RB", next(chunks)), "advmod"))
    if adv:
        pending.append((b.add(adv, "ADV", "RB", next(chunks)), "advmod"))
    if subj is not None:
        pending.append((subj, "nsubj"))
    return pending


# ----------------------------------------------------------------------------------------------
# choosing words
# ----------------------------------------------------------------------------------------------
@dataclass
class Ref:
    """A noun as used in a sentence: the entry, its number and its determiner."""
    noun: Noun
    number: str
    det: str | None


class Ctx:
    """Where constructions get their words: a topic's nouns first, the whole lexicon otherwise.

    `cast` holds the story's recurring entities (names, "the farmer"), used as subjects
    with probability `cast_p`.
    """

    def __init__(self, rng: random.Random, topic: str | None = None, cast=(), cast_p=0.45,
                 tense: str = "present", det_the_only=False):
        self.rng, self.lex = rng, lexicon()
        self.topic = self.lex.topics[topic] if topic else []
        self.cast, self.cast_p, self.tense, self.det_the_only = list(cast), cast_p, tense, det_the_only

    def noun(self, classes, avoid=(), countable=False) -> Noun:
        ok = lambda n: (self.lex.accepts(classes, n) and n.sg not in avoid and not (countable and n.pl is None))
        local = [n for n in self.topic if ok(n)]
        if local and self.rng.random() < 0.7:
            return self.rng.choice(local)
        return self.rng.choice(_candidates(self.lex, frozenset(classes), countable, tuple(avoid)))

    def ref(self, classes, number=None, avoid=(), countable=False, det=None) -> Ref:
        n = self.noun(classes, avoid, countable)
        if n.pl is None:
            number = "sg"
        number = number or self.rng.choice(("sg", "pl"))
        if det is None:
            det = (None if n.proper else "the") if self.det_the_only else choose_det(self.rng, n, number)
        return Ref(n, number, det)

    def agent(self, classes=frozenset({"person", "animal"}), number=None) -> Ref:
        """A subject: a cast member (if it fits) or a fresh noun."""
        fits = [r for r in self.cast if self.lex.accepts(classes, r.noun) and (number in (None, r.number))]
        if fits and self.rng.random() < self.cast_p:
            return self.rng.choice(fits)
        return self.ref(classes, number, countable=True)

    def verb(self, subj: Noun, kind: str, obj: Noun | None = None) -> Verb:
        """A verb that takes this subject: kind 'intr', 'trans', 'clause', 'that' or 'whether'."""
        vs = [v for v in self.lex.verbs if self.lex.accepts(v.subj, subj) and _verb_kind(v, kind)
              and (obj is None or (v.obj is not None and self.lex.accepts(v.obj, obj)))]
        if not vs:
            raise ValueError(f"no {kind} verb takes subject {subj.sg!r}" + (f" and object {obj.sg!r}" if obj else ""))
        return self.rng.choice(vs)

    def tense_(self, allowed=TENSES) -> str:
        # the document's narrative tense most of the time, another tense otherwise
        if self.tense in allowed and self.rng.random() < 0.75:
            return self.tense
        return self.rng.choice(allowed)


def _verb_kind(v: Verb, kind: str) -> bool:
    return {"intr": v.intr and not v.comp, "trans": v.obj is not None, "clause": bool(v.comp),
            "that": "that" in v.comp, "whether": "whether" in v.comp,
            "both": {"that", "whether"} <= v.comp}[kind]


_CANDIDATES = {}


def _candidates(lex: Lexicon, classes: frozenset, countable: bool, avoid: tuple) -> list:
    key = (classes, countable, avoid)
    if key not in _CANDIDATES:
        _CANDIDATES[key] = [n for n in lex.nouns.values() if lex.accepts(classes, n)
                            and not (countable and n.pl is None) and n.sg not in avoid]
        if not _CANDIDATES[key]:
            raise ValueError(f"no noun of classes {sorted(classes)}")
    return _CANDIDATES[key]


def _np(b, r: Ref, adj=None) -> int:
    return noun_phrase(b, r.noun, r.number, r.det, adj)


def _modifier_pp(ctx: Ctx, b: Builder, head_noun: Noun, head: int, number: str) -> tuple[int, Noun]:
    """A PP modifying a noun ("near the barns"); its noun is an attractor candidate."""
    preps = PERSON_PREPOSITIONS if head_noun.cls in ("person", "animal") else PREPOSITIONS
    r = ctx.ref({"object", "place", "animal", "person", "plant"}, number, avoid=(head_noun.sg,), countable=True)
    return prep_phrase(b, ctx.rng.choice(preps), r.noun, r.number, r.det, head, "nmod"), r.noun


def _object(ctx: Ctx, b: Builder, verb: Verb, subj: Noun, number=None) -> int:
    r = ctx.ref(verb.obj, number, avoid=(subj.sg,), countable=number is not None)
    return _np(b, r)


def _opposite(number: str) -> str:
    return "pl" if number == "sg" else "sg"


# ----------------------------------------------------------------------------------------------
# agreement constructions (corpus and cloze sets share them)
# ----------------------------------------------------------------------------------------------
AGREEMENT_KINDS = ("simple", "pp", "subject_rc", "object_rc", "sent_complement", "vp_coordination")


def agreement_sentence(ctx: Ctx, kind: str, number: str | None = None, inter: list | None = None,
                       tense: str | None = None) -> Sentence:
    """A clause whose verb agrees with a subject across `inter` intervening nouns.

    inter: the numbers of the nouns between the subject and the probed verb ("sg"/"pl"); for
    sent_complement they are the nouns of the matrix clause before the embedded subject.
    The probed (focus) verb is a present-tense lexical verb when tense is "present".
    """
    rng = ctx.rng
    b = Builder()
    inter = list(inter) if inter is not None else [rng.choice(("sg", "pl")) for _ in range(rng.choice((0, 1, 1, 2)))]
    tense = tense or ctx.tense_(("present", "past", "present", "perfect", "progressive"))
    if kind == "sent_complement":
        # matrix: M [PP]* says that S V
        m = ctx.agent({"person"}, inter[0] if inter else None)
        mi = _np(b, m)
        last, last_noun = mi, m.noun
        for num in inter[1:]:
            last, last_noun = _modifier_pp(ctx, b, last_noun, last, num)
        mverb = ctx.verb(m.noun, "that")
        mv = verb_group(b, mverb, ctx.tense_(("past", "present")), m.number, mi)
        comp = b.add("that", "SCONJ", "IN", "B-SBAR") if rng.random() < 0.8 else None
        s = ctx.agent(number=number)
        si = _np(b, s)
        v = _predicate(ctx, b, s, si, tense)
        if comp is not None:
            b.attach(comp, v, "mark")
        b.attach(v, mv, "ccomp")
        sent = b.finish(mv, "sent_complement", tense)
        sent.focus = v
        return sent
    s = ctx.agent(number=number)
    si = _np(b, s)
    todo = list(inter)
    if kind == "simple":
        todo = []
    elif kind == "pp":
        if not todo:
            todo = [rng.choice(("sg", "pl"))]
        last, noun = si, s.noun
        for num in todo:
            last, noun = _modifier_pp(ctx, b, noun, last, num)
        todo = []
    elif kind in ("subject_rc", "object_rc"):
        rel = b.add("that", "PRON", "WDT", "B-NP")
        first = todo.pop(0) if todo else rng.choice(("sg", "pl"))
        rc_tense = ctx.tense_(("present", "past", "perfect"))
        if kind == "subject_rc":
            # "the dog that chases the cats [near the barn]": the RC verb agrees with the head noun
            rverb = ctx.verb(s.noun, "trans")
            rv = verb_group(b, rverb, rc_tense, s.number, si, attach_subj=False)
            b.attach(rel, rv, "nsubj")
            r = ctx.ref(rverb.obj, first, avoid=(s.noun.sg,), countable=True)
            last, noun = _np(b, r), r.noun
            b.attach(last, rv, "obj")
            for num in todo[:2]:  # PPs inside the RC add intervening nouns (the corpus uses at most one)
                last, noun = _modifier_pp(ctx, b, noun, last, num)
        else:
            # "the dog that the farmers [near the barn] feed": the RC subject must be able to act on s
            r = _rc_subject(ctx, s.noun, first)
            ri = _np(b, r)
            last, noun = ri, r.noun
            for num in todo[:2]:
                last, noun = _modifier_pp(ctx, b, noun, last, num)
            rverb = ctx.verb(r.noun, "trans", obj=s.noun)
            rv = verb_group(b, rverb, rc_tense, r.number, ri)
            b.attach(rel, rv, "obj")
        todo = todo[2:]
        b.attach(rv, si, "acl:relcl")
    elif kind == "vp_coordination":
        pass
    else:
        raise ValueError(f"unknown agreement construction {kind!r}; expected one of {AGREEMENT_KINDS}")
    if kind == "vp_coordination":
        # S [PP] V1 [obj] and V2: the nouns before V2 are the PP's and the first verb's object
        last, noun = si, s.noun
        for num in (todo[:-1] if len(todo) > 1 else []):
            last, noun = _modifier_pp(ctx, b, noun, last, num)
        obj_num = todo[-1] if todo else None
        t = tense if tense in ("present", "past") else "present"
        if obj_num:
            v1verb = ctx.verb(s.noun, "trans")
            v1 = verb_group(b, v1verb, t, s.number, si)
            b.attach(_object(ctx, b, v1verb, s.noun, obj_num), v1, "obj")
        else:
            v1verb = ctx.verb(s.noun, "intr")
            v1 = verb_group(b, v1verb, t, s.number, si)
        cc = b.add("and", "CCONJ", "CC", "O")
        v2verb = ctx.verb(s.noun, "intr")
        while v2verb.base == v1verb.base:
            v2verb = ctx.verb(s.noun, "intr")
        v2 = verb_group(b, v2verb, t, s.number, si, attach_subj=False)
        b.attach(cc, v2, "cc")
        b.attach(v2, v1, "conj")
        sent = b.finish(v1, kind, t)
        sent.focus = v2
        return sent
    v = _predicate(ctx, b, s, si, tense)
    sent = b.finish(v, kind, tense)
    sent.focus = v
    return sent


def _rc_subject(ctx: Ctx, head: Noun, number: str) -> Ref:
    """A subject for an object relative clause whose verb can take `head` as its object."""
    for _ in range(20):
        r = ctx.ref({"person", "animal"}, number, avoid=(head.sg,), countable=True,
                    det="the" if ctx.det_the_only else None)
        if any(ctx.lex.accepts(v.subj, r.noun) and v.obj is not None and ctx.lex.accepts(v.obj, head)
               for v in ctx.lex.verbs):
            return r
    raise ValueError(f"no relative-clause subject found for {head.sg!r}")


def _predicate(ctx: Ctx, b: Builder, s: Ref, si: int, tense: str) -> int:
    """The main verb phrase of a clause: intransitive (with an optional adverb or PP) or transitive."""
    rng = ctx.rng
    if rng.random() < 0.5:
        verb = ctx.verb(s.noun, "trans")
        v = verb_group(b, verb, tense, s.number, si)
        b.attach(_object(ctx, b, verb, s.noun), v, "obj")
    else:
        verb = ctx.verb(s.noun, "intr")
        v = verb_group(b, verb, tense, s.number, si)
        x = rng.random()
        if x < 0.25:
            b.attach(b.add(rng.choice(MANNER_ADVERBS), "ADV", "RB", "B-ADVP"), v, "advmod")
        elif x < 0.5:
            r = ctx.ref({"place"})
            prep_phrase(b, rng.choice(("in", "near", "behind", "by")), r.noun, r.number, r.det, v, "obl")
    return v


# ----------------------------------------------------------------------------------------------
# negation and NPIs
# ----------------------------------------------------------------------------------------------
def negated(ctx: Ctx) -> Sentence:
    """S does not / did not / has not / is not / will not V [O]."""
    b = Builder()
    s = ctx.agent()
    si = _np(b, s)
    tense = ctx.tense_()
    if ctx.rng.random() < 0.5:
        verb = ctx.verb(s.noun, "trans")
        v = verb_group(b, verb, tense, s.number, si, neg=True)
        b.attach(_object(ctx, b, verb, s.noun), v, "obj")
    else:
        verb = ctx.verb(s.noun, "intr")
        v = verb_group(b, verb, tense, s.number, si, neg=True)
    return b.finish(v, "negation", tense)


def _any_object(ctx: Ctx, verb: Verb, subj: Noun) -> Ref:
    """An object that can follow any/some: a plural count noun or a mass noun."""
    n = ctx.noun(verb.obj, avoid=(subj.sg,))
    return Ref(n, "sg" if n.pl is None else "pl", None)


NPI_SHAPES = ("neg_ever", "neg_any", "neg_yet", "whether_ever", "whether_any", "neg_that_ever")


def npi_sentence(ctx: Ctx, shape: str, decoy: bool = False) -> Sentence:
    """A sentence with an NPI in the scope of its licensor, or (decoy) the same with often/some/already.

    neg_ever       the farmer has not ever seen the bear
    neg_any        the farmer did not buy any apples
    neg_yet        the farmer has not fed the goats yet
    whether_ever   the farmer wonders whether the dogs have ever slept
    whether_any    the farmer wonders whether the dogs have eaten any bread
    neg_that_ever  the farmer does not think that the dogs have ever slept
    """
    rng = ctx.rng
    word = {"ever": "often", "any": "some", "yet": "already"} if decoy else {"ever": "ever", "any": "any", "yet": "yet"}
    b = Builder()
    s = ctx.agent({"person"} if shape.startswith(("whether", "neg_that")) else {"person", "animal"})
    si = _np(b, s)
    if shape in ("neg_ever", "neg_any", "neg_yet"):
        tense = {"neg_ever": rng.choice(("perfect", "past", "present")),
                 "neg_any": rng.choice(("past", "present", "perfect")),
                 "neg_yet": "perfect"}[shape]
        kind = "trans" if shape != "neg_ever" or rng.random() < 0.6 else "intr"
        verb = ctx.verb(s.noun, kind)
        v = verb_group(b, verb, tense, s.number, si, neg=True, adv=word["ever"] if shape == "neg_ever" else None)
        if shape == "neg_any":
            r = _any_object(ctx, verb, s.noun)
            d = b.add(word["any"], "DET", "DT", "B-NP")
            n = b.add(r.noun.form(r.number), "NOUN", "NN" if r.number == "sg" else "NNS", "I-NP")
            b.attach(d, n, "det"), b.attach(n, v, "obj")
        elif kind == "trans":
            b.attach(_object(ctx, b, verb, s.noun), v, "obj")
        if shape == "neg_yet":
            b.attach(b.add(word["yet"], "ADV", "RB", "B-ADVP"), v, "advmod")
        return b.finish(v, "npi_decoy" if decoy else "npi_licensed", tense)
    # embedded clauses: the licensor is "whether", or "not" in the matrix clause
    if shape.startswith("whether"):
        mverb = ctx.verb(s.noun, "whether")
        mtense = ctx.tense_(("present", "past"))
        mv = verb_group(b, mverb, mtense, s.number, si)
        comp = b.add("whether", "SCONJ", "IN", "B-SBAR")
    else:
        mverb = ctx.verb(s.noun, "that")
        mtense = ctx.tense_(("present", "past"))
        mv = verb_group(b, mverb, mtense, s.number, si, neg=True)
        comp = b.add("that", "SCONJ", "IN", "B-SBAR")
    e = ctx.agent()
    ei = _np(b, e)
    if shape.endswith("any"):
        verb = ctx.verb(e.noun, "trans")
        v = verb_group(b, verb, "perfect", e.number, ei)
        r = _any_object(ctx, verb, e.noun)
        d = b.add(word["any"], "DET", "DT", "B-NP")
        n = b.add(r.noun.form(r.number), "NOUN", "NN" if r.number == "sg" else "NNS", "I-NP")
        b.attach(d, n, "det"), b.attach(n, v, "obj")
    else:
        kind = "trans" if rng.random() < 0.5 else "intr"
        verb = ctx.verb(e.noun, kind)
        v = verb_group(b, verb, "perfect", e.number, ei, adv=word["ever"])
        if kind == "trans":
            b.attach(_object(ctx, b, verb, e.noun), v, "obj")
    b.attach(comp, v, "mark")
    b.attach(v, mv, "ccomp")
    return b.finish(mv, "npi_decoy" if decoy else "npi_licensed", mtense)


def decoy_out_of_scope(ctx: Ctx) -> Sentence:
    """A decoy outside a licensor's scope, the configuration an NPI may not take.

    rc:      the farmer that did not sleep has often fed the goats   (licensor inside the subject)
    matrix:  the farmer has often wondered whether the dogs slept     (decoy before "whether")
    that:    the farmer knows that the dogs have often slept          (no licensor at all)
    """
    rng = ctx.rng
    b = Builder()
    s = ctx.agent({"person"})
    si = _np(b, s)
    shape = rng.choice(("rc", "matrix", "that"))
    decoy = rng.choice(("often", "already"))
    if shape == "rc":
        rel = b.add("that", "PRON", "WDT", "B-NP")
        rverb = ctx.verb(s.noun, "intr")
        rv = verb_group(b, rverb, rng.choice(("past", "perfect")), s.number, si, neg=True, attach_subj=False)
        b.attach(rel, rv, "nsubj"), b.attach(rv, si, "acl:relcl")
        verb = ctx.verb(s.noun, "trans")
        v = verb_group(b, verb, "perfect", s.number, si, adv=decoy)
        b.attach(_object(ctx, b, verb, s.noun), v, "obj")
        return b.finish(v, "npi_decoy", "perfect")
    if shape == "matrix":
        mverb = ctx.verb(s.noun, "whether")
        mv = verb_group(b, mverb, "perfect", s.number, si, adv="often")
        comp = b.add("whether", "SCONJ", "IN", "B-SBAR")
    else:
        mverb = ctx.verb(s.noun, "that")
        mv = verb_group(b, mverb, ctx.tense_(("present", "past")), s.number, si)
        comp = b.add("that", "SCONJ", "IN", "B-SBAR")
    e = ctx.agent()
    ei = _np(b, e)
    verb = ctx.verb(e.noun, "intr")
    v = verb_group(b, verb, "past" if shape == "matrix" else "perfect", e.number, ei,
                   adv=None if shape == "matrix" else decoy)
    b.attach(comp, v, "mark"), b.attach(v, mv, "ccomp")
    return b.finish(mv, "npi_decoy", "perfect" if shape == "matrix" else "present")


# ----------------------------------------------------------------------------------------------
# facts: taxonomy and properties
# ----------------------------------------------------------------------------------------------
PROPERTIES = {
    "bird": ["have feathers", "lay eggs", "build nests", "have wings"],
    "fish": ["live in water", "have fins", "have gills"],
    "mammal": ["have fur", "drink milk"],
    "insect": ["have six legs", "have antennae"],
    "reptile": ["have scales", "lay eggs"],
    "fruit": ["taste sweet", "have seeds"],
    "vegetable": ["grow in gardens", "taste fresh"],
    "tree": ["have roots", "have branches", "grow tall"],
    "flower": ["have petals", "smell sweet"],
}
SPECIES_PROPERTIES = {"cow": "eat grass", "bee": "make honey", "cat": "catch mice", "squirrel": "eat nuts",
                      "rabbit": "eat carrots", "owl": "hunt at night", "monkey": "eat bananas",
                      "goat": "eat grass", "horse": "eat grass", "spider": "make webs"}
# verbs outside the lexicon's table: the property verbs and the story frame's "live" and "go"
PROPERTY_VERBS = {w: Verb(w, s, "", "", "", frozenset(), None, True, frozenset()) for w, s in
                  (("have", "has"), ("lay", "lays"), ("build", "builds"), ("live", "lives"), ("drink", "drinks"),
                   ("taste", "tastes"), ("grow", "grows"), ("smell", "smells"), ("eat", "eats"),
                   ("make", "makes"), ("catch", "catches"), ("hunt", "hunts"), ("go", "goes"))}
PROPERTY_NOUNS = {"water": "NN", "milk": "NN", "honey": "NN", "grass": "NN", "fur": "NN", "night": "NN"}


def category_of(noun: Noun) -> str:
    return noun.cat


def superordinate(cat: str) -> str:
    return TAXONOMY[cat][0]


def _property_vp(b: Builder, prop: str, number: str, subj: int, neg: bool) -> int:
    """Add a property VP ("have feathers", "live in water", "taste sweet"), present tense."""
    verb, *rest = prop.split()
    v_entry = PROPERTY_VERBS[verb]
    sg = number == "sg"
    pending = []
    if neg:
        a = b.add("does" if sg else "do", "AUX", "VBZ" if sg else "VBP", "B-VP")
        b.agree(a, subj, number)
        pending += [(a, "aux"), (b.add("not", "PART", "RB", "I-VP"), "advmod")]
        v = b.add(verb, "VERB", "VB", "I-VP")
    else:
        v = b.add(v_entry.s if sg else verb, "VERB", "VBZ" if sg else "VBP", "B-VP")
        b.agree(v, subj, number)
    b.attach_all(pending, v)
    b.attach(subj, v, "nsubj")
    if rest[0] in ("in", "at"):
        p = b.add(rest[0], "ADP", "IN", "B-PP")
        n = b.add(rest[-1], "NOUN", "NN", "B-NP")
        b.attach(p, n, "case"), b.attach(n, v, "obl")
    elif rest[0] in ("sweet", "tall", "fresh"):
        b.attach(b.add(rest[0], "ADJ", "JJ", "B-ADJP"), v, "xcomp")
    elif rest[0] == "six":
        num = b.add("six", "NUM", "CD", "B-NP")
        n = b.add(rest[1], "NOUN", "NNS", "I-NP")
        b.attach(num, n, "nummod"), b.attach(n, v, "obj")
    else:
        n = b.add(rest[0], "NOUN", PROPERTY_NOUNS.get(rest[0], "NNS"), "B-NP")
        b.attach(n, v, "obj")
    return v


def property_fact(ctx: Ctx, noun: Noun, neg: bool = False, cat: str | None = None) -> Sentence:
    """"Robins have feathers." / "A robin has feathers." / "Robins do not have fur." (true facts)

    `cat` names the category when `noun` is the category word itself ("Birds lay eggs.").
    """
    rng = ctx.rng
    cat = cat or noun.cat
    own = list(PROPERTIES[cat]) + ([SPECIES_PROPERTIES[noun.sg]] if noun.sg in SPECIES_PROPERTIES else [])
    if neg:
        if cat not in ANIMAL_CATS:
            raise ValueError("negated properties are stated for animals only (plant properties overlap)")
        prop = rng.choice([p for c in ANIMAL_CATS if c != cat for p in PROPERTIES[c] if p not in own])
    else:
        prop = rng.choice(own)
    b = Builder()
    number = rng.choice(("sg", "pl", "pl"))
    si = noun_phrase(b, noun, number, rng.choice(("a", "every", "the")) if number == "sg" else None)
    v = _property_vp(b, prop, number, si, neg)
    return b.finish(v, "property_negated" if neg else "property", "present")


def taxonomy_fact(ctx: Ctx, noun: Noun | None, cat: str, neg: bool = False) -> Sentence:
    """"Robins are birds." / "The robin is a kind of bird." / "Every robin is a bird." / negations.

    `noun` None states the category's own superordinate ("Birds are animals."). The frame
    "A robin is (not) a bird." is kept out of the corpus: the negation probe uses it.
    """
    rng = ctx.rng
    lex = ctx.lex
    if noun is None:
        subj, true_cat = lex.category_nouns[cat], superordinate(cat)
    else:
        subj, true_cat = noun, cat
    if neg:
        pool = ANIMAL_CATS if true_cat in ANIMAL_CATS else [c for c in TAXONOMY if c not in ANIMAL_CATS]
        if noun is None:
            pool = ("animal", "plant", "food")
        target = rng.choice([c for c in pool if c != true_cat])
    else:
        target = true_cat
    pred = lex.category_nouns[target]
    b = Builder()
    frame = rng.choice(("plural", "kind", "every") if not neg else ("plural", "kind"))
    if frame == "plural" and subj.pl:
        number = "pl"
        si = noun_phrase(b, subj, "pl", None)
    else:
        number = "sg"
        frame = "kind" if frame == "plural" else frame
        si = noun_phrase(b, subj, "sg", "every" if frame == "every" else rng.choice(("the", "a")))
    pending = copula(b, "present", number, si, neg=neg)
    if frame == "kind":
        d = b.add(article("kind"), "DET", "DT", "B-NP")
        k = b.add("kind", "NOUN", "NN", "I-NP")
        p = b.add("of", "ADP", "IN", "B-PP")
        c = b.add(pred.sg, "NOUN", "NN", "B-NP")
        b.attach(d, k, "det"), b.attach(p, c, "case"), b.attach(c, k, "nmod")
        head = k
    elif number == "pl":
        mass = pred.pl is None
        head = b.add(pred.sg if mass else pred.pl, "NOUN", "NN" if mass else "NNS", "B-NP")
    else:
        if pred.pl is None:  # "every X is food"
            head = b.add(pred.sg, "NOUN", "NN", "B-NP")
        else:
            d = b.add(article(pred.sg), "DET", "DT", "B-NP")
            head = b.add(pred.sg, "NOUN", "NN", "I-NP")
            b.attach(d, head, "det")
    b.attach_all(pending, head)
    return b.finish(head, "taxonomy_negated" if neg else "taxonomy", "present")


def fact_frame(noun: Noun, cat: str, neg: bool, masked: bool = True) -> Sentence:
    """The probe frame "A robin is (not) a [MASK]." (the category word in place of [MASK] if not masked)."""
    b = Builder()
    si = noun_phrase(b, noun, "sg", "a")
    pending = copula(b, "present", "sg", si, neg=neg)
    pred = lexicon().category_nouns[cat]
    d = b.add(article(pred.sg), "DET", "DT", "B-NP")
    head = b.add("[MASK]" if masked else pred.sg, "NOUN", "NN", "I-NP")
    b.attach(d, head, "det")
    b.attach_all(pending, head)
    return b.finish(head, "fact_probe_negated" if neg else "fact_probe", "present")


# ----------------------------------------------------------------------------------------------
# evaluations (sentiment) and copular descriptions
# ----------------------------------------------------------------------------------------------
def evaluative_adjectives(noun: Noun, polarity: int) -> list:
    return [a for a in lexicon().adjectives if a.sentiment == polarity and noun.cls in a.applies]


def _judgement(ctx: Ctx, b: Builder, noun: Noun, polarity: int, neg: bool, tense: str, det="the") -> int:
    """'the soup was (not) cold': the adjective's polarity flips under negation to give `polarity`."""
    adj_pol = -polarity if neg else polarity
    adj = ctx.rng.choice(evaluative_adjectives(noun, adj_pol))
    number = "sg" if noun.pl is None else ctx.rng.choice(("sg", "sg", "pl"))
    ni = noun_phrase(b, noun, number, det)
    pending = copula(b, tense, number, ni, neg=neg)
    a = b.add(adj.word, "ADJ", "JJ", "B-ADJP")
    b.attach_all(pending, a)
    return a


EVALUATION_SHAPES = ("single", "but", "although", "and")


def evaluation(ctx: Ctx, shape: str | None = None, polarity: int | None = None, neg_pattern=None,
               nouns=None) -> tuple[Sentence, int]:
    """A judgement of one or two things, with its overall polarity (+1 / -1).

    single    the film was (not) good
    but       the soup was cold but the bread was wonderful      -> the second clause decides
    although  although the soup was cold, the bread was wonderful -> the main clause decides
    and       the soup was cold and the bread was stale           -> both clauses agree
    """
    rng = ctx.rng
    shape = shape or rng.choice(EVALUATION_SHAPES)
    polarity = polarity or rng.choice((1, -1))
    tense = "past" if ctx.tense == "past" or rng.random() < 0.7 else "present"
    pool = [n for n in ctx.topic if n in ctx.lex.evaluable] or ctx.lex.evaluable
    if nouns is None:
        n1 = rng.choice(pool)
        n2 = rng.choice([n for n in pool if n is not n1] or ctx.lex.evaluable)
    else:
        n1, n2 = nouns
    negs = neg_pattern or (rng.random() < 0.35, rng.random() < 0.35)
    b = Builder()
    if shape == "single":
        a = _judgement(ctx, b, n1, polarity, negs[0], tense)
        return b.finish(a, "evaluation", tense), polarity
    first_pol = -polarity if shape in ("but", "although") else polarity
    if shape == "although":
        m = b.add("although", "SCONJ", "IN", "B-SBAR")
        a1 = _judgement(ctx, b, n1, first_pol, negs[0], tense)
        comma = b.add(",", "PUNCT", ",", "O")
        a2 = _judgement(ctx, b, n2, polarity, negs[1], tense)
        b.attach(m, a1, "mark"), b.attach(a1, a2, "advcl"), b.attach(comma, a2, "punct")
        return b.finish(a2, "evaluation", tense), polarity
    a1 = _judgement(ctx, b, n1, first_pol, negs[0], tense)
    cc = b.add(shape, "CCONJ", "CC", "O")
    a2 = _judgement(ctx, b, n2, polarity, negs[1], tense)
    b.attach(cc, a2, "cc"), b.attach(a2, a1, "conj")
    return b.finish(a1, "evaluation", tense), polarity


def description(ctx: Ctx) -> Sentence:
    """'The farmer was tired.' / 'The barns are old.'"""
    rng = ctx.rng
    b = Builder()
    s = ctx.agent({"person", "animal", "place", "object"})
    si = _np(b, s)
    tense = ctx.tense_(("present", "past"))
    adjs = [a for a in ctx.lex.adjectives if s.noun.cls in a.applies and a.sentiment == 0]
    pending = copula(b, tense, s.number, si, neg=rng.random() < 0.2)
    a = b.add(rng.choice(adjs).word, "ADJ", "JJ", "B-ADJP")
    b.attach_all(pending, a)
    return b.finish(a, "description", tense)


# ----------------------------------------------------------------------------------------------
# story frame: introductions, conclusions, fronted adverbials
# ----------------------------------------------------------------------------------------------
def introduction(ctx: Ctx, name: Noun, role: Noun, place: Noun, pet: Ref) -> Sentence:
    """'Mira was a farmer in Dunmere.' / 'There was a farmer named Mira in Dunmere.' / 'Mira lived in ...'"""
    rng = ctx.rng
    tense = "past" if ctx.tense == "past" else "present"
    b = Builder()
    shape = rng.choice(("was", "there", "lived"))
    if shape == "was":
        ni = noun_phrase(b, name, "sg", None)
        pending = copula(b, tense, "sg", ni)
        head = noun_phrase(b, role, "sg", "a")
        b.attach_all(pending, head)
        prep_phrase(b, "in", place, "sg", None, head, "nmod")
    elif shape == "there":
        ex = b.add("there", "PRON", "EX", "B-NP")
        be = b.add("was" if tense == "past" else "is", "VERB", "VBD" if tense == "past" else "VBZ", "B-VP")
        r = noun_phrase(b, role, "sg", "a")
        b.agree(be, r, "sg")
        named = b.add("named", "VERB", "VBN", "B-VP")
        nm = noun_phrase(b, name, "sg", None)
        b.attach(ex, be, "expl"), b.attach(r, be, "nsubj"), b.attach(named, r, "acl"), b.attach(nm, named, "xcomp")
        prep_phrase(b, "in", place, "sg", None, be, "obl")
        head = be
    else:
        ni = noun_phrase(b, name, "sg", None)
        live = Verb("live", "lives", "lived", "lived", "living", frozenset(), None, True, frozenset())
        head = verb_group(b, live, tense, "sg", ni)
        prep_phrase(b, "in", place, "sg", None, head, "obl")
        prep_phrase(b, "with", pet.noun, pet.number, "her" if rng.random() < 0.5 else "his", head, "obl")
    return b.finish(head, "introduction", tense)


def conclusion(ctx: Ctx, who: Ref) -> Sentence:
    """'In the end, Mira was happy.' / 'That night, the farmers went home.' / 'Mira slept well.'"""
    rng = ctx.rng
    past = ctx.tense == "past"
    b = Builder()
    shape = rng.choice(("end", "night", "home"))
    if shape == "end":
        p = b.add("in", "ADP", "IN", "B-PP")
        d = b.add("the", "DET", "DT", "B-NP")
        e = b.add("end", "NOUN", "NN", "I-NP")
        comma = b.add(",", "PUNCT", ",", "O")
        si = _np(b, who)
        pending = copula(b, "past" if past else "present", who.number, si)
        a = b.add(rng.choice(("happy", "tired", "calm", "glad")), "ADJ", "JJ", "B-ADJP")
        b.attach_all(pending, a)
        b.attach(p, e, "case"), b.attach(d, e, "det"), b.attach(e, a, "obl"), b.attach(comma, a, "punct")
        return b.finish(a, "conclusion", "past" if past else "present")
    if shape == "night":
        d = b.add("that", "DET", "DT", "B-NP")
        e = b.add("night", "NOUN", "NN", "I-NP")
        comma = b.add(",", "PUNCT", ",", "O")
    si = _np(b, who)
    go = Verb("go", "goes", "went", "gone", "going", frozenset(), None, True, frozenset())
    sleep = lexicon().verbs[0]
    verb = go if shape == "home" or rng.random() < 0.5 else sleep
    v = verb_group(b, verb, "past" if past else "present", who.number, si)
    b.attach(b.add("home" if verb is go else "well", "ADV", "RB", "B-ADVP"), v, "advmod")
    if shape == "night":
        b.attach(d, e, "det"), b.attach(e, v, "obl:tmod"), b.attach(comma, v, "punct")
    return b.finish(v, "conclusion", "past" if past else "present")


# fronted adverbials: (word, UPOS, XPOS, chunk, relation, head: 1-based within the phrase or 0 = the clause)
FRONTED = {
    "then": [("then", "ADV", "RB", "B-ADVP", "advmod", 0)],
    "later": [("later", "ADV", "RB", "B-ADVP", "advmod", 0)],
    "soon": [("soon", "ADV", "RB", "B-ADVP", "advmod", 0)],
    "after that": [("after", "ADP", "IN", "B-PP", "case", 2), ("that", "PRON", "DT", "B-NP", "obl", 0)],
    "at night": [("at", "ADP", "IN", "B-PP", "case", 2), ("night", "NOUN", "NN", "B-NP", "obl", 0)],
    "in the morning": [("in", "ADP", "IN", "B-PP", "case", 3), ("the", "DET", "DT", "B-NP", "det", 3),
                       ("morning", "NOUN", "NN", "I-NP", "obl", 0)],
}


def front_adverbial(rng: random.Random, s: Sentence) -> Sentence:
    """Prefix 'Then,' / 'In the morning,' to a finished sentence, shifting the annotation."""
    phrase = FRONTED[rng.choice(sorted(FRONTED))]
    k = len(phrase) + 1  # the phrase and its comma
    clause = s.heads.index(0) + 1 + k  # the old root's new 1-based position
    toks, up, xp, ch, rel, hd = (list(col) for col in zip(*phrase))
    hd = [h if h else clause for h in hd]
    toks, up, xp, ch = toks + [","], up + ["PUNCT"], xp + [","], ch + ["O"]
    hd, rel = hd + [clause], rel + ["punct"]
    first = s.tokens[0]
    body = ([first if s.upos[0] == "PROPN" or first == "I" else first[0].lower() + first[1:]] + s.tokens[1:])
    shift = lambda i: i + k
    return Sentence(
        [toks[0].capitalize()] + toks[1:] + body, up + s.upos, xp + s.xpos, ch + s.chunks,
        hd + [0 if h == 0 else h + k for h in s.heads], rel + s.deprels, s.construction, s.tense,
        [{**a, "verb": shift(a["verb"]), "subject": shift(a["subject"])} for a in s.agreement],
        [shift(i) for i in s.negation],
        [{**f, "index": shift(f["index"]), "licensor": None if f["licensor"] is None else shift(f["licensor"])}
         for f in s.npi],
        None if s.focus is None else shift(s.focus))
