"""Documents: little stories and fact sheets, each a list of annotated sentences.

Document i depends only on (seed, i): it draws from its own ``random.Random`` seeded by a hash of
both, so any slice of the corpus can be regenerated without the rest (the tests rely on this).

A story introduces a character in a place ("Mira was a farmer in Dunmere."), tells 2-9 events
built from the grammar's constructions with the topic's vocabulary and a small cast that recurs
(the character's name, "the farmer", the character's animal, a second character), and usually
ends with a conclusion ("In the end, Mira was happy."). A fact sheet states what a category's
members are and have ("Robins are birds. A robin has feathers. Robins are not fish.").
Entities and topic words recur within a document and differ between documents, which is what
makes next-sentence prediction learnable.
"""
from __future__ import annotations

import hashlib
import random

from . import grammar as g
from .lexicon import ANIMAL_CATS, TAXONOMY, Noun, lexicon

HELDOUT_EVERY = 50  # document i is held out when i % 50 == 49 (2% of the documents)
FACT_SHEET_P = 0.15

# how often each event construction is drawn in a story (weights, not percentages)
EVENT_WEIGHTS = {
    "simple": 16, "pp": 12, "subject_rc": 7, "object_rc": 7, "sent_complement": 9, "vp_coordination": 7,
    "negation": 9, "npi_licensed": 7, "npi_decoy": 6, "evaluation": 8, "description": 7, "property": 3,
}


def rng_for(seed: int, index: int, stream: str = "doc") -> random.Random:
    """A generator that depends only on (stream, seed, index), stable across Python versions."""
    digest = hashlib.sha256(f"{stream}:{seed}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def event(ctx: g.Ctx, kind: str) -> g.Sentence:
    """One story sentence of construction `kind`."""
    rng = ctx.rng
    if kind in g.AGREEMENT_KINDS:
        return g.agreement_sentence(ctx, kind)
    if kind == "negation":
        return g.negated(ctx)
    if kind == "npi_licensed":
        return g.npi_sentence(ctx, rng.choice(g.NPI_SHAPES))
    if kind == "npi_decoy":
        if rng.random() < 0.5:
            return g.decoy_out_of_scope(ctx)
        return g.npi_sentence(ctx, rng.choice(g.NPI_SHAPES), decoy=True)
    if kind == "evaluation":
        return g.evaluation(ctx)[0]
    if kind == "description":
        return g.description(ctx)
    if kind == "property":
        animals = [n for n in ctx.topic if n.cat in ANIMAL_CATS] or lexicon().by_class["animal"]
        return g.property_fact(ctx, rng.choice(animals))
    raise ValueError(f"unknown event construction {kind!r}")


def story(rng: random.Random) -> list[g.Sentence]:
    lex = lexicon()
    topic = rng.choice(sorted(lex.topics))
    tense = rng.choice(("past", "past", "present"))
    ctx = g.Ctx(rng, topic, tense=tense)
    name = Noun(rng.choice(lex.person_names), None, "person", proper=True)
    place = Noun(rng.choice(lex.place_names), None, "place", proper=True)
    people = [n for n in lex.topics[topic] if n.cls == "person" and n.pl]
    animals = [n for n in lex.topics[topic] if n.cls == "animal"] or lex.by_class["animal"]
    role = rng.choice(people)
    other = rng.choice([p for p in people if p is not role] or people)
    pet = g.Ref(rng.choice(animals), rng.choice(("sg", "pl")), "the")
    me = g.Ref(name, "sg", None)
    ctx.cast = [me, me, g.Ref(role, "sg", "the"), pet, g.Ref(other, rng.choice(("sg", "pl")), "the")]
    sentences = [g.introduction(ctx, name, role, place, pet)]
    kinds, weights = zip(*EVENT_WEIGHTS.items())
    for _ in range(rng.randint(2, 9)):
        s = event(ctx, rng.choices(kinds, weights)[0])
        if rng.random() < 0.15:
            s = g.front_adverbial(rng, s)
        sentences.append(s)
    if rng.random() < 0.7:
        sentences.append(g.conclusion(ctx, rng.choice([me, ctx.cast[2], pet])))
    return sentences


def fact_sheet(rng: random.Random) -> list[g.Sentence]:
    lex = lexicon()
    cat = rng.choice(sorted(TAXONOMY))
    ctx = g.Ctx(rng)
    animal = cat in ANIMAL_CATS
    n = rng.randint(3, 12)
    species = rng.sample(lex.by_cat[cat], min(n, len(lex.by_cat[cat])))
    sentences = []
    if rng.random() < 0.5:
        sentences.append(g.taxonomy_fact(ctx, None, cat))
    if rng.random() < 0.5:
        sentences.append(g.property_fact(ctx, lex.category_nouns[cat], cat=cat))
    for sp in species:
        options = [lambda: g.taxonomy_fact(ctx, sp, cat), lambda: g.property_fact(ctx, sp),
                   lambda: g.taxonomy_fact(ctx, sp, cat, neg=True)]
        if animal:
            options.append(lambda: g.property_fact(ctx, sp, neg=True))
        k = rng.choice((1, 1, 2))
        for make in rng.sample(options, k):
            sentences.append(make())
        if len(sentences) >= n:
            break
    return sentences[:n]


def document(seed: int, index: int, stream: str = "doc") -> list[g.Sentence]:
    """Document `index` of the corpus with this seed (other streams make documents for probing sets)."""
    rng = rng_for(seed, index, stream)
    return fact_sheet(rng) if rng.random() < FACT_SHEET_P else story(rng)


def is_heldout(index: int) -> bool:
    return index % HELDOUT_EVERY == HELDOUT_EVERY - 1


def document_text(sentences: list[g.Sentence]) -> str:
    """BERT's pretraining format: one sentence per line, a blank line after each document."""
    return "".join(s.text + "\n" for s in sentences) + "\n"


def generate(seed: int, n_words: int):
    """Yield (index, sentences) for documents 0, 1, 2, ... until n_words words have been produced.

    Words are whitespace-separated tokens of the text (punctuation attached), counted over train and
    held-out documents together.
    """
    words, i = 0, 0
    while words < n_words:
        sentences = document(seed, i)
        words += sum(len(s.text.split()) for s in sentences)
        yield i, sentences
        i += 1
