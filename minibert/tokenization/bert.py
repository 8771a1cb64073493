"""BertTokenizer: text <-> ids, as BERT sees it.

    text --BasicTokenizer--> words --WordPiece--> pieces --vocab--> ids
    "Unaffable!"  ->  ["unaffable", "!"]  ->  ["un", "##aff", "##able", "!"]  ->  [7, 12, 9, 4]

``encode`` adds the special tokens of BERT's input format:

    [CLS] a1 a2 ... [SEP]                  token_type_ids 0 0 ... 0
    [CLS] a1 a2 ... [SEP] b1 b2 ... [SEP]  token_type_ids 0 0 ... 0 1 1 ... 1

Special tokens written in the text ("the [MASK] sat") are found first and kept whole, as Hugging Face's
tokenizers do; everything between them goes through BasicTokenizer and WordPiece.

Read ``tokenize`` and ``encode`` to learn how it works. Calling the tokenizer, ``tok(text)`` or
``tok(a, b, padding=True, truncation=True, max_length=128, return_tensors="np")``, is the familiar
Hugging Face call: ``encode`` on each text (or pair), then padding into a batch.
"""
from __future__ import annotations

import dataclasses
import json
import operator
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from minibert.tokenization.basic import BasicTokenizer
from minibert.tokenization.vocab import SPECIAL_TOKENS, check_tokens, load_vocab, write_vocab
from minibert.tokenization.wordpiece import WordpieceTokenizer

_SPECIAL_RE = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


@dataclasses.dataclass
class Encoding:
    """One encoded input: three lists of the same length T. Also readable as ``enc["input_ids"]``."""

    input_ids: list[int]
    token_type_ids: list[int]   # 0 for [CLS] A [SEP], 1 for B [SEP]
    attention_mask: list[int]   # 1 for real tokens, 0 for padding

    def __getitem__(self, key: str) -> list[int]:
        if key not in ("input_ids", "token_type_ids", "attention_mask"):
            raise KeyError(key)
        return getattr(self, key)

    def __len__(self) -> int:
        return len(self.input_ids)


def truncate_pair(a: list, b: list | None, budget: int) -> tuple[list, list | None]:
    """Shorten ``a`` and ``b`` to at most ``budget`` items in total, one token at a time from the end of
    whichever is longer (from ``b`` on a tie), as BERT's ``_truncate_seq_pair`` does.

    Cutting the longer side keeps as much of the shorter one as possible: a short question paired with
    a long passage loses passage, not question.
    """
    if b is None:
        return a[:budget], None
    la, lb = len(a), len(b)
    while la + lb > budget:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return a[:la], b[:lb]


class BertTokenizer:
    """BERT's tokenizer over a WordPiece vocabulary.

    Args:
        vocab: a ``vocab.txt`` path (or a folder holding one), or the tokens themselves as a list
            (id = position).
        do_lower_case: lowercase and strip accents before WordPiece ("uncased" models).
        max_input_chars_per_word: longer words become [UNK].
    """

    def __init__(self, vocab: str | os.PathLike | Sequence[str], do_lower_case: bool = True,
                 max_input_chars_per_word: int = 100):
        if isinstance(vocab, (str, os.PathLike)):
            self.vocab = load_vocab(vocab)
        elif isinstance(vocab, dict):
            raise TypeError("BertTokenizer takes a vocab.txt path or a list of tokens (id = position), "
                            "not a dict")
        else:
            self.vocab = check_tokens(vocab, source="BertTokenizer vocabulary")
        self.ids_to_tokens: dict[int, str] = {i: t for t, i in self.vocab.items()}
        self.do_lower_case = bool(do_lower_case)
        self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case, never_split=SPECIAL_TOKENS)
        self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab, unk_token="[UNK]",
                                                      max_input_chars_per_word=max_input_chars_per_word)

    # ---------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, do_lower_case: bool | None = None) -> "BertTokenizer":
        """Load from a folder with ``vocab.txt`` (and optionally ``tokenizer_config.json``), a folder with
        only a transformers ``tokenizer.json``, or a vocab file.

        ``do_lower_case``: None takes the value from ``tokenizer_config.json`` when present, else True.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"tokenizer not found: {path} (expected a folder with vocab.txt, "
                                    f"or a vocab.txt file)")
        folder = path if path.is_dir() else path.parent
        vocab_file = path / "vocab.txt" if path.is_dir() else path
        if path.is_dir() and not vocab_file.is_file() and (path / "tokenizer.json").is_file():
            # transformers 5 saves only tokenizer.json; its vocabulary and lower-casing are read there.
            return _from_tokenizer_json(path)
        if do_lower_case is None:
            do_lower_case = True
            config_file = folder / "tokenizer_config.json"
            if config_file.is_file():
                try:
                    config = json.loads(config_file.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise ValueError(f"{config_file}: not valid JSON ({exc})") from None
                if not isinstance(config, dict):
                    raise ValueError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
                value = config.get("do_lower_case", True)
                if not isinstance(value, bool):
                    raise ValueError(f"{config_file}: do_lower_case must be true or false, got {value!r}")
                do_lower_case = value
        return cls(vocab_file, do_lower_case=do_lower_case)

    def save_vocabulary(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/vocab.txt`` (the folder is created if needed); returns its path."""
        return write_vocab(self.convert_ids_to_tokens(range(self.vocab_size)), Path(directory) / "vocab.txt")

    def save_pretrained(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``vocab.txt`` and a ``tokenizer_config.json`` recording ``do_lower_case``."""
        vocab_file = self.save_vocabulary(directory)
        config_file = Path(directory) / "tokenizer_config.json"
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.do_lower_case}
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return vocab_file, config_file

    # ---------------------------------------------------------------- the vocabulary
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    pad_token_id = property(lambda self: self.vocab["[PAD]"])
    unk_token_id = property(lambda self: self.vocab["[UNK]"])
    cls_token_id = property(lambda self: self.vocab["[CLS]"])
    sep_token_id = property(lambda self: self.vocab["[SEP]"])
    mask_token_id = property(lambda self: self.vocab["[MASK]"])

    @property
    def all_special_ids(self) -> list[int]:
        return [self.vocab[t] for t in SPECIAL_TOKENS]

    # ---------------------------------------------------------------- text -> tokens -> ids
    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text``; special tokens written in it are kept whole."""
        if not isinstance(text, str):
            raise TypeError(f"BertTokenizer.tokenize expects a str, got {type(text).__name__}")
        tokens: list[str] = []
        # re.split with a capturing group alternates: text, special, text, special, ..., text.
        for i, chunk in enumerate(_SPECIAL_RE.split(text)):
            if i % 2:
                tokens.append(chunk)
            elif chunk:
                for word in self.basic_tokenizer.tokenize(chunk):
                    tokens.extend(self.wordpiece_tokenizer.tokenize_word(word))
        return tokens

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Id of a token, or ids of a list of tokens; tokens not in the vocabulary map to [UNK]."""
        unk = self.unk_token_id
        if isinstance(tokens, str):
            return self.vocab.get(tokens, unk)
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        """Token of an id, or tokens of a list of ids. Raises ValueError for an id outside [0, V)."""
        try:
            single = operator.index(ids)  # an int, a NumPy integer, a 0-d integer array
        except TypeError:
            if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
                raise TypeError(f"convert_ids_to_tokens expects an integer id or a sequence of them, "
                                f"got {type(ids).__name__}") from None
            return [self._id_to_token(i) for i in ids]
        return self._id_to_token(single)

    def _id_to_token(self, i) -> str:
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"token ids must be integers, got {i!r} ({type(i).__name__})") from None
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {i} is out of range for a vocabulary of {self.vocab_size} tokens "
                             f"(valid ids: 0..{self.vocab_size - 1})")
        return self.ids_to_tokens[i]

    def encode(self, text: str, text_pair: str | None = None, max_length: int | None = None,
               pad_to_max_length: bool = False) -> Encoding:
        """``[CLS] text [SEP]`` or ``[CLS] text [SEP] text_pair [SEP]`` as ids, segment ids and mask.

        With ``max_length`` the tokens are truncated to fit (see ``truncate_pair``); with
        ``pad_to_max_length`` the result is then padded with [PAD] (mask 0, segment 0) to exactly
        ``max_length``.
        """
        a = self.convert_tokens_to_ids(self.tokenize(text))
        b = None if text_pair is None else self.convert_tokens_to_ids(self.tokenize(text_pair))
        n_special = 2 if b is None else 3
        if max_length is not None:
            if isinstance(max_length, bool) or not isinstance(max_length, int):
                raise TypeError(f"max_length must be an int, got {max_length!r}")
            if max_length < n_special:
                raise ValueError(f"max_length={max_length} cannot hold the {n_special} special tokens of "
                                 f"{'a pair' if b is not None else 'a single text'} "
                                 f"({'[CLS] A [SEP] B [SEP]' if b is not None else '[CLS] A [SEP]'})")
            a, b = truncate_pair(a, b, max_length - n_special)
        elif pad_to_max_length:
            raise ValueError("pad_to_max_length=True needs max_length")

        input_ids = [self.cls_token_id, *a, self.sep_token_id]
        token_type_ids = [0] * len(input_ids)
        if b is not None:
            input_ids += [*b, self.sep_token_id]
            token_type_ids += [1] * (len(b) + 1)
        attention_mask = [1] * len(input_ids)
        if pad_to_max_length:
            n_pad = max_length - len(input_ids)
            input_ids += [self.pad_token_id] * n_pad
            token_type_ids += [0] * n_pad
            attention_mask += [0] * n_pad
        return Encoding(input_ids, token_type_ids, attention_mask)

    # ---------------------------------------------------------------- the familiar call
    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, *,
                 padding: bool | str = False, truncation: bool | str = False,
                 max_length: int | None = None, return_tensors: str | None = None) -> dict:
        """Encode one text, a pair, or a batch of them, as Hugging Face tokenizers are called.

        Args:
            text: a string, or a list of strings (a batch).
            text_pair: the second segments: a string, or a list as long as ``text``.
            padding: False (none), True or "longest" (to the batch's longest encoding), or
                "max_length" (to ``max_length``). [PAD] on the right, with mask 0 and segment 0.
            truncation: False, or True / "longest_first": shorten the longer segment first (see
                ``truncate_pair``). Needs ``max_length``.
            max_length: the length to truncate to and/or to pad to.
            return_tensors: None (Python lists) or "np" (int64 arrays (B, T); one text is a batch
                of one).

        Returns a dict with ``input_ids``, ``token_type_ids`` and ``attention_mask``: lists for one
        text, lists of lists for a batch, or (B, T) arrays.

        Two differences from Hugging Face, both to avoid a silent surprise: an encoding longer than
        ``max_length`` without ``truncation`` is an error (Hugging Face truncates after a warning),
        and so is ``truncation`` without ``max_length`` (there is no model maximum to fall back on).
        """
        batched = not isinstance(text, str)
        texts = self._texts(text, "text")
        if text_pair is None:
            pairs: list[str | None] = [None] * len(texts)
        else:
            if isinstance(text_pair, str) == batched:
                raise TypeError("text and text_pair must both be strings or both lists of strings")
            pairs = self._texts(text_pair, "text_pair")
            if len(pairs) != len(texts):
                raise ValueError(f"text has {len(texts)} entries but text_pair has {len(pairs)}: "
                                 "pass one second segment per text")
        padding = "longest" if padding is True else padding
        if padding not in (False, "do_not_pad", "longest", "max_length"):
            raise ValueError(f"padding={padding!r}: use False, True, 'longest' or 'max_length'")
        if truncation not in (False, True, "longest_first", "do_not_truncate"):
            raise ValueError(f"truncation={truncation!r}: use False, True or 'longest_first' "
                             "(Hugging Face's other strategies are not implemented)")
        truncate = truncation in (True, "longest_first")
        if max_length is None and (truncate or padding == "max_length"):
            what = "truncation" if truncate else "padding='max_length'"
            raise ValueError(f"{what} needs max_length")
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors={return_tensors!r}: minibert returns NumPy arrays "
                             "(return_tensors='np') or Python lists (None)")

        encodings = [self.encode(a, b, max_length=max_length if truncate else None)
                     for a, b in zip(texts, pairs)]
        longest = max(len(e) for e in encodings)
        if max_length is not None and longest > max_length:
            raise ValueError(f"an encoding has {longest} tokens, more than max_length="
                             f"{max_length}: pass truncation=True to shorten it")
        length = {"max_length": max_length, "longest": longest}.get(padding)
        if length is not None:
            encodings = [self._pad(e, length) for e in encodings]
        elif return_tensors == "np" and any(len(e) != longest for e in encodings):
            raise ValueError("the encodings have different lengths and do not fit one array: "
                             "pass padding=True")

        keys = ("input_ids", "token_type_ids", "attention_mask")
        out = {key: [e[key] for e in encodings] for key in keys}
        if return_tensors == "np":
            return {key: np.array(rows, dtype=np.int64).reshape(len(rows), -1)
                    for key, rows in out.items()}
        return out if batched else {key: rows[0] for key, rows in out.items()}

    @staticmethod
    def _texts(value, name: str) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if (not isinstance(texts, Sequence) or not texts
                or not all(isinstance(t, str) for t in texts)):
            raise TypeError(f"{name} must be a string or a non-empty list of strings, "
                            f"got {type(value).__name__}")
        return list(texts)

    def _pad(self, encoding: Encoding, length: int) -> Encoding:
        n_pad = length - len(encoding)
        return Encoding(encoding.input_ids + [self.pad_token_id] * n_pad,
                        encoding.token_type_ids + [0] * n_pad,
                        encoding.attention_mask + [0] * n_pad)

    # ---------------------------------------------------------------- ids -> text
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``: pieces joined with spaces, "##" pieces glued to the piece before.

        Not an exact inverse of ``encode``: case, accents and the spacing around punctuation are gone
        ("Wait, what?" -> "wait , what ?"). ``skip_special_tokens`` drops all five special tokens,
        [UNK] and [MASK] included, as Hugging Face does; pass False to see them.
        """
        tokens = self.convert_ids_to_tokens(ids)
        if isinstance(tokens, str):
            tokens = [tokens]
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in SPECIAL_TOKENS]
        return " ".join(tokens).replace(" ##", "").strip()

    def __repr__(self) -> str:
        return f"BertTokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case})"


def _from_tokenizer_json(folder: Path) -> "BertTokenizer":
    """A ``BertTokenizer`` from a folder with only a transformers ``tokenizer.json``.

    minibert and transformers 4 write ``vocab.txt``; transformers
    5 writes only ``tokenizer.json`` (the ``tokenizers`` library's serialisation) and
    ``tokenizer_config.json``. From ``tokenizer.json`` we take the WordPiece vocabulary (token -> id) and
    the normaliser's ``lowercase``, after checking that the rest is the BERT pipeline minibert implements
    (BertNormalizer, BertPreTokenizer, WordPiece with "##" and [UNK]).
    """
    file = folder / "tokenizer.json"
    try:
        spec = json.loads(file.read_text(encoding="utf-8"))
        model, normalizer = spec["model"], spec.get("normalizer") or {}
        vocab = model["vocab"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ValueError(f"{file} is not a tokenizers serialisation with a model vocabulary") from None
    problems = []
    if model.get("type") != "WordPiece" or not isinstance(vocab, dict):
        problems.append(f"model type {model.get('type')!r}, expected 'WordPiece' with a vocab object")
    if model.get("continuing_subword_prefix", "##") != "##" or model.get("unk_token", "[UNK]") != "[UNK]":
        problems.append("WordPiece must use '##' continuations and '[UNK]'")
    if normalizer.get("type") != "BertNormalizer":
        problems.append(f"normalizer {normalizer.get('type')!r}, expected 'BertNormalizer'")
    lowercase = bool(normalizer.get("lowercase", True))
    if normalizer.get("strip_accents") not in (None, lowercase):
        problems.append(f"strip_accents={normalizer['strip_accents']} with lowercase={lowercase} "
                        "(minibert strips accents exactly when it lowercases)")
    if (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
        problems.append(f"pre_tokenizer {(spec.get('pre_tokenizer') or {}).get('type')!r}, expected 'BertPreTokenizer'")
    if problems:
        raise ValueError(f"{file} is not a BERT WordPiece tokenizer minibert can reproduce: " + "; ".join(problems))
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise ValueError(f"{file}: the vocabulary ids are not 0..{len(ids) - 1} without gaps")
    tokens = sorted(vocab, key=vocab.get)
    return BertTokenizer(tokens, do_lower_case=lowercase,
                         max_input_chars_per_word=int(model.get("max_input_chars_per_word", 100)))
