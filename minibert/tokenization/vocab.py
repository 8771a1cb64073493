"""The vocabulary file: BERT's ``vocab.txt``, one token per line, a token's id = its line number (from 0)."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from minibert import outputs

# The special tokens every minibert vocabulary must contain. A vocabulary we train puts them first, so
# [PAD] is id 0 (as in Google's vocabularies, where the others sit at 100-103).
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def decode_utf8(data: bytes, source: str | os.PathLike, offset: int = 0) -> str:
    """``data`` decoded as UTF-8; a ValueError naming ``source`` and the byte offset of the first bad byte.

    ``offset`` is where ``data`` starts inside ``source``, so callers that read line by line still report
    the position in the whole file.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.end]
        raise ValueError(f"{source}: not valid UTF-8 at byte offset {offset + exc.start} "
                         f"(bytes {bad!r}: {exc.reason}); convert the file to UTF-8") from None


def check_tokens(tokens: Iterable[str], source: str = "vocabulary") -> dict[str, int]:
    """The token -> id dict of a token list, after checking it is a usable BERT vocabulary.

    Raises ValueError (naming ``source``) for an empty list, an empty token, a token containing a newline,
    a duplicated token, or missing special tokens; TypeError for a token that is not a str.
    """
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise TypeError(f"{source}: token {i} is a {type(token).__name__}, expected str")
        if token == "" or "\n" in token or "\r" in token:
            raise ValueError(f"{source}: token {i} (line {i + 1}) is {token!r}; a vocab.txt holds one "
                             f"non-empty token per line")
        if token in vocab:
            raise ValueError(f"{source}: token {token!r} appears twice (lines {vocab[token] + 1} and {i + 1}); "
                             f"ids are line numbers, so each token must appear once")
        vocab[token] = i
    if not vocab:
        raise ValueError(f"{source}: the vocabulary is empty")
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"{source}: the vocabulary lacks the special token(s) {' '.join(missing)}; "
                         f"it must contain all of {' '.join(SPECIAL_TOKENS)}")
    return vocab


def load_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Read a ``vocab.txt``: token -> id, where the id is the (0-based) line number."""
    path = Path(path)
    if path.is_dir():
        path = path / "vocab.txt"
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {path}")
    text = decode_utf8(path.read_bytes(), path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another token
    # Tolerate Windows line endings; a token never contains "\r" (it is whitespace to the tokenizer).
    return check_tokens((line.removesuffix("\r") for line in lines), source=str(path))


def write_vocab(tokens: Iterable[str], path: str | os.PathLike) -> Path:
    """Write ``tokens`` as a ``vocab.txt`` (UTF-8, one per line, in id order); returns the path written.

    The tokens are checked first (see ``check_tokens``), so a file we write always loads again.
    """
    tokens = list(tokens)
    check_tokens(tokens, source="write_vocab")
    return outputs.write_file(path, "".join(t + "\n" for t in tokens))   # atomically, "\n" endings


def vocab_sha256(tokens: Iterable[str]) -> str:
    """sha256 of a vocabulary as ``write_vocab`` writes it (UTF-8, each token followed by "\\n"):
    the fingerprint a saved model records, so a loader can tell that a ``vocab.txt`` is the one it
    was saved with (same tokens, same order) and not merely one of the same size."""
    return hashlib.sha256("".join(t + "\n" for t in tokens).encode("utf-8")).hexdigest()


def check_model_vocab(path: str | os.PathLike, vocab_size: int,
                      recorded_sha256: str | None = None) -> None:
    """ValueError unless the ``vocab.txt`` at ``path`` has ``vocab_size`` tokens (the rows of the
    model's embedding matrix) and, when a fingerprint was recorded at saving, the same tokens in the
    same order."""
    where = Path(path) / "vocab.txt" if Path(path).is_dir() else Path(path)
    lines = decode_utf8(where.read_bytes(), where).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    tokens = [line.removesuffix("\r") for line in lines]     # as load_vocab reads them
    if len(tokens) != vocab_size:
        raise ValueError(f"{where} has {len(tokens)} tokens but the model's config.json says "
                         f"vocab_size {vocab_size}: this vocabulary does not belong to the model; "
                         "put back the vocab.txt it was saved with")
    if recorded_sha256 is not None and vocab_sha256(tokens) != recorded_sha256:
        raise ValueError(f"{where} is not the vocabulary the model was saved with (same size, "
                         "different tokens or order; its sha256 differs from the one recorded at "
                         "saving); put back the vocab.txt it was saved with")
