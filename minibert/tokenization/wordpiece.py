"""WordPiece: cut a word into vocabulary pieces, greedily taking the longest piece that fits.

    "unaffable" with a vocabulary holding "un", "##aff", "##able":
        try "unaffable", "unaffabl", ... "un"  -> "un" is in the vocabulary: take it
        try "##affable", ... "##aff"            -> take "##aff"
        try "##able"                            -> take it; the word is covered
        result: ["un", "##aff", "##able"]

A piece that does not start the word carries the "##" prefix, so "un" at the start of a word and "##un"
inside one are different tokens, and decoding knows where the spaces were. If at some position no piece
fits, the WHOLE word becomes [UNK] (not just the part that failed): that is what BERT does, and it keeps
one word = one [UNK]. Words longer than ``max_input_chars_per_word`` become [UNK] without trying.
"""
from __future__ import annotations

import functools
from collections.abc import Container, Iterable


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece over a vocabulary.

    Args:
        vocab: the tokens (anything supporting ``in``; a dict token -> id or a set).
        unk_token: what a word that cannot be covered becomes.
        max_input_chars_per_word: longer words become ``unk_token`` (BERT uses 100; some ports 200).
    """

    def __init__(self, vocab: Container[str] | Iterable[str], unk_token: str = "[UNK]",
                 max_input_chars_per_word: int = 100):
        self.vocab = vocab if isinstance(vocab, (dict, set, frozenset)) else frozenset(vocab)
        self.unk_token = unk_token
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        # No piece is longer than the longest token, so substrings beyond that length need not be tried.
        # This changes no result, it only skips lookups that must fail (a 100-character word would
        # otherwise cost ~5000 of them).
        self._longest = max((len(t) for t in self.vocab), default=0)
        self._tokenize_word = functools.lru_cache(maxsize=1 << 16)(self._tokenize_word_uncached)

    def tokenize(self, text: str) -> list[str]:
        """Pieces of every whitespace-separated word of ``text`` (already through BasicTokenizer)."""
        if not isinstance(text, str):
            raise TypeError(f"WordpieceTokenizer.tokenize expects a str, got {type(text).__name__}")
        pieces: list[str] = []
        for word in text.split():
            pieces.extend(self._tokenize_word(word))
        return pieces

    def tokenize_word(self, word: str) -> tuple[str, ...]:
        """Pieces of a single word (no whitespace inside)."""
        return self._tokenize_word(word)

    def _tokenize_word_uncached(self, word: str) -> tuple[str, ...]:
        if len(word) > self.max_input_chars_per_word:
            return (self.unk_token,)
        pieces = []
        start = 0
        while start < len(word):
            prefix = "##" if start > 0 else ""
            # Longest first: start from the longest candidate and shrink until one is in the vocabulary.
            for end in range(min(len(word), start + self._longest), start, -1):
                piece = prefix + word[start:end]
                if piece in self.vocab:
                    break
            else:
                return (self.unk_token,)  # nothing fits at `start`: the whole word is unknown
            pieces.append(piece)
            start = end
        return tuple(pieces)
