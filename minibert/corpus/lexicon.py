"""The lexicon: every word the grammar can use, with its forms and its meaning class.

Real common English words form the core: nouns in semantic classes (people, animals, objects, places,
food, plants, works) with a small taxonomy (robin -> bird -> animal), verbs with their five forms and
what they combine with, adjectives (some carrying sentiment), adverbs, and the closed classes.
Invented words are added procedurally from syllables with a FIXED seed (``LEXICON_SEED``, independent
of the corpus seed, so every corpus shares one vocabulary): person names, place names and species
("a glimber is a bird"), whose facts a model can only learn from our corpus.

Spelling is American (neighbor, theater, traveled). Nouns whose plural equals the singular ("sheep",
"deer") are left out, except the category word "fish", which only ever appears as a predicate, so a
verb's number is always visible on its subject.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

LEXICON_SEED = 1234  # fixed: the invented words must not change with the corpus seed

VOWELS = "aeiou"


# ----------------------------------------------------------------------------------------------
# inflection
# ----------------------------------------------------------------------------------------------
def _sibilant_s(word: str) -> str:
    """Add -s / -es / -ies the way both plurals and 3rd-person-singular verbs do."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in VOWELS:
        return word[:-1] + "ies"
    return word + "s"


def _past(base: str) -> str:
    """Regular past tense; verbs that double a consonant are spelled out in the verb table."""
    if base.endswith("e"):
        return base + "d"
    if base.endswith("y") and base[-2] not in VOWELS:
        return base[:-1] + "ied"
    return base + "ed"


def _ing(base: str) -> str:
    if base.endswith("ie"):
        return base[:-2] + "ying"
    if base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        return base[:-1] + "ing"
    return base + "ing"


# ----------------------------------------------------------------------------------------------
# entries
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Noun:
    sg: str
    pl: str | None          # None: a mass noun ("bread"), used in the singular only
    cls: str                # person | animal | object | place | food | plant | work | category
    cat: str | None = None  # taxonomy category (robin -> "bird"); None if the noun has none
    proper: bool = False    # names: capitalised, singular, no determiner

    def form(self, number: str) -> str:
        return self.sg if number == "sg" else self.pl

    @property
    def mass(self) -> bool:
        return self.pl is None and not self.proper


@dataclass(frozen=True)
class Verb:
    base: str
    s: str        # 3rd person singular present
    past: str
    pp: str       # past participle
    ing: str
    subj: frozenset          # noun classes allowed as subject
    obj: frozenset | None    # noun classes (or specific nouns) allowed as object; None: no object
    intr: bool               # may be used without an object
    comp: frozenset          # complementisers it takes: {"that"}, {"whether"}, both, or none


@dataclass(frozen=True)
class Adjective:
    word: str
    sentiment: int   # +1, -1 or 0
    applies: frozenset  # noun classes it describes


# ----------------------------------------------------------------------------------------------
# nouns. "goose/geese" gives an irregular plural, "bread=" a mass noun.
# ----------------------------------------------------------------------------------------------
TAXONOMY = {  # category -> (superordinate, member species)
    "bird": ("animal", "robin sparrow eagle owl crow parrot pigeon swan duck goose/geese hawk penguin "
                       "finch gull heron wren chicken"),
    "fish": ("animal", "shark eel minnow guppy sardine anchovy tuna stingray herring flounder"),
    "mammal": ("animal", "dog cat cow horse pig goat rabbit mouse/mice fox wolf/wolves bear lion tiger "
                         "elephant monkey squirrel donkey camel hamster"),
    "insect": ("animal", "bee ant butterfly beetle moth wasp cricket grasshopper ladybug dragonfly "
                         "mosquito/mosquitoes"),
    "reptile": ("animal", "snake lizard turtle crocodile tortoise gecko iguana alligator chameleon cobra"),
    "fruit": ("food", "apple pear plum cherry orange banana lemon peach grape melon fig mango/mangoes"),
    "vegetable": ("food", "carrot potato/potatoes onion cabbage turnip bean tomato/tomatoes leek radish "
                          "pumpkin cucumber"),
    "tree": ("plant", "oak pine maple birch willow elm cedar beech fir spruce poplar"),
    "flower": ("plant", "rose tulip daisy lily violet daffodil poppy orchid sunflower marigold"),
}
CATEGORY_NOUNS = "bird fish/fish mammal insect reptile fruit vegetable tree flower animal food= plant"
ANIMAL_CATS = ("bird", "fish", "mammal", "insect", "reptile")

PEOPLE = ("teacher doctor farmer baker pilot singer student nurse driver painter writer cook "
          "fisherman/fishermen hunter king queen child/children boy girl man/men woman/women friend "
          "neighbor sailor soldier guard judge merchant miller shepherd gardener dancer actor poet "
          "waiter tailor clerk knight prince princess captain worker visitor stranger traveler "
          "musician carpenter keeper guest customer critic climber guide")
OBJECTS = ("book key box cup lamp letter map bag basket bottle chair table bell coat hat ring coin rope "
           "ladder boat cart clock candle mirror picture knife/knives spoon plate bowl bucket blanket "
           "stone stick shell pencil desk pot net sword shield crown ticket drum tent spade mask "
           "door window umbrella whistle kite")
PLACES = ("house barn village city garden forest river school market field farm hill lake bridge road "
          "kitchen shop castle tower station park beach harbor library mill stable cottage palace "
          "valley mountain island cave pond theater hotel restaurant cafe square street meadow path "
          "hall gate classroom zoo cage lighthouse")
FOOD = ("bread= soup= cake pie cookie cheese= milk= tea= coffee= rice= meat= honey= butter= jam= "
        "corn= grass= egg nut berry mushroom sandwich salad= water= dinner lunch breakfast meal")
WORKS = "film movie play song concert show story poem performance game lecture painting trip"

# the topics of the stories: which nouns belong to each setting (a noun may be in several)
TOPICS = {
    "farm": "farmer shepherd miller boy girl cow pig goat horse duck goose chicken rabbit donkey dog cat "
            "mouse bucket basket rope cart ladder barn field farm stable mill pond meadow milk corn egg "
            "bread cheese apple carrot potato grass",
    "forest": "hunter traveler child guide fox wolf bear owl squirrel rabbit snake beetle crow stick stone "
              "map lamp bag forest cave hill path river cottage valley berry nut mushroom honey oak pine "
              "birch",
    "sea": "sailor fisherman captain child shark eel gull turtle herring tuna boat net rope shell bucket "
           "map harbor beach island river lake bridge lighthouse bread soup",
    "market": "merchant baker tailor clerk guard visitor stranger woman man dog cat pigeon horse donkey "
              "coin basket bag hat coat ring bell cart clock bottle market shop square street station "
              "bread cake cheese apple pear plum pie jam",
    "school": "teacher student child boy girl clerk parrot mouse rabbit hamster book letter map pencil "
              "desk chair table picture bell clock school classroom library garden hall apple sandwich "
              "milk lecture story poem",
    "kitchen": "cook waiter baker guest customer cat mouse dog cup plate bowl spoon knife bottle pot table "
               "candle kitchen restaurant hotel cafe soup bread cake pie tea coffee salad cheese meat rice "
               "onion tomato meal dinner",
    "theater": "actor singer dancer musician poet painter writer critic picture painting mask ticket drum "
               "theater hall city hotel cafe film play song concert show poem story performance",
    "castle": "king queen prince princess knight guard soldier horse hawk dog sword shield crown ring key "
              "candle letter castle tower palace hall gate village bridge",
    "garden": "gardener child girl neighbor bee butterfly ant robin wren ladybug rose tulip daisy lily "
              "oak apple bucket basket spade hat ladder garden pond house park pear cherry carrot bean "
              "cabbage honey",
    "mountain": "traveler guide climber pilot driver stranger eagle goat hawk wolf bear rope map bag coat "
                "lamp tent mountain valley lake road village station hotel cave hill bread cheese tea soup",
    "zoo": "keeper visitor child lion tiger elephant monkey camel parrot penguin crocodile snake lizard "
           "gate bucket ticket zoo park pond cage meat banana",
}

# which works/food/places the sentiment sentences judge
EVALUABLE = ("film movie play song concert show story poem performance game lecture painting trip "
             "soup bread cake pie cheese coffee tea salad meat rice dinner lunch breakfast meal "
             "hotel restaurant cafe room= service= music= view= food=")


# ----------------------------------------------------------------------------------------------
# verbs: "base|past|pp|ing" where irregular (missing parts are derived), subject classes,
# object classes (or explicit nouns), intransitive use, complementisers.
# P person, A animal, O object, L place, F food, W work, T plant
# ----------------------------------------------------------------------------------------------
CLASS_CODES = {"P": "person", "A": "animal", "O": "object", "L": "place", "F": "food", "W": "work",
               "T": "plant"}
VERB_TABLE = [
    # intransitive only
    ("sleep|slept|slept", "PA", "", ""),
    ("run|ran|run|running", "PA", "", ""),
    ("walk", "PA", "", ""),
    ("wait", "PA", "", ""),
    ("laugh", "P", "", ""),
    ("smile", "P", "", ""),
    ("arrive", "P", "", ""),
    ("dance", "P", "", ""),
    ("work", "P", "", ""),
    ("cry", "P", "", ""),
    ("shout", "P", "", ""),
    ("rest", "PA", "", ""),
    ("jump", "PA", "", ""),
    ("swim|swam|swum|swimming", "PA", "", ""),
    ("sit|sat|sat|sitting", "PA", "", ""),
    ("hide|hid|hidden", "PA", "", ""),
    ("listen", "P", "", ""),
    ("travel|traveled|traveled", "P", "", ""),
    ("bloom", "T", "", ""),
    ("grow|grew|grown", "T", "", ""),
    # transitive (the * marks verbs that may also drop their object)
    ("sing|sang|sung", "P", "W", "*"),
    ("play", "PA", "W", "*"),
    ("climb", "PA", "L T", "*"),
    ("see|saw|seen", "PA", "P A O L T", ""),
    ("watch", "PA", "P A W", ""),
    ("follow", "PA", "P A", ""),
    ("chase", "A", "P A", ""),
    ("help", "P", "P", ""),
    ("feed|fed|fed", "P", "A", ""),
    ("visit", "P", "P L", ""),
    ("like", "PA", "P A F W L", ""),
    ("love", "P", "P A F W L", ""),
    ("hate", "P", "P F W", ""),
    ("find|found|found", "PA", "O A F", ""),
    ("carry|carried|carried", "P", "O F", ""),
    ("buy|bought|bought", "P", "O F", ""),
    ("sell|sold|sold", "P", "O F", ""),
    ("open", "P", "box door window bag bottle book letter gate", ""),
    ("close", "P", "box door window bag book gate", ""),
    ("clean", "P", "O L", ""),
    ("paint", "P", "O L", ""),
    ("fix", "P", "O", ""),
    ("hold|held|held", "P", "O A", ""),
    ("drop|dropped|dropped|dropping", "P", "O", ""),
    ("bring|brought|brought", "P", "O F", ""),
    ("lose|lost|lost", "P", "O", ""),
    ("need", "PA", "O F", ""),
    ("want", "PA", "O F", ""),
    ("read|read|read", "P", "book letter map poem story", "*"),
    ("write|wrote|written", "P", "letter book poem song story", "*"),
    ("cook", "P", "F", "*"),
    ("eat|ate|eaten", "PA", "F", "*"),
    ("bake", "P", "bread cake pie cookie", ""),
    ("meet|met|met", "P", "P", ""),
    ("call", "P", "P A", ""),
    ("push", "PA", "O", ""),
    ("catch|caught|caught", "PA", "A O", ""),
    ("bite|bit|bitten|biting", "A", "P A", ""),
    ("draw|drew|drawn", "P", "P A O L T", "*"),
    ("take|took|taken", "P", "O F", ""),
    ("leave|left|left", "P", "L", "*"),
    ("enter", "P", "L", ""),
    ("miss", "P", "P L", ""),
    ("greet", "P", "P", ""),
    ("thank", "P", "P", ""),
    ("teach|taught|taught", "P", "P", ""),
    ("enjoy", "P", "W F", ""),
    ("admire", "P", "P A W L T", ""),
    ("guard", "PA", "L O A", ""),
    ("pull", "PA", "O", ""),
    ("touch", "PA", "O A", ""),
    ("smell", "PA", "F T", ""),
    ("pick", "P", "fruit flower", ""),
    ("plant", "P", "tree flower vegetable", ""),
    ("hear|heard|heard", "PA", "P A W", ""),
    # clausal complements (and some transitive uses)
    ("say|said|said", "P", "", "that"),
    ("think|thought|thought", "P", "", "that"),
    ("believe", "P", "P", "that"),
    ("hope", "P", "", "that"),
    ("notice", "P", "P A O", "that"),
    ("explain", "P", "", "that"),
    ("know|knew|known", "P", "P L", "that whether"),
    ("remember", "P", "P L O", "that whether"),
    ("forget|forgot|forgotten|forgetting", "P", "", "that whether"),
    ("learn", "P", "W", "that whether"),
    ("understand|understood|understood", "P", "W", "that whether"),
    ("doubt", "P", "", "that whether"),
    ("wonder", "P", "", "whether"),
    ("ask", "P", "P", "whether"),
    ("check", "P", "O", "whether"),
]

# adjectives: (words, sentiment, classes they describe)
ADJECTIVES = [
    ("good great wonderful excellent lovely pleasant brilliant charming delightful perfect superb "
     "enjoyable fine", +1, "W F L"),
    ("delicious tasty fresh", +1, "F"),
    ("bad terrible awful boring dull horrible poor tedious disappointing weak", -1, "W F L"),
    ("stale bland", -1, "F"),
    ("noisy dirty", -1, "L"),
    ("big small old young tall", 0, "P A O L T"),
    ("red green blue brown white black", 0, "A O L T"),
    ("happy sad tired hungry angry busy calm brave kind", 0, "P A"),
    ("quiet", 0, "P A L"),
    ("warm", 0, "F L"),
    ("cold", -1, "F L"),
    ("slow", -1, "W P A"),
]

MANNER_ADVERBS = "quickly slowly quietly loudly happily carefully gently".split()
FREQUENCY_ADVERBS = "often sometimes usually always".split()
NPIS = {"ever": "often", "any": "some", "yet": "already"}  # NPI -> its non-NPI decoy
DECOYS = {v: k for k, v in NPIS.items()}
PREPOSITIONS = "near behind beside under above across from with by".split()  # noun modifiers
PERSON_PREPOSITIONS = "near behind beside with from".split()

# ----------------------------------------------------------------------------------------------
# invented words
# ----------------------------------------------------------------------------------------------
ONSETS = "b bl br d dr f fl fr g gl gr h j k l m n p pl pr r s sk sl sn st t th tr v w z".split()
VOWEL_CHOICES = "a e i o u a e i o".split()
MIDDLES = "mb nd st sk rt ll ck p t n m rg lp nk b d v".split()
SPECIES_ENDINGS = "er et le ock in an ow ix".split()
NAME_ENDINGS = "a o en in el is an ie ar et".split()
PLACE_CODAS = "n l r m s st nd rn".split()
PLACE_SUFFIXES = "ford dale mere wick ton by holm stead moor field bury port".split()


def _invent(rng: random.Random, n: int, make, taken: set[str]) -> list[str]:
    """Draw n distinct words from ``make(rng)`` that collide with nothing already taken."""
    out = []
    while len(out) < n:
        w = make(rng)
        if 4 <= len(w) <= 10 and w.lower() not in taken:
            taken.add(w.lower())
            out.append(w)
    return out


def _species(rng):
    # onset, vowel, a consonant cluster and a noun-like ending: "glimber", "tosket", "brandle"
    return rng.choice(ONSETS) + rng.choice(VOWEL_CHOICES) + rng.choice(MIDDLES) + rng.choice(SPECIES_ENDINGS)


def _person(rng):
    # "Mira", "Tobin", "Saleno": one or two (vowel, consonant) steps and a name-like ending
    w = rng.choice(ONSETS) + rng.choice(VOWEL_CHOICES) + rng.choice("lrnmdstvk")
    if rng.random() < 0.3:
        w += rng.choice(VOWEL_CHOICES) + rng.choice("lrnmdstvk")
    return (w + rng.choice(NAME_ENDINGS)).capitalize()


def _place(rng):
    return (rng.choice(ONSETS) + rng.choice(VOWEL_CHOICES) + rng.choice(PLACE_CODAS)
            + rng.choice(PLACE_SUFFIXES)).capitalize()


N_INVENTED_SPECIES = 30   # per category
N_PERSON_NAMES = 800
N_PLACE_NAMES = 400


# ----------------------------------------------------------------------------------------------
# the assembled lexicon
# ----------------------------------------------------------------------------------------------
def _parse_nouns(spec: str, cls: str, cat: str | None = None) -> list[Noun]:
    nouns = []
    for item in spec.split():
        if item.endswith("="):
            nouns.append(Noun(item[:-1], None, cls, cat))
        elif "/" in item:
            sg, pl = item.split("/")
            nouns.append(Noun(sg, pl, cls, cat))
        else:
            nouns.append(Noun(item, _sibilant_s(item), cls, cat))
    return nouns


def _parse_verb(forms: str, subj: str, obj: str, comp: str, noun_index) -> Verb:
    parts = forms.split("|")
    base = parts[0]
    past = parts[1] if len(parts) > 1 else _past(base)
    pp = parts[2] if len(parts) > 2 else past
    ing = parts[3] if len(parts) > 3 else _ing(base)
    s = "does" if base == "do" else _sibilant_s(base)
    objset = None
    if obj:
        # an object spec mixes class codes ("P A") and explicit nouns or categories ("fruit flower")
        objset = frozenset(CLASS_CODES.get(o, o) for o in obj.split())
        unknown = [o for o in objset if o not in CLASS_CODES.values() and o not in noun_index
                   and o not in TAXONOMY]
        if unknown:
            raise ValueError(f"verb {base!r}: unknown object nouns {unknown}")
    intr = not obj or comp == "*"
    comps = frozenset(comp.split()) - {"*"}
    return Verb(base, s, past, pp, ing, frozenset(CLASS_CODES[c] for c in subj), objset, intr, comps)


@dataclass
class Lexicon:
    nouns: dict           # word (singular) -> Noun
    by_class: dict        # class -> [Noun]
    by_cat: dict          # taxonomy category -> [Noun] (real and invented species)
    category_nouns: dict  # category word -> Noun ("bird", "fish", "animal", ...)
    verbs: list
    adjectives: list
    person_names: list
    place_names: list
    topics: dict          # topic -> [Noun]
    evaluable: list       # nouns the sentiment sentences judge

    def accepts(self, classes: frozenset, noun: Noun) -> bool:
        """True if a verb's subject/object specification admits this noun."""
        return noun.cls in classes or noun.sg in classes or (noun.cat in classes)

    def word_types(self) -> set[str]:
        """Every surface form the lexicon can produce (open classes; closed classes are in grammar)."""
        words = set()
        for n in list(self.nouns.values()) + list(self.category_nouns.values()):
            words.add(n.sg)
            if n.pl:
                words.add(n.pl)
        for v in self.verbs:
            words.update((v.base, v.s, v.past, v.pp, v.ing))
        words.update(a.word for a in self.adjectives)
        words.update(MANNER_ADVERBS + FREQUENCY_ADVERBS)
        return words


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """Build the lexicon (once per process; it is deterministic)."""
    nouns: dict[str, Noun] = {}

    def put(n: Noun):
        if n.sg in nouns and nouns[n.sg] != n:
            raise ValueError(f"noun {n.sg!r} defined twice with different properties")
        nouns[n.sg] = n

    for cat, (_, members) in TAXONOMY.items():
        cls = "animal" if cat in ANIMAL_CATS else ("food" if cat in ("fruit", "vegetable") else "plant")
        for n in _parse_nouns(members, cls, cat):
            put(n)
    for spec, cls in ((PEOPLE, "person"), (OBJECTS, "object"), (PLACES, "place"), (FOOD, "food"),
                      (WORKS, "work")):
        for n in _parse_nouns(spec, cls):
            if n.sg not in nouns:
                put(n)
    for n in _parse_nouns("room= service= music= view= food=", "work"):
        if n.sg not in nouns:
            put(n)
    category_nouns = {n.sg: n for n in _parse_nouns(CATEGORY_NOUNS, "category")}

    # invented words, from a fixed seed; nothing may collide with a real word
    rng = random.Random(LEXICON_SEED)
    taken = set(nouns) | {n.pl for n in nouns.values() if n.pl} | set(category_nouns)
    taken |= {f.split("|")[0] for f, *_ in VERB_TABLE}
    for cat, (_, _) in TAXONOMY.items():
        cls = "animal" if cat in ANIMAL_CATS else ("food" if cat in ("fruit", "vegetable") else "plant")
        for w in _invent(rng, N_INVENTED_SPECIES, _species, taken):
            put(Noun(w, _sibilant_s(w), cls, cat))
    person_names = _invent(rng, N_PERSON_NAMES, _person, taken)
    place_names = _invent(rng, N_PLACE_NAMES, _place, taken)

    by_class: dict[str, list[Noun]] = {}
    by_cat: dict[str, list[Noun]] = {}
    for n in nouns.values():
        by_class.setdefault(n.cls, []).append(n)
        if n.cat:
            by_cat.setdefault(n.cat, []).append(n)
    verbs = [_parse_verb(f, s, o, c, nouns) for f, s, o, c in VERB_TABLE]
    adjectives = [Adjective(w, sent, frozenset(CLASS_CODES[c] for c in cls.split()))
                  for words, sent, cls in ADJECTIVES for w in words.split()]
    topics = {}
    for t, spec in TOPICS.items():
        missing = [w for w in spec.split() if w not in nouns]
        if missing:
            raise ValueError(f"topic {t!r} names unknown nouns {missing}")
        topics[t] = [nouns[w] for w in spec.split()]
    evaluable = [nouns[w.rstrip("=")] for w in EVALUABLE.split()]
    return Lexicon(nouns, by_class, by_cat, category_nouns, verbs, adjectives, person_names,
                   place_names, topics, evaluable)
