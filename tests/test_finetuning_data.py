"""Fine-tuning data (tasks, reading, encoding, batches) and metrics, against the manifest and hand-computed values."""
import json
import math

import numpy as np
import pytest

from minibert import kernels
from minibert.config import BertConfig
from minibert.finetuning import metrics as M
from minibert.finetuning.data import (SPLITS, TASKS, TaskInfo, batches, encode, load_examples,
                                      majority_score, task_info)
from minibert.models import BertModel
from minibert.paths import data_path
from minibert.tokenization import BertTokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(data_path("vocab.txt"))


@pytest.fixture(scope="module")
def manifest_tasks():
    return json.loads(data_path("manifest.json").read_text(encoding="utf-8"))["tasks"]


def make_task(root, lines, description=None, split="train", extra_splits=()):
    """A task folder with ``split``.jsonl holding ``lines`` (strings written as they are) and a task.json."""
    root.mkdir(parents=True, exist_ok=True)
    description = {"inputs": ["sentence"], "labels": ["neg", "pos"]} if description is None else description
    (root / "task.json").write_text(json.dumps(description) if isinstance(description, dict) else description,
                                    encoding="utf-8")
    (root / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    for s in extra_splits:
        (root / f"{s}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return root


GOOD = ['{"sentence": "The dog runs.", "label": 1}', '{"sentence": "The dogs runs.", "label": 0}']


# ---------------------------------------------------------------------------------------- bundled tasks
def test_tasks_are_the_manifest_tasks(manifest_tasks):
    assert set(TASKS) == set(manifest_tasks)
    for name in TASKS:
        info, entry = task_info(name), manifest_tasks[name]
        assert info.inputs == entry["inputs"] and info.labels == entry["labels"]
        assert info.metric == entry["metric"] and info.num_labels == len(entry["labels"])
        assert info.majority_baseline == entry["majority_baseline"] and info.sizes == entry["sizes"]
        assert info.is_pair == (len(entry["inputs"]) == 2) and not info.is_regression


def test_real_files_load_with_manifest_sizes_and_label_counts(manifest_tasks):
    for name in TASKS:
        info = task_info(name)
        for split in SPLITS:
            examples = load_examples(info, split)
            assert len(examples) == manifest_tasks[name]["sizes"][split]
            counts = np.bincount([e["label"] for e in examples], minlength=info.num_labels).tolist()
            assert counts == manifest_tasks[name]["label_counts"][split]
            assert all(isinstance(e[f], str) and e[f] for e in examples for f in info.inputs)


def test_majority_score_matches_the_manifest(manifest_tasks):
    for name, splits in (("acceptability", SPLITS), ("nli", ("dev",))):
        for split in splits:
            score = majority_score(name, split)
            assert round(score, 4) == manifest_tasks[name]["majority_baseline"][split]
    # nli dev: 667 / 667 / 666, ties broken towards label 0 in train (10000 each): 667 / 2000
    assert majority_score("nli", "dev") == pytest.approx(667 / 2000, abs=1e-12)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        task_info("cola")
    assert all(name in str(err.value) for name in TASKS)


def test_limit_takes_the_first_examples():
    first = load_examples("sentiment", "dev", limit=7)
    lines = data_path("tasks", "sentiment", "dev.jsonl").read_text(encoding="utf-8").splitlines()[:7]
    assert first == [json.loads(line) for line in lines]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            load_examples("sentiment", "dev", limit=bad)


# ---------------------------------------------------------------------------------------- encoding
def test_single_sentences_are_cls_a_sep_padded(tokenizer):
    examples = load_examples("acceptability", "dev", limit=50)
    enc = encode(examples, tokenizer, "acceptability")
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    lengths = [len(tokenizer.tokenize(e["sentence"])) + 2 for e in examples]
    assert enc.lengths.tolist() == lengths and enc.input_ids.shape == (50, max(lengths))
    assert enc.num_truncated == 0 and len(enc) == 50
    for i, e in enumerate(examples):
        n = lengths[i]
        row = enc.input_ids[i]
        assert row[0] == cls and row[n - 1] == sep and (row[n:] == pad).all()
        assert tokenizer.convert_ids_to_tokens(row[1:n - 1].tolist()) == tokenizer.tokenize(e["sentence"])
        assert enc.attention_mask[i].tolist() == [1] * n + [0] * (enc.input_ids.shape[1] - n)
    assert (enc.token_type_ids == 0).all()
    assert enc.labels.dtype == np.int64 and enc.labels.tolist() == [e["label"] for e in examples]
    for name in ("input_ids", "token_type_ids", "attention_mask", "lengths"):
        assert getattr(enc, name).dtype == np.int64


def test_pairs_get_segments_0_then_1_and_sep_after_each_text(tokenizer):
    examples = load_examples("entailment", "train", limit=80)
    enc = encode(examples, tokenizer, "entailment")
    sep = tokenizer.sep_token_id
    for i, e in enumerate(examples):
        a, b = len(tokenizer.tokenize(e["premise"])), len(tokenizer.tokenize(e["hypothesis"]))
        n = a + b + 3
        assert enc.lengths[i] == n
        seps = np.flatnonzero(enc.input_ids[i] == sep).tolist()
        assert seps == [a + 1, n - 1]
        # [CLS] A [SEP] -> 0 (a + 2 positions), B [SEP] -> 1 (b + 1 positions), padding -> 0
        assert enc.token_type_ids[i].tolist() == [0] * (a + 2) + [1] * (b + 1) + [0] * (enc.input_ids.shape[1] - n)


def test_truncation_to_max_length_keeps_both_seps(tokenizer):
    examples = load_examples("entailment", "dev", limit=40)
    full = encode(examples, tokenizer, "entailment")
    cut = encode(examples, tokenizer, "entailment", max_length=12)
    assert cut.input_ids.shape == (40, 12)
    assert cut.num_truncated == int((full.lengths > 12).sum()) > 0
    assert (cut.lengths == np.minimum(full.lengths, 12)).all()
    sep = tokenizer.sep_token_id
    assert ((cut.input_ids == sep).sum(axis=1) == 2).all()
    assert (cut.input_ids[np.arange(40), cut.lengths - 1] == sep).all()
    for bad in (3, 0, 12.0, True):
        with pytest.raises(ValueError, match="max_length"):
            encode(examples, tokenizer, "entailment", max_length=bad)


def test_encode_checks_hand_made_examples(tokenizer):
    with pytest.raises(ValueError, match="example 1: the field 'hypothesis' is missing"):
        encode([{"premise": "A b.", "hypothesis": "A c.", "label": 0}, {"premise": "A b.", "label": 0}],
               tokenizer, "entailment")
    with pytest.raises(ValueError, match="outside 0..2"):
        encode([{"premise": "A b.", "hypothesis": "A c.", "label": 3}], tokenizer, "nli")
    with pytest.raises(ValueError, match="non-empty list"):
        encode([], tokenizer, "nli")


# ---------------------------------------------------------------------------------------- batches
def small_encoded(tokenizer, n=5):
    words = ["the", "dog", "was", "happy", "in", "the", "garden"]   # one token each in the bundled vocabulary
    examples = [{"sentence": " ".join(words[:k + 1]), "label": k % 2} for k in [4, 0, 2, 6, 1, 3, 5][:n]]
    return encode(examples, tokenizer, "acceptability")


def test_batches_in_order_are_trimmed_and_keep_the_last_partial_batch(tokenizer):
    enc = small_encoded(tokenizer)
    assert enc.lengths.tolist() == [7, 3, 5, 9, 4]
    out = list(batches(enc, 2))
    assert [len(b["labels"]) for b in out] == [2, 2, 1]
    assert [b["input_ids"].shape[1] for b in out] == [7, 9, 4]
    for k, b in enumerate(out):
        rows = slice(2 * k, 2 * k + 2)
        t = b["input_ids"].shape[1]
        assert set(b) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
        for name in ("input_ids", "token_type_ids", "attention_mask"):
            assert np.array_equal(b[name], getattr(enc, name)[rows, :t]) and b[name].flags.c_contiguous
            assert (getattr(enc, name)[rows, t:] == 0).all()   # only padding was cut off
        assert np.array_equal(b["labels"], enc.labels[rows])


def test_shuffling_is_a_permutation_repeatable_by_seed(tokenizer):
    enc = encode(load_examples("sentiment", "dev", limit=45), tokenizer, "sentiment")

    def order(rng):
        # Identify each example by its row of ids (the 45 sentences are distinct).
        rows = {tuple(r[:n]): i for i, (r, n) in enumerate(zip(enc.input_ids.tolist(), enc.lengths))}
        return [rows[tuple(r[:int(m.sum())])] for b in batches(enc, 8, rng)
                for r, m in zip(b["input_ids"].tolist(), b["attention_mask"])]

    assert order(None) == list(range(45))
    first = order(np.random.default_rng(3))
    assert sorted(first) == list(range(45)) and first != list(range(45))
    assert order(np.random.default_rng(3)) == first
    assert order(np.random.default_rng(4)) != first
    rng = np.random.default_rng(3)
    assert order(rng) == first and order(rng) != first    # the generator advances: a new order per epoch


def test_trimming_does_not_change_model_outputs(tokenizer):
    examples = sorted(load_examples("entailment", "dev", limit=20), key=lambda e: len(e["premise"]))
    enc = encode(examples, tokenizer, "entailment")   # the first batch holds the two shortest pairs
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=12, max_position_embeddings=64)
    model = BertModel(config, np.random.default_rng(0)).astype(np.float64)
    model.eval()
    trimmed = next(batches(enc, 2))
    t = trimmed["input_ids"].shape[1]
    assert t < enc.input_ids.shape[1]
    with kernels.using("numpy"):   # the reference path: no Numba compilation for one tiny forward
        full = model.forward(enc.input_ids[:2], enc.token_type_ids[:2], enc.attention_mask[:2])
        short = model.forward(trimmed["input_ids"], trimmed["token_type_ids"], trimmed["attention_mask"])
    np.testing.assert_allclose(short.pooler_output, full.pooler_output, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(short.last_hidden_state, full.last_hidden_state[:, :t], rtol=1e-10, atol=1e-12)


def test_batches_bad_arguments(tokenizer):
    enc = small_encoded(tokenizer)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            next(batches(enc, bad))
    with pytest.raises(TypeError, match="Generator"):
        next(batches(enc, 2, rng=0))
    with pytest.raises(ValueError, match="Encoded"):
        next(batches({"input_ids": enc.input_ids}, 2))


# ---------------------------------------------------------------------------------------- your own task
def test_own_task_folder_with_label_names_and_baselines(tmp_path, tokenizer):
    lines = ['{"q": "Is it red?", "p": "It is red.", "label": "yes", "id": 1}',
             '{"q": "Is it blue?", "p": "It is red.", "label": "no"}',
             '{"q": "Is it big?", "p": "It is big.", "label": 1}']
    folder = make_task(tmp_path / "qa", lines, {"inputs": ["q", "p"], "labels": ["no", "yes"], "metric": "f1"})
    (folder / "dev.jsonl").write_text('{"q": "A?", "p": "B.", "label": 0}\n{"q": "C?", "p": "D.", "label": 1}\n')
    info = task_info(folder)
    assert (info.name, info.inputs, info.labels, info.num_labels, info.is_pair) == ("qa", ["q", "p"], ["no", "yes"],
                                                                                    2, True)
    assert info.sizes == {"train": 3, "dev": 2}
    # train majority is "yes" (2 of 3): F1 of class 1 on train = 2*2 / (2*2 + 1 + 0) = 0.8, dev = 2*1/(2*1+1) = 2/3
    assert info.majority_baseline == pytest.approx({"train": 0.8, "dev": 2 / 3})
    examples = load_examples(str(folder), "train")
    assert [e["label"] for e in examples] == [1, 0, 1] and examples[0]["id"] == 1
    assert encode(examples, tokenizer, info).token_type_ids.max() == 1
    with pytest.raises(FileNotFoundError, match="train, dev"):
        load_examples(info, "test")


def test_own_regression_task(tmp_path, tokenizer):
    lines = ['{"sentence": "Good.", "label": 4.5}', '{"sentence": "Bad.", "label": 1}',
             '{"sentence": "Fine.", "label": 3}']
    info = task_info(make_task(tmp_path / "sts", lines, {"inputs": ["sentence"], "labels": None}))
    assert info.is_regression and info.num_labels == 1 and info.labels == [] and info.metric == "pearson"
    assert info.majority_baseline == {"train": 0.0}   # a constant prediction has no correlation
    enc = encode(load_examples(info, "train"), tokenizer, info)
    assert enc.labels.dtype == np.float32 and enc.labels.tolist() == [4.5, 1.0, 3.0]
    bad = make_task(tmp_path / "sts2", ['{"sentence": "Good.", "label": "high"}'], {"inputs": ["sentence"],
                                                                                     "labels": None})
    with pytest.raises(ValueError, match="not a finite number"):
        task_info(bad)


@pytest.mark.parametrize("line, message", [
    ('{"sentence": "The dog runs.", "label": 1', r"line 2: not valid JSON"),
    ('["The dog runs.", 1]', r"line 2: expected a JSON object, got list"),
    ('{"text": "The dog runs.", "label": 1}', r"line 2: the field 'sentence' is missing"),
    ('{"sentence": "The dog runs."}', r"line 2: the field 'label' is missing"),
    ('{"sentence": "The dog runs.", "label": 2}', r"line 2: label 2 is outside 0..1"),
    ('{"sentence": "The dog runs.", "label": -1}', r"line 2: label -1 is outside 0..1"),
    ('{"sentence": "The dog runs.", "label": true}', r"line 2: label True must be a label id"),
    ('{"sentence": "The dog runs.", "label": 1.0}', r"line 2: label 1.0 must be a label id"),
    ('{"sentence": "The dog runs.", "label": "maybe"}', r"line 2: label 'maybe' is not one of the label names"),
    ('{"sentence": "   ", "label": 1}', r"line 2: 'sentence' is empty"),
    ('{"sentence": 7, "label": 1}', r"line 2: 'sentence' must be a string"),
])
def test_bad_lines_are_named_with_their_line_number(tmp_path, line, message):
    folder = make_task(tmp_path / "t", [GOOD[0], line, GOOD[1]])
    with pytest.raises(ValueError, match=message):
        task_info(folder)
    with pytest.raises(ValueError, match=message):
        load_examples(TaskInfo("t", ["sentence"], ["neg", "pos"], "accuracy", {}, 2, folder, {}), "train")


def test_bad_files_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="task folder not found"):
        task_info(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="task.json"):
        (tmp_path / "empty").mkdir()
        task_info(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        task_info(make_task(tmp_path / "devonly", GOOD, split="dev"))
    with pytest.raises(ValueError, match="no examples"):
        task_info(make_task(tmp_path / "blank", ["", "  "]))
    folder = make_task(tmp_path / "latin1", GOOD)
    (folder / "train.jsonl").write_bytes('{"sentence": "Caf\u00e9.", "label": 1}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match="not valid UTF-8 at byte offset 17"):
        task_info(folder)
    info = task_info(make_task(tmp_path / "ok", GOOD))
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_examples(info, "validation")
    with pytest.raises(FileNotFoundError, match="dev.jsonl not found"):
        majority_score(info, "dev")
    # blank lines are skipped, line numbers still count them
    folder = make_task(tmp_path / "gaps", [GOOD[0], "", '{"sentence": "x", "label": 5}'])
    with pytest.raises(ValueError, match="line 3: label 5"):
        task_info(folder)


@pytest.mark.parametrize("description, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"inputs": "sentence", "labels": ["a", "b"]}, "'inputs' must list one or two"),
    ({"inputs": ["a", "b", "c"], "labels": ["a", "b"]}, "'inputs' must list one or two"),
    ({"inputs": ["s", "s"], "labels": ["a", "b"]}, "'inputs' must list one or two distinct"),
    ({"inputs": ["label"], "labels": ["a", "b"]}, "'label' is the label field"),
    ({"inputs": ["sentence"]}, "'labels' is missing"),
    ({"inputs": ["sentence"], "labels": ["only"]}, "at least two distinct class names"),
    ({"inputs": ["sentence"], "labels": ["a", "a"]}, "at least two distinct class names"),
    ({"inputs": ["sentence"], "labels": ["a", "b"], "metric": "pearson"}, "does not score a classification"),
    ({"inputs": ["sentence"], "labels": None, "metric": "accuracy"}, "does not score a regression"),
    ({"inputs": ["sentence"], "labels": ["a", "b"], "metric": "auc"}, "expected one of accuracy, f1"),
    ({"inputs": ["sentence"], "labels": ["a", "b"], "lables": 1}, "unknown keys"),
])
def test_bad_task_descriptions(tmp_path, description, message):
    with pytest.raises(ValueError, match=message):
        task_info(make_task(tmp_path / "t", GOOD, description))


# ---------------------------------------------------------------------------------------- metrics
def from_table(table):
    """(pred, gold) realising a confusion matrix table[gold][pred], shuffled (order must not matter)."""
    gold = [g for g, row in enumerate(table) for p, n in enumerate(row) for _ in range(n)]
    pred = [p for g, row in enumerate(table) for p, n in enumerate(row) for _ in range(n)]
    perm = np.random.default_rng(0).permutation(len(gold))
    return np.array(pred)[perm], np.array(gold)[perm]


def test_binary_metrics_from_a_2x2_table():
    # gold\pred   0  1        TN = 4, FP = 2, FN = 1, TP = 3
    #     0       4  2
    #     1       1  3
    pred, gold = from_table([[4, 2], [1, 3]])
    assert M.confusion_matrix(pred, gold).tolist() == [[4, 2], [1, 3]]
    assert M.accuracy(pred, gold) == pytest.approx(7 / 10)
    assert M.f1(pred, gold) == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))                 # = 2/3
    assert M.matthews_corrcoef(pred, gold) == pytest.approx((3 * 4 - 2 * 1) / math.sqrt(5 * 4 * 6 * 5))  # 1/sqrt(6)
    # swapping the roles of pred and gold transposes the table; the three scores are symmetric
    assert M.confusion_matrix(gold, pred).tolist() == [[4, 1], [2, 3]]
    assert M.matthews_corrcoef(gold, pred) == pytest.approx(1 / math.sqrt(6))


def test_multiclass_metrics_from_a_3x3_table():
    table = [[3, 1, 0],
             [0, 2, 2],
             [0, 1, 1]]
    pred, gold = from_table(table)
    # t (gold counts) = 4, 4, 2; p (predicted counts) = 3, 4, 3; correct 6 of s = 10
    assert M.accuracy(pred, gold) == pytest.approx(0.6)
    # F1_k = 2 C[k,k] / (t_k + p_k): 6/7, 4/8, 2/5
    assert M.f1(pred, gold) == pytest.approx((6 / 7 + 4 / 8 + 2 / 5) / 3)
    # R_K = (6*10 - (3*4 + 4*4 + 3*2)) / sqrt((100 - (9+16+9)) (100 - (16+16+4))) = 26 / sqrt(66 * 64)
    assert M.matthews_corrcoef(pred, gold) == pytest.approx(26 / math.sqrt(66 * 64))
    # a class that occurs nowhere is left out of the macro mean (num_labels=4 keeps it multi-class)
    assert M.f1(pred, gold, num_labels=4) == pytest.approx((6 / 7 + 4 / 8 + 2 / 5) / 3)
    assert M.matthews_corrcoef(pred, gold, num_labels=4) == pytest.approx(26 / math.sqrt(66 * 64))


def test_degenerate_cases():
    ones = np.ones(6, dtype=np.int64)
    mixed = np.array([0, 1, 1, 0, 1, 1])
    assert M.matthews_corrcoef(ones, mixed) == 0.0          # constant prediction
    assert M.matthews_corrcoef(mixed, ones) == 0.0          # gold all one class
    assert M.matthews_corrcoef(ones, ones) == 0.0           # both constant: undefined -> 0
    assert M.matthews_corrcoef(mixed, mixed) == pytest.approx(1.0)
    assert M.matthews_corrcoef(1 - mixed, mixed) == pytest.approx(-1.0)
    assert M.f1(0 * ones, 0 * ones) == 0.0                  # no positive anywhere
    assert M.f1(ones, mixed) == pytest.approx(2 * 4 / (2 * 4 + 2))
    assert M.accuracy(ones, mixed) == pytest.approx(4 / 6)
    assert M.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0
    assert M.spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == 0.0


def test_correlations_by_hand():
    # dx = -1.5 -.5 .5 1.5, dy = -3 -1 0 4: sum dx dy = 11, sum dx^2 = 5, sum dy^2 = 26
    assert M.pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(5 * 26))
    assert M.rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert M.rankdata([3, 3, 3]).tolist() == [2.0, 2.0, 2.0]
    # ranks 1 2.5 2.5 4 against 1 3 2 4: sum dx dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5
    assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    x = np.arange(1.0, 6.0)
    assert M.spearman(x, x ** 3) == pytest.approx(1.0) and M.pearson(x, x ** 3) < 0.99
    assert M.spearman(x, -x) == pytest.approx(-1.0)


def test_compute_from_logits_predictions_and_task_info():
    logits = np.array([[2.0, 1.0], [0.1, 0.3], [5.0, -1.0], [0.0, 4.0]])    # argmax 0 1 0 1
    gold = np.array([0, 0, 0, 1])
    scores = M.compute(["accuracy", "f1", "matthews_corrcoef"], logits, gold)
    assert scores == pytest.approx({"accuracy": 0.75, "f1": 2 / 3, "matthews_corrcoef": 1 / math.sqrt(3)})
    assert M.compute("accuracy", np.array([0, 1, 0, 1]), gold) == {"accuracy": 0.75}
    info = task_info("nli")
    three = np.eye(3)[[0, 1, 2, 1]]
    out = M.compute(info, three, np.array([0, 1, 2, 2]))
    assert list(out) == ["accuracy", "f1", "matthews_corrcoef"] and out["accuracy"] == 0.75
    # with the TaskInfo, labels 0/1 only are still scored as 3-class (macro F1 over classes 0, 1)
    assert M.compute(info, np.array([0, 1, 1]), np.array([0, 1, 0]))["f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    reg = M.compute(["pearson", "spearman"], np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([2, 4, 5, 9]))
    assert reg == pytest.approx({"pearson": 11 / math.sqrt(130), "spearman": 1.0})


@pytest.mark.parametrize("call, message", [
    (lambda: M.accuracy([0, 1], [0, 1, 1]), "same length"),
    (lambda: M.accuracy([], []), "empty"),
    (lambda: M.accuracy([[0, 1]], [[0, 1]]), "1-D"),
    (lambda: M.accuracy([0.0, 1.0], [0, 1]), "integer label ids"),
    (lambda: M.f1([0, -1], [0, 1]), "negative"),
    (lambda: M.f1([0, 2], [0, 1], num_labels=2), "outside"),
    (lambda: M.f1([0, 1], [0, 1], num_labels=1), "num_labels"),
    (lambda: M.pearson([1.0, np.nan], [1.0, 2.0]), "finite"),
    (lambda: M.pearson([1.0, 2.0], [1.0]), "same length"),
    (lambda: M.compute("auc", [0, 1], [0, 1]), "unknown metric 'auc'"),
    (lambda: M.compute(["accuracy", "pearson"], [0, 1], [0, 1]), "cannot mix"),
    (lambda: M.compute([], [0, 1], [0, 1]), "non-empty list"),
    (lambda: M.compute("accuracy", np.zeros((3, 1)), [0, 1, 0]), "K >= 2"),
    (lambda: M.compute(task_info("nli"), np.zeros((3, 2)), [0, 1, 0]), "2 columns, the task has 3"),
    (lambda: M.compute("accuracy", np.zeros((3, 2, 2)), [0, 1, 0]), "logits"),
    (lambda: M.compute("accuracy", np.zeros((3, 2)), [0, 1]), "same length"),
    (lambda: M.compute("pearson", np.zeros((3, 2)), [0.0, 1.0, 2.0]), r"\(N, 1\)"),
])
def test_metric_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_against_definitions_written_another_way():
    """Each metric against a second, differently written definition (no optional dependency needed):
    Matthews as the correlation of the one-hot gold and predicted matrices (Gorodkin's covariance,
    summed over the classes), F1 from counted TP/FP/FN, Spearman from ranks counted pair by pair
    (ties sharing their average rank)."""
    def one_hot_correlation(pred, gold, k):
        a, b = np.eye(k)[gold], np.eye(k)[pred]                 # (N, K) one-hot matrices
        a, b = a - a.mean(0), b - b.mean(0)                     # each class's column centred
        denominator = np.sqrt((a * a).sum() * (b * b).sum())
        return 0.0 if denominator == 0 else float((a * b).sum() / denominator)

    def f1_counted(pred, gold, cls):
        tp = sum(p == cls and g == cls for p, g in zip(pred, gold))
        fp = sum(p == cls and g != cls for p, g in zip(pred, gold))
        fn = sum(p != cls and g == cls for p, g in zip(pred, gold))
        return 0.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)

    def average_ranks(x):
        return np.array([np.sum(x < v) + (np.sum(x == v) + 1) / 2 for v in x])

    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        for _ in range(20):
            n = int(rng.integers(2, 60))
            gold, pred = rng.integers(0, k, n), rng.integers(0, k, n)
            agree = rng.random(n) < 0.5     # better than chance, so the scores are not all near 0
            pred[agree] = gold[agree]
            assert M.accuracy(pred, gold) == pytest.approx(np.mean(pred == gold))
            expected = one_hot_correlation(pred, gold, k)
            assert M.matthews_corrcoef(pred, gold, k) == pytest.approx(expected)
            present = sorted(set(gold) | set(pred))
            expected = f1_counted(pred, gold, 1) if k == 2 else \
                np.mean([f1_counted(pred, gold, c) for c in present])
            assert M.f1(pred, gold, k) == pytest.approx(expected)
    for _ in range(20):
        x = rng.integers(0, 5, 30).astype(float)   # many ties
        y = x + rng.normal(size=30)
        assert M.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
        ranks = np.corrcoef(average_ranks(x), average_ranks(y))[0, 1]
        assert M.spearman(x, y) == pytest.approx(ranks)