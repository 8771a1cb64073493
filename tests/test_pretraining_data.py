"""Pretraining data: pairs, truncation, masking statistics, shards and their checks, bad input.

Most tests use a corpus whose every word is unique and names where it stands ("d3s1w4" = document 3,
sentence 1, word 4) with a hand-written vocabulary holding each word as one token, so any token of any
instance can be traced back to its place in the corpus.
"""
from __future__ import annotations

import gzip
import json
import random
import re
import zipfile

import numpy as np
import pytest

from minibert import cli
from minibert.config import BertConfig
from minibert.models.pretraining import BertForPreTraining
from minibert.pretraining.data import (ARRAYS, DataConfig, InstanceMaker, PretrainingDataset, instances_to_arrays,
                                       prepare, read_documents, truncate_seq_pair)
from minibert.tokenization import SPECIAL_TOKENS, BertTokenizer, write_vocab
from minibert.tokenization.vocab import vocab_sha256

WORD_RE = re.compile(r"d(\d+)s(\d+)w(\d+)")


# ------------------------------------------------------------------------------------------- helpers
def traceable_corpus(n_docs, sentences=(1, 8), words=(2, 9), seed=0):
    """(lines, vocabulary tokens): documents of unique words "d{doc}s{sentence}w{word}"."""
    rng = random.Random(seed)
    lines, vocab = [], list(SPECIAL_TOKENS)
    for d in range(n_docs):
        for s in range(rng.randint(*sentences)):
            sentence = [f"d{d}s{s}w{w}" for w in range(rng.randint(*words))]
            vocab += sentence
            lines.append(" ".join(sentence))
        lines.append("")
    return lines, vocab


def write_corpus(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def documents_of(lines, tokenizer):
    """Documents -> sentences -> ids, built without the code under test."""
    docs, doc = [], []
    for line in lines + [""]:
        if line.strip():
            doc.append(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line)))
        elif doc:
            docs.append(doc)
            doc = []
    return docs


def make_instances(docs, tokenizer, seed=0, **options):
    config = DataConfig(**options)
    return InstanceMaker(tokenizer, config).create_instances(docs, random.Random(seed)), config


def where(tokenizer, ids):
    """(document, flat index of the word inside its document) of each id of a traceable corpus."""
    out = []
    for token in tokenizer.convert_ids_to_tokens(ids):
        d, s, w = map(int, WORD_RE.fullmatch(token).groups())
        out.append((d, s, w))
    return out


def split_ab(inst):
    ids = inst.original_ids()
    a = ids[1:1 + inst.num_a]
    b = ids[2 + inst.num_a:-1]
    return a, b


@pytest.fixture(scope="module")
def traceable():
    lines, vocab = traceable_corpus(100, sentences=(5, 20), words=(3, 12), seed=1)
    tokenizer = BertTokenizer(vocab)
    return lines, tokenizer, documents_of(lines, tokenizer)


# ------------------------------------------------------------------------------------------- pairs and NSP
def test_label0_b_continues_a_and_label1_b_comes_from_another_document(traceable):
    lines, tokenizer, docs = traceable
    # Flat position of every word inside its document, to test contiguity.
    flat = {}
    for d, doc in enumerate(docs):
        for k, (dd, s, w) in enumerate(where(tokenizer, [t for sent in doc for t in sent])):
            flat[(dd, s, w)] = k
    instances, config = make_instances(docs, tokenizer, max_seq_length=32, dupe_factor=3)
    counts = {0: 0, 1: 0}
    for inst in instances:
        a, b = (where(tokenizer, x) for x in split_ab(inst))
        assert a and b
        doc_a, doc_b = {x[0] for x in a}, {x[0] for x in b}
        assert len(doc_a) == 1 and len(doc_b) == 1, "A and B are each text of one document"
        pa, pb = [flat[x] for x in a], [flat[x] for x in b]
        assert pa == list(range(pa[0], pa[0] + len(pa))), "A is contiguous text"
        assert pb == list(range(pb[0], pb[0] + len(pb))), "B is contiguous text"
        counts[int(inst.is_random_next)] += 1
        if inst.is_random_next:
            assert doc_a != doc_b
        else:
            assert doc_a == doc_b and pb[0] > pa[-1], "an IsNext B follows A in the same document"
    assert counts[0] > 100 and counts[1] > 100


def test_nsp_coin_is_fair():
    # Documents of two 10-token sentences and a target of exactly 20 tokens: each pass over a document
    # reaches a two-sentence chunk once and flips the coin. Heads (IsNext): one instance, label 0.
    # Tails: A = sentence 1 with a random B, then sentence 2 (put back) alone, also with a random B.
    # So (label-0 instances) / (document passes) estimates P(IsNext) = 1/2.
    lines, vocab = traceable_corpus(300, sentences=(2, 2), words=(10, 10))
    tokenizer = BertTokenizer(vocab)
    docs = documents_of(lines, tokenizer)
    instances, _ = make_instances(docs, tokenizer, max_seq_length=23, short_seq_prob=0.0, dupe_factor=4)
    passes = 300 * 4
    n0 = sum(not inst.is_random_next for inst in instances)
    assert abs(n0 / passes - 0.5) < 0.05  # 3.5 standard deviations
    assert len(instances) == n0 + 2 * (passes - n0), "every tails pass makes two random-B instances"


def test_random_next_share_on_long_documents():
    # The coin is fair, but a random B leaves the rest of its chunk for further instances (put back) and a
    # one-sentence chunk always takes a random B, so somewhat more than half the instances are label 1, as
    # with the original script (on short documents, many of one sentence, it is much more).
    lines, vocab = traceable_corpus(40, sentences=(15, 30), words=(4, 12), seed=2)
    tokenizer = BertTokenizer(vocab)
    instances, _ = make_instances(documents_of(lines, tokenizer), tokenizer, max_seq_length=32, dupe_factor=3)
    share = np.mean([inst.is_random_next for inst in instances])
    assert len(instances) > 900 and 0.5 < share < 0.65


def test_one_sentence_document_always_gets_a_random_b():
    lines, vocab = traceable_corpus(40, sentences=(3, 6))
    lines += ["d40s0w0 d40s0w1 d40s0w2", ""]  # a document of one sentence
    vocab += ["d40s0w0", "d40s0w1", "d40s0w2"]
    tokenizer = BertTokenizer(vocab)
    docs = documents_of(lines, tokenizer)
    instances, _ = make_instances(docs, tokenizer, max_seq_length=32, dupe_factor=10)
    from_it = [inst for inst in instances if where(tokenizer, split_ab(inst)[0])[0][0] == 40]
    assert len(from_it) == 10, "one instance per pass, as the original makes"
    assert all(inst.is_random_next for inst in from_it)


def test_needs_two_documents():
    tokenizer = BertTokenizer(list(SPECIAL_TOKENS) + ["a", "b"])
    docs = [[[5, 6], [6, 5], [5]]]
    with pytest.raises(ValueError, match="at least 2 documents"):
        make_instances(docs, tokenizer, max_seq_length=16)


# ------------------------------------------------------------------------------------------- truncation and lengths
def test_truncate_seq_pair_cuts_the_longer_side_front_or_back():
    fronts = backs = 0
    for seed in range(200):
        a, b = list(range(30)), list(range(100, 105))
        truncate_seq_pair(a, b, 20, random.Random(seed))
        assert len(a) + len(b) == 20 and b == list(range(100, 105)), "only the longer side is cut"
        assert a == list(range(a[0], a[0] + 15)), "what is left is contiguous"
        fronts += a[0]
        backs += 29 - a[-1]
    assert fronts + backs == 200 * 15
    assert abs(fronts / (fronts + backs) - 0.5) < 0.03
    a, b = [1, 2, 3], [4, 5, 6]
    truncate_seq_pair(a, b, 2, random.Random(0))
    assert len(a) == 1 and len(b) == 1, "both sides keep a token"


def test_lengths_fit_and_both_segments_are_non_empty():
    # Sentences up to 3x longer than the sequence force truncation.
    lines, vocab = traceable_corpus(30, sentences=(1, 5), words=(1, 60), seed=2)
    tokenizer = BertTokenizer(vocab)
    docs = documents_of(lines, tokenizer)
    for T in (5, 6, 20):
        instances, _ = make_instances(docs, tokenizer, max_seq_length=T, dupe_factor=2)
        lengths = [len(inst.input_ids) for inst in instances]
        assert max(lengths) <= T
        assert T in lengths, "long sentences fill the sequence"
        for inst in instances:
            a, b = split_ab(inst)
            assert len(a) >= 1 and len(b) >= 1
            ids = inst.original_ids()
            assert ids[0] == tokenizer.cls_token_id and ids[inst.num_a + 1] == tokenizer.sep_token_id
            assert ids[-1] == tokenizer.sep_token_id


def test_short_seq_prob_makes_short_sequences(traceable):
    _, tokenizer, docs = traceable
    lengths = {}
    for p in (0.0, 1.0):
        instances, _ = make_instances(docs, tokenizer, max_seq_length=64, short_seq_prob=p, dupe_factor=3)
        lengths[p] = np.array([len(inst.input_ids) for inst in instances])
    # Without short targets chunks fill up to 61 tokens (less only at a document's end); with them the
    # target is uniform in [2, 61], so the mean length drops a lot.
    assert np.median(lengths[0.0]) > 40
    assert lengths[1.0].mean() < 0.75 * lengths[0.0].mean()
    assert (lengths[1.0] < 20).mean() > 3 * (lengths[0.0] < 20).mean()


# ------------------------------------------------------------------------------------------- masking
def test_masking_statistics(traceable):
    _, tokenizer, docs = traceable
    instances, config = make_instances(docs, tokenizer, max_seq_length=64, dupe_factor=6)
    V = tokenizer.vocab_size
    n_tokens = n_pred = n_mask = n_keep = n_random = 0
    for inst in instances:
        ids, masked = inst.original_ids(), inst.input_ids
        n = len(ids)
        assert len(inst.masked_lm_positions) == min(20, max(1, round(n * 0.15)))
        assert inst.masked_lm_positions == sorted(set(inst.masked_lm_positions))
        for p, label in zip(inst.masked_lm_positions, inst.masked_lm_ids):
            assert 0 < p < n - 1 and p != inst.num_a + 1, "never [CLS], a [SEP] or padding"
            assert ids[p] == label not in (tokenizer.cls_token_id, tokenizer.sep_token_id)
            if masked[p] == tokenizer.mask_token_id:
                n_mask += 1
            elif masked[p] == label:
                n_keep += 1
            else:
                n_random += 1
        unmasked = set(range(n)) - set(inst.masked_lm_positions)
        assert all(masked[i] == ids[i] for i in unmasked), "only chosen positions change"
        n_tokens += n
        n_pred += len(inst.masked_lm_positions)
    assert n_pred > 10000
    assert abs(n_pred / n_tokens - 0.15) < 0.01
    assert abs(n_mask / n_pred - 0.8) < 0.015
    # A random token equals the original with probability 1/V, which then counts as "kept".
    assert abs(n_keep / n_pred - (0.1 + 0.1 / V)) < 0.01
    assert abs(n_random / n_pred - (0.1 - 0.1 / V)) < 0.01


def test_random_replacements_cover_the_vocabulary():
    # A tiny vocabulary: the random 10% should hit every id, special tokens included (as the original).
    words = [f"w{i}" for i in range(15)]
    tokenizer = BertTokenizer(list(SPECIAL_TOKENS) + words)
    rng = random.Random(0)
    docs = [[[rng.randint(5, 19) for _ in range(rng.randint(3, 12))] for _ in range(6)] for _ in range(50)]
    instances, _ = make_instances(docs, tokenizer, max_seq_length=48, dupe_factor=10)
    replaced = {inst.input_ids[p] for inst in instances for p, t in
                zip(inst.masked_lm_positions, inst.masked_lm_ids) if inst.input_ids[p] not in (t, 4)}
    assert replaced == set(range(20)) - {4}  # [MASK] replacing would count as masked


def test_predictions_capped():
    lines, vocab = traceable_corpus(30, sentences=(5, 20), words=(5, 15), seed=3)
    tokenizer = BertTokenizer(vocab)
    docs = documents_of(lines, tokenizer)
    instances, _ = make_instances(docs, tokenizer, max_seq_length=128, max_predictions_per_seq=5,
                                  short_seq_prob=0.0, dupe_factor=2)
    counts = np.array([len(inst.masked_lm_positions) for inst in instances])
    assert counts.max() == 5
    assert (counts == 5).mean() > 0.8
    arrays = instances_to_arrays(instances, 128, 5)
    assert arrays["masked_lm_positions"].shape == (len(instances), 5)


def piece_corpus(n_docs=40, seed=0):
    """(lines, vocab) where most words are 2-3 WordPiece pieces: stems + "##" suffixes, no whole words."""
    stems = ["ka", "lo", "mi", "ren", "tu", "vel"]
    suffixes = ["ta", "sel", "or", "um"]
    rng = random.Random(seed)
    lines = []
    for _ in range(n_docs):
        for _ in range(rng.randint(2, 6)):
            words = []
            for _ in range(rng.randint(3, 10)):
                words.append(rng.choice(stems) + "".join(rng.choice(suffixes) for _ in range(rng.randint(0, 2))))
            lines.append(" ".join(words))
        lines.append("")
    return lines, list(SPECIAL_TOKENS) + stems + ["##" + s for s in suffixes]


@pytest.mark.parametrize("whole_word_mask", [True, False])
def test_whole_word_masking_masks_whole_words(whole_word_mask):
    lines, vocab = piece_corpus()
    tokenizer = BertTokenizer(vocab)
    assert tokenizer.tokenize("kataor") == ["ka", "##ta", "##or"]
    docs = documents_of(lines, tokenizer)
    instances, _ = make_instances(docs, tokenizer, max_seq_length=40, whole_word_mask=whole_word_mask,
                                  dupe_factor=5)
    partial = whole = 0
    cont = [t.startswith("##") for t in vocab]
    for inst in instances:
        ids = inst.original_ids()
        chosen = set(inst.masked_lm_positions)
        assert 1 <= len(chosen) <= round(len(ids) * 0.15) or len(chosen) == 0
        # Words: a non-## token and the ## tokens right after it (segments never start with ## here,
        # unless front truncation cut a word, which then starts a word of its own).
        starts = [i for i in range(1, len(ids) - 1) if not cont[ids[i]] or not cont[ids[i - 1]]
                  or ids[i - 1] == tokenizer.sep_token_id]
        for s, e in zip(starts, starts[1:] + [len(ids)]):
            word = [i for i in range(s, e) if ids[i] not in (tokenizer.cls_token_id, tokenizer.sep_token_id)]
            hit = chosen.intersection(word)
            if hit and len(hit) < len(word):
                partial += 1
            elif hit and len(word) > 1:
                whole += 1
    if whole_word_mask:
        assert partial == 0 and whole > 100
    else:
        assert partial > 100, "without whole-word masking, single pieces of words get masked"


# ------------------------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("prepared")
    lines, vocab = traceable_corpus(50, seed=4)
    corpus = write_corpus(base / "corpus.txt", lines)
    vocab_file = write_vocab(vocab, base / "vocab.txt")
    config = DataConfig(max_seq_length=32, max_predictions_per_seq=6, dupe_factor=3)
    meta = prepare([corpus], vocab_file, base / "out", config, seed=7, instances_per_shard=40)
    return base, corpus, vocab_file, config, meta


def test_shards_round_trip_to_the_same_arrays(prepared):
    base, corpus, vocab_file, config, meta = prepared
    assert len(meta["splits"]["train"]["shards"]) > 2
    ds = PretrainingDataset(base / "out")
    # The same computation in memory: read, shuffle documents, create instances, pad.
    tokenizer = BertTokenizer(vocab_file)
    docs, _ = read_documents([corpus], tokenizer)
    rng = random.Random(7)
    rng.shuffle(docs)
    expected = instances_to_arrays(InstanceMaker(tokenizer, config).create_instances(docs, rng), 32, 6)
    assert set(ds.arrays) == set(ARRAYS)
    for name, a in expected.items():
        assert ds.arrays[name].dtype == a.dtype and np.array_equal(ds.arrays[name], a), name
    assert len(ds) == meta["splits"]["train"]["instances"] == len(expected["input_ids"])
    ds.check_vocab(vocab_file)
    ds.check_vocab(tokenizer)
    assert meta["vocab_sha256"] == vocab_sha256(tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size)))


def test_array_layout(traceable):
    _, tokenizer, docs = traceable
    instances, _ = make_instances(docs[:20], tokenizer, max_seq_length=40, max_predictions_per_seq=7)
    arrays = instances_to_arrays(instances, 40, 7)
    for name, (dtype, _) in ARRAYS.items():
        assert arrays[name].dtype == dtype and len(arrays[name]) == len(instances)
    for k, inst in enumerate(instances):
        n, m, pad = len(inst.input_ids), len(inst.masked_lm_positions), 40 - len(inst.input_ids)
        assert arrays["input_ids"][k].tolist() == inst.input_ids + [0] * pad
        assert arrays["token_type_ids"][k].tolist() == [0] * (inst.num_a + 2) + [1] * (n - inst.num_a - 2) + [0] * pad
        assert arrays["attention_mask"][k].tolist() == [1] * n + [0] * pad
        assert arrays["masked_lm_positions"][k].tolist() == inst.masked_lm_positions + [0] * (7 - m)
        assert arrays["masked_lm_ids"][k].tolist() == inst.masked_lm_ids + [0] * (7 - m)
        assert arrays["masked_lm_weights"][k].tolist() == [1.0] * m + [0.0] * (7 - m)
        assert arrays["next_sentence_labels"][k] == int(inst.is_random_next)


def test_batches_cover_the_epoch_and_resume_exactly(prepared):
    ds = PretrainingDataset(prepared[0] / "out")
    N = len(ds)

    def rows(batches):
        return [tuple(map(tuple, b["input_ids"])) for b in batches]

    all_rows = list(map(tuple, ds.arrays["input_ids"]))
    epoch0 = list(ds.batches(16, np.random.default_rng(3), epoch=0))
    assert [len(b["input_ids"]) for b in epoch0] == [16] * (N // 16) + ([N % 16] if N % 16 else [])
    assert set(ARRAYS) == set(epoch0[0])
    assert sorted(r for batch in rows(epoch0) for r in batch) == sorted(all_rows)
    # A pure function of (seed, epoch): an int seed, a fresh Generator, or a used one give the same order.
    used = np.random.default_rng(3)
    used.random(10)
    assert np.array_equal(ds.order(3, 0), ds.order(used, 0))
    assert np.array_equal(ds.order(np.random.default_rng(3), 1), ds.order(3, 1))
    assert not np.array_equal(ds.order(3, 0), ds.order(3, 1))
    assert not np.array_equal(ds.order(3, 0), ds.order(4, 0))
    # Resume from batch 5.
    tail = list(ds.batches(16, 3, epoch=0, start=5))
    assert rows(tail) == rows(epoch0[5:])
    assert len(list(ds.batches(16, 3, drop_last=True))) == N // 16
    assert np.array_equal(next(ds.batches(N, None))["input_ids"], ds.arrays["input_ids"])
    with pytest.raises(ValueError, match="start"):
        next(ds.batches(16, 3, start=10**6))
    trimmed = next(ds.batches(8, 3, trim_padding=True))
    t = trimmed["input_ids"].shape[1]
    assert t == trimmed["attention_mask"].sum(axis=1).max() <= 32
    assert np.array_equal(trimmed["input_ids"], ds.batch(ds.order(3, 0)[:8])["input_ids"][:, :t])


def test_batch_feeds_the_model(prepared):
    ds = PretrainingDataset(prepared[0] / "out")
    config = BertConfig(vocab_size=ds.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = BertForPreTraining(config, np.random.default_rng(0))
    batch = next(ds.batches(4, 0, trim_padding=True))
    out = model.forward(**batch)
    # An untrained model guesses: MLM loss near log V, NSP loss near log 2.
    assert abs(out.mlm_loss - np.log(ds.vocab_size)) < 1.0 and abs(out.nsp_loss - np.log(2)) < 0.5


def test_heldout_split_uses_other_documents(tmp_path):
    lines, vocab = traceable_corpus(40, seed=5)
    corpus = write_corpus(tmp_path / "c.txt", lines)
    vocab_file = write_vocab(vocab, tmp_path / "vocab.txt")
    meta = prepare([corpus], vocab_file, tmp_path / "out", DataConfig(max_seq_length=32, dupe_factor=2),
                   heldout_fraction=0.1)
    tokenizer = BertTokenizer(vocab_file)
    docs = {}
    for split in ("train", "heldout"):
        ds = PretrainingDataset(tmp_path / "out", split)
        ids = ds.arrays["input_ids"].copy()
        rows = np.arange(len(ds))[:, None]
        ids[rows, ds.arrays["masked_lm_positions"]] = np.where(ds.arrays["masked_lm_weights"] == 1,
                                                               ds.arrays["masked_lm_ids"],
                                                               ids[rows, ds.arrays["masked_lm_positions"]])
        real = [i for i in np.unique(ids) if i >= len(SPECIAL_TOKENS)]
        docs[split] = {d for d, _, _ in where(tokenizer, real)}
    assert meta["splits"]["heldout"]["documents"] == 4 == len(docs["heldout"])
    assert meta["splits"]["train"]["documents"] == 36 == len(docs["train"])
    assert not docs["train"] & docs["heldout"]
    prepare([corpus], vocab_file, tmp_path / "nh", DataConfig(max_seq_length=32, dupe_factor=1))
    with pytest.raises(ValueError, match="has no 'heldout' split"):
        PretrainingDataset(tmp_path / "nh", "heldout")


def test_same_seed_same_bytes_other_seed_other_data(prepared, tmp_path):
    base, corpus, vocab_file, config, meta = prepared
    again = prepare([corpus], vocab_file, tmp_path / "again", config, seed=7, instances_per_shard=40)
    assert again["splits"] == meta["splits"]  # includes every shard's sha256
    packed = prepare([corpus], vocab_file, tmp_path / "packed", config, seed=7, instances_per_shard=40, compress=True)
    first = packed["splits"]["train"]["shards"][0]["file"]
    assert (tmp_path / "packed" / first).stat().st_size < 0.5 * (base / "out" / first).stat().st_size
    for name, a in PretrainingDataset(base / "out").arrays.items():
        assert np.array_equal(PretrainingDataset(tmp_path / "packed").arrays[name], a)
    other = prepare([corpus], vocab_file, tmp_path / "other", config, seed=8, instances_per_shard=40)
    assert other["splits"]["train"]["shards"][0]["sha256"] != meta["splits"]["train"]["shards"][0]["sha256"]


def copy_prepared(prepared, tmp_path):
    import shutil
    shutil.copytree(prepared[0] / "out", tmp_path / "out")
    return tmp_path / "out"


def rewrite_shard(path, **changes):
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return arrays


def test_corrupt_and_missing_shards_are_named(prepared, tmp_path):
    out = copy_prepared(prepared, tmp_path)
    shard = out / "train-00001.npz"
    original = shard.read_bytes()

    shard.write_bytes(original[: len(original) // 2])
    with pytest.raises(ValueError, match=r"train-00001\.npz.*truncated or corrupt"):
        PretrainingDataset(out)

    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"train-00001\.npz"):
        PretrainingDataset(out)

    shard.write_bytes(original)
    rewrite_shard(shard, input_ids=None)
    with pytest.raises(ValueError, match=r"train-00001\.npz.*missing \['input_ids'\]"):
        PretrainingDataset(out)

    shard.write_bytes(original)
    with np.load(shard) as npz:
        ids = npz["input_ids"]
    rewrite_shard(shard, input_ids=ids.astype(np.int64))
    with pytest.raises(ValueError, match=r"train-00001\.npz: input_ids is int64"):
        PretrainingDataset(out)

    bad = ids.copy()
    bad[3, 2] = 10**6
    shard.write_bytes(original)
    rewrite_shard(shard, input_ids=bad)
    with pytest.raises(ValueError, match=r"train-00001\.npz: input_ids outside"):
        PretrainingDataset(out)

    shard.write_bytes(original)
    with np.load(shard) as npz:
        weights = npz["masked_lm_weights"].copy()
    k = np.flatnonzero(weights[:, -2] == 0)[0]
    weights[k, -1] = 1.0  # a "real" prediction after the padding
    rewrite_shard(shard, masked_lm_weights=weights)
    with pytest.raises(ValueError, match=r"train-00001\.npz: .*run of ones"):
        PretrainingDataset(out)

    shard.write_bytes(original)
    with np.load(shard) as npz:
        types = npz["token_type_ids"].copy()
    first_b = np.argmax(types[0])
    types[0, first_b - 1] = 1  # A's [SEP] counted as B
    rewrite_shard(shard, token_type_ids=types)
    with pytest.raises(ValueError, match=r"train-00001\.npz: token_type_ids are not"):
        PretrainingDataset(out)

    # A change that keeps the arrays valid is caught by the checksum.
    shard.write_bytes(original)
    with np.load(shard) as npz:
        labels = npz["next_sentence_labels"]
    rewrite_shard(shard, next_sentence_labels=1 - labels)
    with pytest.raises(ValueError, match=r"train-00001\.npz: sha256"):
        PretrainingDataset(out)
    assert len(PretrainingDataset(out, verify_checksums=False)) > 0

    shard.write_bytes(original)
    assert len(PretrainingDataset(out)) == prepared[4]["splits"]["train"]["instances"]
    (out / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="meta.json: not valid JSON"):
        PretrainingDataset(out)
    (out / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="meta.json"):
        PretrainingDataset(out)


def test_pickled_shard_is_refused(prepared, tmp_path):
    out = copy_prepared(prepared, tmp_path)
    shard = out / "train-00000.npz"
    with np.load(shard) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["input_ids"] = arrays["input_ids"].astype(object)
    with open(shard, "wb") as f:
        np.savez(f, **arrays)
    with zipfile.ZipFile(shard) as z:
        assert "input_ids.npy" in z.namelist()
    with pytest.raises(ValueError, match=r"train-00000\.npz"):
        PretrainingDataset(out)


def test_vocabulary_mismatch_is_detected(prepared):
    base, _, vocab_file, _, _ = prepared
    ds = PretrainingDataset(base / "out")
    tokens = BertTokenizer(vocab_file).convert_ids_to_tokens(range(ds.vocab_size))
    swapped = tokens[:10] + [tokens[11], tokens[10]] + tokens[12:]
    with pytest.raises(ValueError, match="different vocabulary"):
        ds.check_vocab(swapped)


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input(tmp_path):
    lines, vocab = traceable_corpus(5)
    vocab_file = write_vocab(vocab, tmp_path / "vocab.txt")
    good = write_corpus(tmp_path / "good.txt", lines)
    config = DataConfig(max_seq_length=16, dupe_factor=1)

    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\t\n\n")
    for path in (empty, blank):
        with pytest.raises(ValueError, match="has no text"):
            prepare([path], vocab_file, tmp_path / "o", config)

    bad_utf8 = tmp_path / "latin1.txt"
    bad_utf8.write_bytes("d0s0w0 d0s0w1\n\nd1s0w0 caf".encode() + "é".encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=r"latin1\.txt: not valid UTF-8 at byte offset 25"):
        prepare([good, bad_utf8], vocab_file, tmp_path / "o", config)

    with pytest.raises(FileNotFoundError, match="missing.txt"):
        prepare([tmp_path / "missing.txt"], vocab_file, tmp_path / "o", config)

    no_specials = tmp_path / "nospecial.txt"
    no_specials.write_text("\n".join(vocab[5:]) + "\n")
    with pytest.raises(ValueError, match=r"lacks the special token\(s\) \[PAD\] \[UNK\] \[CLS\] \[SEP\] \[MASK\]"):
        prepare([good], no_specials, tmp_path / "o", config)

    for T in (4, 0, -3):
        with pytest.raises(ValueError, match=f"max_seq_length={T} is too small"):
            DataConfig(max_seq_length=T)
    assert DataConfig(max_seq_length=5).max_num_tokens == 2
    for kwargs in ({"masked_lm_prob": 1.5}, {"short_seq_prob": -0.1}, {"dupe_factor": 0},
                   {"max_predictions_per_seq": 0}):
        with pytest.raises(ValueError):
            DataConfig(**kwargs)

    one_doc = write_corpus(tmp_path / "one.txt", lines[:lines.index("")])
    with pytest.raises(ValueError, match="needs at least 2"):
        prepare([one_doc], vocab_file, tmp_path / "o", config)
    with pytest.raises(ValueError, match="heldout_fraction 0"):
        prepare([good], vocab_file, tmp_path / "o", config, heldout_fraction=0.8)


def test_empty_documents_and_tokenless_lines_are_skipped(tmp_path):
    lines, vocab = traceable_corpus(4, sentences=(2, 3))
    noisy = ["", "", *lines[:3], "\x00\x01", *lines[3:], "", "", "   ", ""]
    tokenizer = BertTokenizer(vocab)
    path = write_corpus(tmp_path / "noisy.txt", noisy)
    docs, stats = read_documents([path], tokenizer)
    assert docs == documents_of(lines, tokenizer)
    assert stats.documents == 4 and stats.lines_without_tokens == 1 and stats.lines == len(noisy)
    assert stats.sentences == sum(map(len, docs)) and stats.tokens == sum(len(s) for d in docs for s in d)
    # Each file starts a new document, even without a blank line at the end of the previous file.
    first = write_corpus(tmp_path / "a.txt", ["d0s0w0 d0s0w1"])
    second = write_corpus(tmp_path / "b.txt", ["d1s0w0"])
    docs, _ = read_documents([first, second], tokenizer)
    assert len(docs) == 2
    # gzip-compressed files are read as text.
    packed = tmp_path / "noisy.txt.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert read_documents([packed], tokenizer)[0] == documents_of(lines, tokenizer)


# ------------------------------------------------------------------------------------------- the command
def test_prepare_command(tmp_path, capsys):
    lines, vocab = traceable_corpus(20, seed=6)
    corpus = write_corpus(tmp_path / "c.txt", lines)
    vocab_file = write_vocab(vocab, tmp_path / "vocab.txt")
    status = cli.main(["prepare", str(corpus), "--vocab", str(vocab_file), "--out", str(tmp_path / "out"),
                       "--max-seq-length", "24", "--max-predictions-per-seq", "4", "--dupe-factor", "2",
                       "--whole-word-mask", "--seed", "3", "--instances-per-shard", "50",
                       "--heldout-fraction", "0.1"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "20 documents" in printed and "train: 18 documents x 2" in printed
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["command"].startswith("minibert prepare") and "--whole-word-mask" in meta["command"]
    assert (meta["seed"], meta["max_seq_length"], meta["max_predictions_per_seq"], meta["whole_word_mask"]) == \
        (3, 24, 4, True)
    ds = PretrainingDataset(tmp_path / "out")
    assert ds.arrays["input_ids"].shape[1:] == (24,) and ds.arrays["masked_lm_ids"].shape[1:] == (4,)
    assert len(ds) == meta["splits"]["train"]["instances"]

    status = cli.main(["prepare", str(corpus), "--vocab", str(vocab_file), "--out", str(tmp_path / "bad"),
                       "--max-seq-length", "4"])
    assert status == 1
    assert "max_seq_length=4 is too small" in capsys.readouterr().err
