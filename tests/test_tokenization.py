"""Tokenization: BasicTokenizer rules, WordPiece, BertTokenizer, vocab.txt I/O, the vocabulary trainer.

Expected tokenizations are written by hand from the rules of google-research/bert ``tokenization.py``
(as Hugging Face runs them), one rule per test, so a wrong rule fails a named test.
"""
from __future__ import annotations

import gzip
import random
import unicodedata
from collections import Counter

import numpy as np
import pytest

from minibert import cli
from minibert.tokenization import (SPECIAL_TOKENS, BasicTokenizer, BertTokenizer, WordpieceTokenizer,
                                   load_vocab, write_vocab)
from minibert.tokenization.basic import clean_text, is_control, is_punctuation, is_whitespace
from minibert.tokenization.trainer import count_words, learn_wordpiece, train_wordpiece

lower = BasicTokenizer(do_lower_case=True)
cased = BasicTokenizer(do_lower_case=False)


# ------------------------------------------------------------------------------------- BasicTokenizer
def test_accents_stripped_when_lowercasing_kept_when_cased():
    text = "Café naïve Ångström"
    assert lower.tokenize(text) == ["cafe", "naive", "angstrom"]
    assert cased.tokenize(text) == ["Café", "naïve", "Ångström"]
    # HF's option: keep case but strip accents.
    assert BasicTokenizer(do_lower_case=False, strip_accents=True).tokenize(text) == ["Cafe", "naive", "Angstrom"]


def test_composed_and_decomposed_accents_differ_unless_stripped():
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # é as one code point / as e + combining acute
    assert cased.tokenize(decomposed) == [decomposed]  # no NFC step, as in the original
    assert lower.tokenize(decomposed) == lower.tokenize(composed) == ["cafe"]


def test_a_word_made_only_of_combining_marks_vanishes_when_stripping_accents():
    assert lower.tokenize("a \u0301\u0308 b") == ["a", "b"]
    assert cased.tokenize("a \u0301 b") == ["a", "\u0301", "b"]


def test_punctuation_runs_split_into_single_characters():
    assert lower.tokenize("Wait...what?!") == ["wait", ".", ".", ".", "what", "?", "!"]
    assert lower.tokenize("don't") == ["don", "'", "t"]
    assert lower.tokenize("e-mail: a@b.com") == ["e", "-", "mail", ":", "a", "@", "b", ".", "com"]


def test_numbers_split_at_their_punctuation():
    assert lower.tokenize("3.14 and 1,000 or -7") == ["3", ".", "14", "and", "1", ",", "000", "or", "-", "7"]


def test_ascii_symbols_count_as_punctuation_but_other_symbols_do_not():
    # "$ ^ ` + | ~ <" are Unicode symbols (S*), punctuation for BERT because they are ASCII.
    assert lower.tokenize("$5^2 a+b `x` c|d~<") == ["$", "5", "^", "2", "a", "+", "b", "`", "x", "`", "c", "|",
                                                    "d", "~", "<"]
    # Non-ASCII symbols (€ Sc, ± Sm, © So) stay inside words; non-ASCII punctuation (« » — …) splits.
    assert lower.tokenize("5€ a±b ©x") == ["5€", "a±b", "©x"]
    assert lower.tokenize("«oui»—non…") == ["«", "oui", "»", "—", "non", "…"]


def test_cjk_ideographs_become_single_tokens_other_scripts_do_not():
    assert lower.tokenize("我爱北京") == ["我", "爱", "北", "京"]
    assert lower.tokenize("BERT是模型!") == ["bert", "是", "模", "型", "!"]
    # Kana and Hangul are not in the CJK ideograph blocks: they stay whole words.
    assert cased.tokenize("ひらがな 한국어") == ["ひらがな", "한국어"]
    # A known quirk: NFD splits "が" into "か" + a combining voiced mark (Mn), which accent stripping drops;
    # Hangul syllables decompose into jamo, which are letters (Lo), so they survive (decomposed).
    assert lower.tokenize("ひらがな 한국어") == ["ひらかな", unicodedata.normalize("NFD", "한국어")]
    # Extension B (outside the BMP) is in the list.
    assert lower.tokenize("a\U00020000b") == ["a", "\U00020000", "b"]


def test_emoji_are_neither_punctuation_nor_split():
    assert lower.tokenize("hi😀 there😀!") == ["hi😀", "there😀", "!"]
    # U+FE0F (variation selector) is a combining mark (Mn): stripped with the accents when lowercasing.
    assert lower.tokenize("I ❤\ufe0f NY") == ["i", "❤", "ny"]
    assert cased.tokenize("I ❤\ufe0f NY") == ["I", "❤\ufe0f", "NY"]
    # The zero-width joiner in a composed emoji is a format character (Cf): removed.
    assert lower.tokenize("👩\u200d💻") == ["👩💻"]


def test_control_characters_removed_whitespace_characters_separate():
    assert lower.tokenize("a\x00b c\ufffdd e\u200bf") == ["ab", "cd", "ef"]  # NUL, U+FFFD, zero-width space
    assert lower.tokenize("a\tb\nc\r\nd\u00a0e\u3000f") == ["a", "b", "c", "d", "e", "f"]
    # A quirk of the rules: vertical tab and form feed are control characters (Cc), not whitespace,
    # so they join words instead of separating them.
    assert lower.tokenize("a\x0bb\x0cc") == ["abc"]
    assert lower.tokenize("a\ue000b") == ["ab"]  # private use (Co): removed (HF's rule)
    assert lower.tokenize("\x00\x01 \t ") == []


def test_never_split_tokens_kept_whole():
    basic = BasicTokenizer(never_split=["[MASK]"])
    assert basic.tokenize("The [MASK] sat.") == ["the", "[MASK]", "sat", "."]
    assert lower.tokenize("The [MASK] sat.") == ["the", "[", "mask", "]", "sat", "."]


def test_basic_tokenizer_rejects_non_text():
    with pytest.raises(TypeError, match="expects a str"):
        lower.tokenize(b"bytes")


def test_letters_and_digits_are_never_punctuation():
    # split_on_punctuation skips words with str.isalnum(); that shortcut is exact only if this holds.
    offenders = [cp for cp in range(0x110000) if chr(cp).isalnum() and is_punctuation(chr(cp))]
    assert offenders == []


def test_cleaning_table_agrees_with_the_character_rules():
    text = "".join(chr(cp) for cp in range(0x10000))  # the whole Basic Multilingual Plane
    expected = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or is_control(ch):
            continue
        if is_whitespace(ch):
            expected.append(" ")
        elif 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF:
            expected.append(f" {ch} ")
        else:
            expected.append(ch)
    assert clean_text(text) == "".join(expected)


# ------------------------------------------------------------------------------------- WordPiece
def test_wordpiece_original_example():
    vocab = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing"]
    wp = WordpieceTokenizer(vocab)
    assert wp.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert wp.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]  # the whole word, not a piece
    assert wp.tokenize("") == []


def test_wordpiece_is_greedy_without_backtracking():
    wp = WordpieceTokenizer(["a", "ab", "##bc", "##c", "##d"])
    assert wp.tokenize("abd") == ["ab", "##d"]
    # "abc" could be "a" + "##bc" or "ab" + "##c": the longest first piece wins.
    assert wp.tokenize("abc") == ["ab", "##c"]
    # Without "##c", greedy fails after "ab" and gives [UNK], although "a" + "##bc" would cover it.
    assert WordpieceTokenizer(["a", "ab", "##bc"]).tokenize("abc") == ["[UNK]"]
    # A continuation piece never starts a word, and a word-initial piece never continues one.
    assert WordpieceTokenizer(["##a", "b"]).tokenize("a") == ["[UNK]"]
    assert WordpieceTokenizer(["b", "a"]).tokenize("ba") == ["[UNK]"]


def test_wordpiece_long_words_become_unk():
    wp = WordpieceTokenizer(["a", "##a"])
    assert wp.tokenize("a" * 100) == ["a"] + ["##a"] * 99
    assert wp.tokenize("a" * 101) == ["[UNK]"]
    assert WordpieceTokenizer(["a", "##a"], max_input_chars_per_word=3).tokenize("aaaa") == ["[UNK]"]


def _reference_wordpiece(word, vocab, unk="[UNK]", max_chars=100):
    """The original algorithm, transcribed literally (no length bound, no cache)."""
    if len(word) > max_chars:
        return [unk]
    start, pieces = 0, []
    while start < len(word):
        end, found = len(word), None
        while start < end:
            sub = ("##" if start > 0 else "") + word[start:end]
            if sub in vocab:
                found = sub
                break
            end -= 1
        if found is None:
            return [unk]
        pieces.append(found)
        start = end
    return pieces


def test_wordpiece_matches_the_literal_algorithm_on_random_words():
    rng = random.Random(0)
    alphabet = "abcde"
    vocab = set()
    for _ in range(60):
        piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
        vocab.add(piece if rng.random() < 0.5 else "##" + piece)
    wp = WordpieceTokenizer(vocab)
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(500)]
    n_unk = 0
    for word in words:
        expected = _reference_wordpiece(word, vocab)
        assert list(wp.tokenize_word(word)) == expected, word
        n_unk += expected == ["[UNK]"]
    assert 0 < n_unk < len(words)  # both outcomes were exercised


# ------------------------------------------------------------------------------------- BertTokenizer
# Specials deliberately NOT at ids 0-4, as in Google's vocabularies.
VOCAB = ["[PAD]", "the", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "!", "cat", "sat",
         "on", "mat", ".", "a", "##b", "b", "[", "]", "mask", "ca", "##t", "##s", ","]


@pytest.fixture
def tok():
    return BertTokenizer(VOCAB)


def test_tokenize_full_pipeline(tok):
    assert tok.tokenize("UnAffable!") == ["un", "##aff", "##able", "!"]
    # "cats": the longest prefix in the vocabulary is "cat" (not "ca"), then "##s".
    assert tok.tokenize("The cats sat, on the mat.") == ["the", "cat", "##s", "sat", ",", "on", "the", "mat", "."]
    assert tok.tokenize("the dog") == ["the", "[UNK]"]


def test_special_tokens_kept_whole_even_when_glued(tok):
    assert tok.tokenize("the [MASK] sat") == ["the", "[MASK]", "sat"]
    assert tok.tokenize("the[MASK]sat[SEP]") == ["the", "[MASK]", "sat", "[SEP]"]
    # Only the exact spelling is special; lowercase "[mask]" is ordinary text.
    assert tok.tokenize("[mask]") == ["[", "mask", "]"]


def test_special_ids_and_vocab(tok):
    ids = (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id)
    assert ids == (0, 2, 3, 4, 5)
    assert tok.vocab_size == len(tok) == len(VOCAB)
    assert tok.vocab["cat"] == 10 and tok.ids_to_tokens[10] == "cat"


def test_convert_tokens_and_ids(tok):
    assert tok.convert_tokens_to_ids(["cat", "dog"]) == [10, 2]  # unknown -> [UNK]
    assert tok.convert_tokens_to_ids("sat") == 11
    assert tok.convert_ids_to_tokens([10, 11]) == ["cat", "sat"]
    assert tok.convert_ids_to_tokens(13) == "mat"
    with pytest.raises(ValueError, match="out of range"):
        tok.convert_ids_to_tokens([1, len(VOCAB)])
    with pytest.raises(ValueError, match="out of range"):
        tok.convert_ids_to_tokens(-1)
    with pytest.raises(TypeError):
        tok.convert_ids_to_tokens([1.5])
    with pytest.raises(TypeError, match="expects a str"):
        tok.tokenize(None)


def test_encode_single_and_pair(tok):
    e = tok.encode("the cat")
    assert e.input_ids == [3, 1, 10, 4]
    assert e.token_type_ids == [0, 0, 0, 0] and e.attention_mask == [1, 1, 1, 1]
    e = tok.encode("the cat", "sat")
    assert e["input_ids"] == [3, 1, 10, 4, 11, 4]
    assert e["token_type_ids"] == [0, 0, 0, 0, 1, 1]


def test_encode_truncates_the_longer_side_first(tok):
    a = "the cat sat on the mat"   # 6 tokens
    b = "a cat"                    # 2 tokens
    e = tok.encode(a, b, max_length=9)   # room for 6 tokens: a loses 2 from its end, b keeps both
    assert e.input_ids == [3, 1, 10, 11, 12, 4, 15, 10, 4]
    assert e.token_type_ids == [0] * 6 + [1] * 3
    e = tok.encode("the cat sat", "a cat sat", max_length=7)  # 3 vs 3, room for 4: ties cut b first
    assert tok.convert_ids_to_tokens(e.input_ids) == ["[CLS]", "the", "cat", "[SEP]", "a", "cat", "[SEP]"]
    e = tok.encode(a, max_length=4)
    assert e.input_ids == [3, 1, 10, 4]


def test_encode_pads_and_rejects_impossible_lengths(tok):
    e = tok.encode("cat", max_length=6, pad_to_max_length=True)
    assert e.input_ids == [3, 10, 4, 0, 0, 0]
    assert e.attention_mask == [1, 1, 1, 0, 0, 0] and e.token_type_ids == [0] * 6
    assert tok.encode("a", "b", max_length=3).input_ids == [3, 4, 4]  # both sides emptied
    with pytest.raises(ValueError, match="cannot hold the 3 special tokens"):
        tok.encode("a", "b", max_length=2)
    with pytest.raises(ValueError, match="cannot hold the 2 special tokens"):
        tok.encode("a", max_length=1)
    with pytest.raises(ValueError, match="needs max_length"):
        tok.encode("a", pad_to_max_length=True)


def test_calling_the_tokenizer_encodes_like_encode(tok):
    assert tok("the cat") == {"input_ids": [3, 1, 10, 4], "token_type_ids": [0] * 4,
                              "attention_mask": [1] * 4}
    assert tok("the cat", "sat")["token_type_ids"] == tok.encode("the cat", "sat").token_type_ids
    batch = tok(["the cat", "cat"], padding=True)
    assert batch["input_ids"] == [[3, 1, 10, 4], [3, 10, 4, 0]]
    assert batch["attention_mask"] == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert tok(["cat", "cat"])["input_ids"] == [[3, 10, 4], [3, 10, 4]]       # no padding asked


def test_calling_the_tokenizer_pads_truncates_and_returns_arrays(tok):
    a, b = ["the cat sat on the mat", "cat"], ["a cat", "sat"]
    arrays = tok(a, b, padding="max_length", truncation=True, max_length=9, return_tensors="np")
    assert set(arrays) == {"input_ids", "token_type_ids", "attention_mask"}
    assert all(v.shape == (2, 9) and v.dtype == np.int64 for v in arrays.values())
    assert arrays["input_ids"][0].tolist() == tok.encode(a[0], b[0], max_length=9).input_ids
    assert arrays["input_ids"][1].tolist() == [3, 10, 4, 11, 4, 0, 0, 0, 0]
    assert arrays["token_type_ids"][1].tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert arrays["attention_mask"].sum(1).tolist() == [9, 5]
    one = tok("the cat", return_tensors="np")["input_ids"]
    assert one.shape == (1, 4) and one.tolist() == [[3, 1, 10, 4]]


@pytest.mark.parametrize("call, error, message", [
    (lambda t: t("the cat sat", max_length=3), ValueError, "pass truncation=True"),
    (lambda t: t("cat", truncation=True), ValueError, "truncation needs max_length"),
    (lambda t: t("cat", padding="max_length"), ValueError, "needs max_length"),
    (lambda t: t(["cat", "the cat"], return_tensors="np"), ValueError, "pass padding=True"),
    (lambda t: t("cat", return_tensors="pt"), ValueError, "NumPy arrays"),
    (lambda t: t("cat", padding="everything"), ValueError, "padding='everything'"),
    (lambda t: t("cat", truncation="only_second", max_length=5), ValueError, "longest_first"),
    (lambda t: t(["a", "b"], ["c"]), ValueError, "one second segment per text"),
    (lambda t: t("a", ["b"]), TypeError, "both be strings or both lists"),
    (lambda t: t([]), TypeError, "non-empty list of strings"),
    (lambda t: t(["a", 3]), TypeError, "non-empty list of strings"),
])
def test_calling_the_tokenizer_rejects_what_it_cannot_do(tok, call, error, message):
    with pytest.raises(error, match=message):
        call(tok)


def test_decode_joins_continuation_pieces(tok):
    ids = tok.encode("UnAffable cats!", "the [MASK]", max_length=12, pad_to_max_length=True).input_ids
    assert tok.decode(ids) == "unaffable cats ! the"
    assert tok.decode(ids, skip_special_tokens=False) == \
        "[CLS] unaffable cats ! [SEP] the [MASK] [SEP] [PAD]"


def test_encode_decode_round_trip_equals_the_basic_tokens(tok):
    text = "The CAT sat on a mat, unaffable!"
    assert tok.decode(tok.encode(text).input_ids) == " ".join(BasicTokenizer().tokenize(text))


def test_save_and_load_round_trip(tmp_path, tok):
    path = tok.save_vocabulary(tmp_path / "tok")
    assert path.read_text(encoding="utf-8").splitlines() == VOCAB
    assert load_vocab(path) == {t: i for i, t in enumerate(VOCAB)}
    cased_tok = BertTokenizer(VOCAB, do_lower_case=False)
    cased_tok.save_pretrained(tmp_path / "cased")
    again = BertTokenizer.from_pretrained(tmp_path / "cased")
    assert again.do_lower_case is False and again.tokenize("The cat") == ["[UNK]", "cat"]
    assert BertTokenizer.from_pretrained(tmp_path / "cased", do_lower_case=True).tokenize("The") == ["the"]
    assert BertTokenizer.from_pretrained(path).do_lower_case is True  # a bare vocab file: default


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BertTokenizer(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError):
        BertTokenizer.from_pretrained(tmp_path / "missing_dir")
    cases = {
        "empty.txt": (b"", "empty"),
        "dupe.txt": ("\n".join([*SPECIAL_TOKENS, "cat", "dog", "cat"]).encode(),
                     r"'cat' appears twice \(lines 6 and 8\)"),
        "nospecial.txt": ("\n".join(["[PAD]", "[UNK]", "[CLS]", "cat"]).encode(),
                          r"lacks the special token\(s\) \[SEP\] \[MASK\]"),
        "blank.txt": ("\n".join([*SPECIAL_TOKENS, "", "cat"]).encode(), "line 6"),
        "latin1.txt": ("\n".join(SPECIAL_TOKENS).encode() + "\ncaf\xe9\n".encode("latin-1"), "byte offset 34"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=message):
            load_vocab(tmp_path / name)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS), encoding="utf-8")
    (tmp_path / "bad" / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        BertTokenizer.from_pretrained(tmp_path / "bad")


def test_vocab_with_windows_line_endings_loads(tmp_path):
    (tmp_path / "v.txt").write_bytes("\r\n".join([*SPECIAL_TOKENS, "cat"]).encode() + b"\r\n")
    assert load_vocab(tmp_path / "v.txt")["cat"] == 5


# ------------------------------------------------------------------------------------- the trainer
def test_learned_merges_by_hand():
    # abab x3 = a ##b ##a ##b; aaaa x2 = a ##a ##a ##a; ab x5 = a ##b. Pair counts, merge by merge:
    #   (a,##b) 3+5=8 -> ab; (##a,##a) 2+2=4 -> ##aa (the left-to-right merge leaves a ##aa ##a);
    #   now (##a,##b)=3 and (ab,##a)=3 tie: "##a" < "ab", so ##ab; then (ab,##ab)=3 -> abab;
    #   (##aa,##a)=2 and (a,##aa)=2 tie: "##aa" < "a", so ##aaa; then (a,##aaa) -> aaaa.
    result = learn_wordpiece({"abab": 3, "aaaa": 2, "ab": 5}, vocab_size=100, min_frequency=1)
    assert result.tokens == [*SPECIAL_TOKENS, "a", "b", "##a", "##b",
                             "ab", "##aa", "##ab", "abab", "##aaa", "aaaa"]
    assert [m[3] for m in result.merges] == [8, 4, 3, 3, 2, 2]
    # min_frequency=3 stops before the first merge seen only twice.
    assert learn_wordpiece({"abab": 3, "aaaa": 2, "ab": 5}, 100, min_frequency=3).tokens[-1] == "abab"


def _naive_bpe(word_counts, vocab_size, min_frequency):
    """Reference trainer: recount every pair before each merge (slow, obviously right)."""
    chars = sorted({c for w in word_counts for c in w})
    tokens = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars]
    words = {w: [w[0]] + ["##" + c for c in w[1:]] for w in word_counts}
    while len(tokens) < vocab_size:
        pairs = Counter()
        for w, symbols in words.items():
            for p in zip(symbols, symbols[1:]):
                pairs[p] += word_counts[w]
        if not pairs:
            break
        (left, right), count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < min_frequency:
            break
        merged = left + right[2:]
        if merged not in tokens:
            tokens.append(merged)
        for w, symbols in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[w] = out
    return tokens


def test_incremental_trainer_equals_naive_recount():
    rng = random.Random(1)
    # A small alphabet makes repeats ("aaaa"), overlapping pairs and ties frequent.
    counts = Counter("".join(rng.choice("aabbc") for _ in range(rng.randint(1, 9))) for _ in range(400))
    for min_frequency in (1, 3):
        expected = _naive_bpe(counts, 150, min_frequency)
        assert learn_wordpiece(counts, 150, min_frequency).tokens == expected


CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away!
A learner reads the lesson, then writes the code again, and the tests pass.
Tokenizers split words into pieces: playing, played, player and plays share "play".

Unaffable foxes were seen near the café in Ångström, said naïve reporters (3.14 km away).
""".splitlines()


def test_trained_vocab_covers_its_corpus_and_has_the_requested_size():
    tokens = train_wordpiece(CORPUS, vocab_size=160, min_frequency=1)
    assert len(tokens) == 160 and len(set(tokens)) == 160
    assert tokens[:5] == list(SPECIAL_TOKENS)
    tok = BertTokenizer(tokens)
    for line in CORPUS:
        assert "[UNK]" not in tok.tokenize(line)
    # With the whole vocabulary, frequent words are single tokens.
    assert tok.tokenize("the fox") == ["the", "fox"]


def test_trainer_stops_early_when_pairs_run_out():
    tokens = train_wordpiece(CORPUS, vocab_size=5000, min_frequency=2)
    assert 5 < len(tokens) < 5000
    assert len(train_wordpiece(CORPUS, vocab_size=5000, min_frequency=1)) > len(tokens)
    with pytest.raises(ValueError, match="too small"):
        train_wordpiece(CORPUS, vocab_size=20)


def test_trainer_is_deterministic_and_order_independent():
    shuffled = CORPUS[:]
    random.Random(3).shuffle(shuffled)
    a = train_wordpiece(CORPUS, vocab_size=150, min_frequency=1)
    assert len(a) == 150
    assert train_wordpiece(CORPUS, vocab_size=150, min_frequency=1) == a
    assert train_wordpiece(shuffled, vocab_size=150, min_frequency=1) == a
    # Smaller vocabularies are prefixes of larger ones.
    assert train_wordpiece(CORPUS, vocab_size=120, min_frequency=1) == a[:120]


def test_trainer_casing_follows_do_lower_case():
    assert "The" not in count_words(CORPUS)
    cased_counts = count_words(CORPUS, do_lower_case=False)
    assert cased_counts["The"] == 2 and cased_counts["café"] == 1


def test_trainer_reads_files_and_gzip(tmp_path):
    plain, packed = tmp_path / "a.txt", tmp_path / "b.txt.gz"
    plain.write_text("\n".join(CORPUS[:2]) + "\n", encoding="utf-8")
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write("\n".join(CORPUS[2:]) + "\n")
    assert count_words([plain, packed]) == count_words(CORPUS)
    assert train_wordpiece([plain, packed], 150, min_frequency=1) == train_wordpiece(CORPUS, 150, min_frequency=1)


def test_trainer_input_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nsecond caf\xe9 line\n")  # latin-1 e-acute: byte 10 + len("second caf") = 20
    with pytest.raises(ValueError, match=r"bad\.txt: not valid UTF-8 at byte offset 20"):
        train_wordpiece([bad], 100)
    with pytest.raises(ValueError, match="no words"):
        train_wordpiece(["", "   ", "\t"], 100)
    with pytest.raises(FileNotFoundError):
        train_wordpiece([tmp_path / "missing.txt"], 100)
    with pytest.raises(TypeError, match="bare str"):
        train_wordpiece("some text", 100)


def test_vocab_command(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "vocab.txt"
    assert cli.main(["vocab", str(corpus), "--size", "150", "--out", str(out), "--min-frequency", "1"]) == 0
    printed = capsys.readouterr().out
    assert "learned 150 tokens" in printed and "distinct" in printed
    assert out.read_text(encoding="utf-8").splitlines() == train_wordpiece(CORPUS, 150, min_frequency=1)
    # An existing file is replaced only with --overwrite (it may be the vocabulary of a model).
    assert cli.main(["vocab", str(corpus), "--size", "150", "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    # With the default min_frequency 2 this small corpus runs out of merges, and says so.
    assert cli.main(["vocab", str(corpus), "--size", "150", "--out", str(out), "--overwrite"]) == 0
    assert "stopped below --size 150" in capsys.readouterr().out
    assert cli.main(["vocab", str(corpus), "--size", "10", "--out", str(out), "--overwrite"]) == 1
    assert "too small" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    assert cli.main(["vocab", str(empty), "--size", "100", "--out", str(out), "--overwrite"]) == 1
    assert "no words" in capsys.readouterr().err


def test_write_vocab_refuses_what_it_could_not_load(tmp_path):
    with pytest.raises(ValueError, match="appears twice"):
        write_vocab([*SPECIAL_TOKENS, "a", "a"], tmp_path / "v.txt")
    with pytest.raises(ValueError, match="lacks"):
        write_vocab(["a"], tmp_path / "v.txt")
    assert not (tmp_path / "v.txt").exists()


# ------------------------------------------------------------------------------------- Hugging Face parity
PARITY_TEXTS = [
    "UnAffable! The cats sat, on the mat.", "Wait...what?!", "3.14 and 1,000", "我爱北京 BERT是模型",
    "Café naïve Ångström cafe\u0301", "hi😀 ❤\ufe0f 👩\u200d💻", "a\x00b\u200bc\x0bd\ue000e", "the [MASK] sat[SEP]",
    "«oui»—non… $5^2 a+b", "x" * 120, "ひらがな 한국어",
]


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_matches_transformers_bert_tokenizer(tmp_path, do_lower_case):
    transformers = pytest.importorskip("transformers")
    words = set()
    for text in PARITY_TEXTS:
        words.update(BasicTokenizer(do_lower_case=do_lower_case).tokenize(text))
    # A vocabulary covering some words whole, some by pieces, and leaving some to [UNK].
    tokens = list(SPECIAL_TOKENS) + sorted(w for w in words if len(w) <= 3)
    tokens += sorted({"##" + w[i:i + 2] for w in words if len(w) > 3 for i in range(2, len(w), 2)} |
                     {w[:2] for w in words if len(w) > 3})
    tokens = list(dict.fromkeys(tokens))
    path = write_vocab(tokens, tmp_path / "vocab.txt")
    ours = BertTokenizer(path, do_lower_case=do_lower_case)
    theirs = transformers.BertTokenizer(str(path), do_lower_case=do_lower_case)
    for text in PARITY_TEXTS:
        assert ours.tokenize(text) == theirs.tokenize(text), text
    enc = theirs("the cats sat on the mat", "wait what", truncation="longest_first", max_length=9)
    ours_enc = ours.encode("the cats sat on the mat", "wait what", max_length=9)
    assert ours_enc.input_ids == enc["input_ids"] and ours_enc.token_type_ids == enc["token_type_ids"]
    texts, pairs = ["the cats sat on the mat", "wait"], ["wait what", "the mat"]
    for padding in (True, "max_length"):
        options = dict(padding=padding, truncation=True, max_length=9, return_tensors="np")
        theirs_np, ours_np = theirs(texts, pairs, **options), ours(texts, pairs, **options)
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            np.testing.assert_array_equal(ours_np[key], theirs_np[key])


def test_unicode_database_is_what_the_expectations_assume():
    # The hand-written expectations above rely on these categories (they are stable across versions).
    assert [unicodedata.category(c) for c in "\u0301\ufe0f\u200d\u200b\x0b\ue000€±©«—"] == \
        ["Mn", "Mn", "Cf", "Cf", "Cc", "Co", "Sc", "Sm", "So", "Pi", "Pd"]
