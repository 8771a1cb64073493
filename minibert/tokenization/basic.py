"""BasicTokenizer: raw text -> words and punctuation marks, before any vocabulary is involved.

BERT tokenizes in two stages. This first stage knows nothing about the vocabulary:

1. clean: drop NUL, U+FFFD (the "replacement character" left by bad decoding) and control characters;
   turn every whitespace character (tab, newline, no-break space, ...) into a plain space;
2. put spaces around CJK ideographs, so each becomes a word of its own (Chinese and Japanese are
   written without spaces between words, so a character is the only safe unit);
3. split on whitespace;
4. for each word: lowercase and strip accents if asked (NFD splits "é" into "e" + a combining acute
   accent, a character of category Mn, which is then dropped);
5. split punctuation off: every punctuation character becomes a token of its own, so "what?!" gives
   "what", "?", "!".

The second stage (``wordpiece.py``) cuts each word into vocabulary pieces.

The rules are those of google-research/bert ``tokenization.py``, with the two changes Hugging Face made
(both in its Python ``BasicTokenizer`` and in the Rust ``tokenizers`` BertNormalizer/BertPreTokenizer):

* "control" means any Unicode category C* (the original: only Cc and Cf), so private-use (Co) and
  unassigned (Cn) code points are removed as well (HF's Rust tokenizer keeps Cn ones);
* ``never_split`` words (special tokens such as ``[MASK]``) are kept whole: not lowercased, not split.

We do NOT NFC-normalise before splitting, as the original and HF's Rust tokenizer do not (HF's Python
``BasicTokenizer`` in transformers 4.x does). It only matters when accents are kept: "café" typed with
a combined "é" and with "e" + combining accent are then different words, and the second is usually [UNK].
"""
from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable


def is_whitespace(char: str) -> bool:
    """Space, tab, newline, carriage return, or any Unicode space separator (category Zs)."""
    # \t \n \r are control characters for Unicode (Cc), but every text treats them as spaces.
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def is_control(char: str) -> bool:
    """A character that carries no text: Unicode categories Cc, Cf, Cs, Co, Cn (tab/newline/CR excepted)."""
    if char in "\t\n\r":
        return False  # these count as whitespace (see is_whitespace)
    return unicodedata.category(char).startswith("C")


def is_punctuation(char: str) -> bool:
    """Unicode punctuation (categories P*) or any printable ASCII character that is not a letter or digit.

    The ASCII rule makes "$", "^", "`", "+", "<", "|" ... punctuation too, although Unicode files them
    as symbols (S*), so that ASCII text splits the same way whatever the symbol.
    """
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


# The CJK Unified Ideographs blocks the original lists. Hangul, Hiragana and Katakana are NOT in them:
# those scripts are written with spaces (Korean) or are syllabaries, and are left to WordPiece.
CJK_RANGES = (
    (0x4E00, 0x9FFF),    # CJK Unified Ideographs
    (0x3400, 0x4DBF),    # Extension A
    (0x20000, 0x2A6DF),  # Extension B
    (0x2A700, 0x2B73F),  # Extension C
    (0x2B740, 0x2B81F),  # Extension D
    (0x2B820, 0x2CEAF),  # Extension E
    (0xF900, 0xFAFF),    # CJK Compatibility Ideographs
    (0x2F800, 0x2FA1F),  # CJK Compatibility Ideographs Supplement
)


def is_cjk_ideograph(char: str) -> bool:
    """True for a character in one of the CJK ideograph blocks above."""
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


class _CleanTable(dict):
    """A ``str.translate`` table that fills itself: code point -> what steps 1 and 2 turn it into.

    The rules are decided by the readable functions above, once per distinct character; after that
    ``str.translate`` applies them at C speed. That makes cleaning a whole corpus cheap.
    """

    def __missing__(self, cp: int) -> str:
        char = chr(cp)
        if cp == 0 or cp == 0xFFFD or is_control(char):
            out = ""                 # removed
        elif is_whitespace(char):
            out = " "
        elif is_cjk_ideograph(char):
            out = f" {char} "        # a word of its own
        else:
            out = char               # kept as it is
        self[cp] = out
        return out


_CLEAN_TABLE = _CleanTable()


def clean_text(text: str) -> str:
    """Steps 1 and 2: remove NUL / U+FFFD / control characters, whitespace -> " ", space out CJK ideographs."""
    return text.translate(_CLEAN_TABLE)


def strip_accents(word: str) -> str:
    """Decompose (NFD) and drop the combining marks (category Mn): "Ångström" -> "Angstrom"."""
    if word.isascii():
        return word  # nothing to decompose
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def split_on_punctuation(word: str) -> list[str]:
    """Cut a word before and after every punctuation character: "3.14" -> ["3", ".", "14"]."""
    if word.isalnum():
        # Letters and digits are never punctuation (tests/test_tokenization.py checks this over all of
        # Unicode), so most words skip the character loop.
        return [word]
    pieces: list[str] = []
    start_new = True
    for char in word:
        if is_punctuation(char):
            pieces.append(char)
            start_new = True
        elif start_new:
            pieces.append(char)
            start_new = False
        else:
            pieces[-1] += char
    return pieces


class BasicTokenizer:
    """Split text into words and punctuation marks (steps 1-5 in the module docstring).

    Args:
        do_lower_case: lowercase every word (the "uncased" BERT models).
        never_split: words returned untouched (special tokens such as "[MASK]"). They must stand between
            spaces here; ``BertTokenizer`` also finds them glued to other text.
        strip_accents: remove accents; None (the default) means "do it when lowercasing", as in BERT.
    """

    def __init__(self, do_lower_case: bool = True, never_split: Iterable[str] = (),
                 strip_accents: bool | None = None):
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = self.do_lower_case if strip_accents is None else bool(strip_accents)
        self.never_split = frozenset(never_split)
        # Text repeats words endlessly (Zipf), so the per-word work (steps 4-5) is memoised.
        self._split_word_cached = functools.lru_cache(maxsize=1 << 16)(self.split_word)

    def tokenize(self, text: str) -> list[str]:
        """Words and punctuation marks of ``text``, in order."""
        tokens: list[str] = []
        for word in self.split_whitespace(text):
            tokens.extend(self._split_word_cached(word))
        return tokens

    def split_whitespace(self, text: str) -> list[str]:
        """Steps 1-3: clean, space out CJK ideographs, split on whitespace."""
        if not isinstance(text, str):
            raise TypeError(f"BasicTokenizer.tokenize expects a str, got {type(text).__name__}")
        return clean_text(text).split()

    def split_word(self, word: str) -> tuple[str, ...]:
        """Steps 4-5 for one whitespace-free word: lowercase, strip accents, split off punctuation."""
        if word in self.never_split:
            return (word,)
        if self.do_lower_case:
            word = word.lower()
        if self.strip_accents:
            word = strip_accents(word)  # may leave "" (a word made only of combining marks): no tokens
        return tuple(split_on_punctuation(word))

    def __repr__(self) -> str:
        return (f"BasicTokenizer(do_lower_case={self.do_lower_case}, strip_accents={self.strip_accents}, "
                f"never_split={sorted(self.never_split)})")
