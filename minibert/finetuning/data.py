"""Fine-tuning data: a task's examples read, checked, encoded as BERT inputs and cut into batches.

    info = task_info("entailment")              # input fields, label names, metric, majority baselines
    examples = load_examples(info, "train")     # [{"premise": ..., "hypothesis": ..., "label": 1, ...}, ...]
    encoded = encode(examples, tokenizer, info)  # padded arrays (N, T) and labels (N,)
    for batch in batches(encoded, 32, rng):      # dicts named like the model's forward arguments
        out = model.forward(**batch)

A single text becomes ``[CLS] A [SEP]`` with segment (token type) ids 0; a pair becomes
``[CLS] A [SEP] B [SEP]`` with segment ids 0 for ``[CLS] A [SEP]`` and 1 for ``B [SEP]``, the input
format BERT saw in pretraining. Texts longer than ``max_length`` tokens are cut from the end of the
longer text of the pair (``BertTokenizer.encode``); the bundled tasks never need it (their longest
input is 28 tokens).

The bundled tasks (``data/tasks/<name>/{train,dev,test}.jsonl``, described in ``data/README.md``) are
described in ``data/manifest.json``; ``TASKS`` lists them. Each line of a task file is a JSON object
with the input fields (``sentence``, or ``premise`` and ``hypothesis``), an integer ``label`` (an index
into the task's label names) and extra fields that describe the item (``phenomenon``, ``shape``,
``change``, ...): ``load_examples`` keeps those, so results can be broken down by them.

Your own task is a folder holding ``train.jsonl`` (``dev.jsonl`` and ``test.jsonl`` as you have them)
and a ``task.json`` such as

    {"inputs": ["question", "passage"], "labels": ["no", "yes"], "metric": "accuracy"}

``inputs`` names one or two text fields of every line (two make a pair, in that order); ``labels``
names the classes, and a line's ``label`` is either a class index (0-based) or one of these names;
``"labels": null`` declares a regression task (``label`` is a number, ``num_labels`` 1: the model
fits it with a mean squared error). ``metric`` is optional (default ``accuracy``, or ``pearson`` for
regression; see ``minibert.finetuning.metrics``) and so is ``name`` (default: the folder's name).
Pass the folder's path wherever a task name is accepted.

The majority baseline of a split is the score of always predicting the most frequent label of the
training split (the lowest label id among equally frequent ones), or for regression the training
mean. A fine-tuning run "fails" when its dev score is no better (Mosbach et al. 2021).

Shape legend: N examples, B batch size, T tokens (padded length).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from minibert.finetuning import metrics as M
from minibert.paths import data_dir
from minibert.tokenization import BertTokenizer
from minibert.tokenization.vocab import decode_utf8
from minibert.validation import generator, positive_int

# The bundled tasks; a test checks that data/manifest.json describes exactly these.
TASKS = ("acceptability", "sentiment", "entailment", "nli")
SPLITS = ("train", "dev", "test")
TASK_FILE = "task.json"


# ---------------------------------------------------------------------------------------- the task
@dataclasses.dataclass
class TaskInfo:
    """What a task is: where its files are, which fields are the inputs, what the labels mean.

    ``labels`` are the class names (label id = position); empty for a regression task.
    ``num_labels`` is len(labels), or 1 for regression (as ``BertConfig.num_labels``).
    ``metric`` is the score that selects models and decides failed runs.
    ``majority_baseline`` and ``sizes`` are per split (only the splits that exist).
    """

    name: str
    inputs: list[str]
    labels: list[str]
    metric: str
    majority_baseline: dict[str, float]
    num_labels: int
    directory: Path
    sizes: dict[str, int]

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def is_pair(self) -> bool:
        return len(self.inputs) == 2

    def path(self, split: str) -> Path:
        """The file of ``split`` (not checked to exist)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return self.directory / f"{split}.jsonl"


def _check_description(d: dict, source: str) -> tuple[list[str], list[str], str]:
    """(inputs, labels, metric) of a task description (a manifest entry or a task.json), checked."""
    inputs = d.get("inputs")
    if (not isinstance(inputs, list) or len(inputs) not in (1, 2)
            or not all(isinstance(f, str) and f for f in inputs) or len(set(inputs)) != len(inputs)):
        raise ValueError(f"{source}: 'inputs' must list one or two distinct field names (a text, or a pair), "
                         f"got {inputs!r}")
    if "label" in inputs:
        raise ValueError(f"{source}: 'label' is the label field and cannot be an input")
    if "labels" not in d:
        raise ValueError(f"{source}: 'labels' is missing (a list of class names, or null for regression)")
    labels = d["labels"]
    if labels is None:
        labels = []
    elif (not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels)
          or len(set(labels)) != len(labels)):
        raise ValueError(f"{source}: 'labels' must list at least two distinct class names (or be null for a "
                         f"regression task), got {labels!r}")
    kind = M.CLASSIFICATION_METRICS if labels else M.REGRESSION_METRICS
    metric = d.get("metric", kind[0])
    if metric not in kind:
        raise ValueError(f"{source}: metric {metric!r} does not score a "
                         f"{'classification' if labels else 'regression'} task; expected one of {', '.join(kind)}")
    return list(inputs), list(labels), metric


def _bundled_info(name: str) -> TaskInfo:
    path = data_dir() / "manifest.json"
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))["tasks"]
        entry = tasks[name]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: no usable 'tasks' entry for {name!r} ({type(exc).__name__}: {exc}); "
                         f"regenerate the data with `minibert corpus`") from None
    inputs, labels, metric = _check_description(entry, f"{path} (task {name!r})")
    return TaskInfo(name=name, inputs=inputs, labels=labels, metric=metric,
                    majority_baseline={s: float(v) for s, v in entry["majority_baseline"].items()},
                    num_labels=len(labels) or 1, directory=data_dir() / "tasks" / name,
                    sizes={s: int(v) for s, v in entry["sizes"].items()})


def _folder_info(directory: Path) -> TaskInfo:
    if not directory.is_dir():
        raise FileNotFoundError(f"task folder not found: {directory}")
    description = directory / TASK_FILE
    if not description.is_file():
        raise FileNotFoundError(f"{description} not found: a task folder needs a {TASK_FILE} such as "
                                f'{{"inputs": ["sentence"], "labels": ["negative", "positive"]}}')
    try:
        d = json.loads(decode_utf8(description.read_bytes(), description))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{description}: not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{description}: expected a JSON object, got {type(d).__name__}")
    unknown = set(d) - {"name", "inputs", "labels", "metric"}
    if unknown:
        raise ValueError(f"{description}: unknown keys {sorted(unknown)}; expected name, inputs, labels, metric")
    inputs, labels, metric = _check_description(d, str(description))
    name = d.get("name", directory.name)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{description}: 'name' must be a non-empty string, got {name!r}")
    if not (directory / "train.jsonl").is_file():
        raise FileNotFoundError(f"{directory / 'train.jsonl'} not found: a task folder needs at least a "
                                f"training split")
    info = TaskInfo(name=name, inputs=inputs, labels=labels, metric=metric, majority_baseline={},
                    num_labels=len(labels) or 1, directory=directory, sizes={})
    # Reading every split now checks the files at once and gives the sizes and baselines.
    gold = {s: _labels_of(_read(info, s, None)) for s in SPLITS if info.path(s).is_file()}
    info.sizes = {s: len(g) for s, g in gold.items()}
    info.majority_baseline = {s: _majority_score(info, gold["train"], g) for s, g in gold.items()}
    return info


def task_info(task: str | os.PathLike | TaskInfo) -> TaskInfo:
    """The TaskInfo of a bundled task (a name in ``TASKS``) or of a task folder (see the module docstring).

    A str that is not a bundled task's name is taken as a folder path if such a folder exists; an
    ``os.PathLike`` is always a folder. A TaskInfo is returned as it is.
    """
    if isinstance(task, TaskInfo):
        return task
    if isinstance(task, str) and task in TASKS:
        return _bundled_info(task)
    if isinstance(task, os.PathLike) or (isinstance(task, str) and task and Path(task).is_dir()):
        return _folder_info(Path(task))
    raise ValueError(f"unknown task {task!r}; the bundled tasks are {', '.join(TASKS)} (or give the path of a "
                     f"folder with train.jsonl and {TASK_FILE})")


# ---------------------------------------------------------------------------------------- reading
def _check_label(value, info: TaskInfo, where: str) -> int | float:
    """The label id (classification) or value (regression) of a raw ``label`` field."""
    if info.is_regression:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: label {value!r} is not a finite number (task {info.name!r} is a "
                             f"regression task)")
        return float(value)
    k = info.num_labels
    if isinstance(value, str):
        if value not in info.labels:
            raise ValueError(f"{where}: label {value!r} is not one of the label names {info.labels}")
        return info.labels.index(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: label {value!r} must be a label id 0..{k - 1} or a label name "
                         f"({', '.join(info.labels)})")
    if not 0 <= value < k:
        raise ValueError(f"{where}: label {value} is outside 0..{k - 1} (task {info.name!r} has {k} labels: "
                         f"{', '.join(info.labels)})")
    return value


def _check_example(row, info: TaskInfo, where: str) -> dict:
    """A copy of ``row`` with its inputs checked and ``label`` normalised (id or value)."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for field in (*info.inputs, "label"):
        if field not in row:
            raise ValueError(f"{where}: the field {field!r} is missing (task {info.name!r} needs "
                             f"{', '.join(info.inputs)} and label)")
    for field in info.inputs:
        text = row[field]
        if not isinstance(text, str):
            raise ValueError(f"{where}: {field!r} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{where}: {field!r} is empty")
    return {**row, "label": _check_label(row["label"], info, where)}


def _read(info: TaskInfo, split: str, limit: int | None) -> list[dict]:
    path = info.path(split)
    if not path.is_file():
        present = [s for s in SPLITS if info.path(s).is_file()]
        raise FileNotFoundError(f"{path} not found: task {info.name!r} has the splits "
                                f"{', '.join(present) or '(none)'}")
    examples = []
    for lineno, line in enumerate(decode_utf8(path.read_bytes(), path).split("\n"), start=1):
        if limit is not None and len(examples) == limit:
            break
        if not line.strip():
            continue  # blank lines (a trailing one, say) hold no example
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        examples.append(_check_example(row, info, where))
    if not examples:
        raise ValueError(f"{path}: no examples (the file is empty)")
    return examples


def load_examples(task: str | os.PathLike | TaskInfo, split: str, limit: int | None = None) -> list[dict]:
    """The examples of ``split`` ("train", "dev" or "test"), in file order: the first ``limit`` if given.

    Each example is its JSON object with ``label`` as a label id (int; a label name in the file is
    converted) or, for regression, a float. Raises FileNotFoundError for a missing file, ValueError
    naming file and line for invalid JSON, a missing or empty input field, or a bad label.
    """
    info = task_info(task)
    return _read(info, split, None if limit is None else positive_int("limit", limit))


def _labels_of(examples: Sequence[dict]) -> np.ndarray:
    return np.array([e["label"] for e in examples])


def _majority_score(info: TaskInfo, train_gold: np.ndarray, gold: np.ndarray) -> float:
    if info.is_regression:
        return M.compute(info, np.full(len(gold), train_gold.mean()), gold)[info.metric]
    majority = int(np.argmax(np.bincount(train_gold, minlength=info.num_labels)))   # first maximum on a tie
    pred = np.full(len(gold), majority, dtype=np.int64)
    return M.compute(info, pred, gold)[info.metric]   # the TaskInfo gives num_labels (binary or macro F1)


def majority_score(task: str | os.PathLike | TaskInfo, split: str) -> float:
    """The task's metric on ``split`` of always predicting the training split's most frequent label
    (regression: the training mean), computed from the files (not rounded, unlike the manifest)."""
    info = task_info(task)
    train_gold = _labels_of(_read(info, "train", None))
    gold = train_gold if split == "train" else _labels_of(_read(info, split, None))
    return _majority_score(info, train_gold, gold)


# ---------------------------------------------------------------------------------------- encoding
@dataclasses.dataclass
class Encoded:
    """A task split as BERT inputs, padded with [PAD] (id 0, segment 0, mask 0) to its longest sequence.

    input_ids, token_type_ids, attention_mask: (N, T) int64; labels: (N,) int64 label ids, or float32
    values for a regression task; lengths: (N,) int64 real tokens per example (specials included);
    num_truncated: examples cut to ``max_length``.
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    num_truncated: int = 0

    def __len__(self) -> int:
        return len(self.labels)


def encode(examples: Sequence[dict], tokenizer: BertTokenizer, task: str | os.PathLike | TaskInfo,
           max_length: int = 128) -> Encoded:
    """``examples`` (as ``load_examples`` returns them) as padded arrays; see ``Encoded``.

    T is the longest encoded example, at most ``max_length``: padding every split to ``max_length``
    would only make every batch longer.
    """
    info = task_info(task)
    n_special = 3 if info.is_pair else 2
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < n_special + 1:
        raise ValueError(f"max_length must be an integer >= {n_special + 1} (the {n_special} special tokens of "
                         f"{'[CLS] A [SEP] B [SEP]' if info.is_pair else '[CLS] A [SEP]'} and at least one token), "
                         f"got {max_length!r}")
    max_length = int(max_length)
    if isinstance(examples, (str, dict)) or not isinstance(examples, Sequence) or not examples:
        raise ValueError(f"examples must be a non-empty list of dicts, got {type(examples).__name__}"
                         f"{' (empty)' if isinstance(examples, Sequence) and not examples else ''}")
    rows, labels, num_truncated = [], [], 0
    for i, example in enumerate(examples):
        example = _check_example(example, info, f"example {i}")
        texts = [example[f] for f in info.inputs]
        enc = tokenizer.encode(*texts)
        if len(enc) > max_length:
            # Encoding twice only for the (rare) long examples lets us count them.
            num_truncated += 1
            enc = tokenizer.encode(*texts, max_length=max_length)
        rows.append(enc)
        labels.append(example["label"])
    lengths = np.array([len(enc) for enc in rows], dtype=np.int64)
    N, T = len(rows), int(lengths.max())
    input_ids = np.full((N, T), tokenizer.pad_token_id, dtype=np.int64)
    token_type_ids = np.zeros((N, T), dtype=np.int64)
    for i, enc in enumerate(rows):
        input_ids[i, :len(enc)] = enc.input_ids
        token_type_ids[i, :len(enc)] = enc.token_type_ids
    attention_mask = (np.arange(T) < lengths[:, None]).astype(np.int64)   # (N, T): 1 up to each length
    label_dtype = np.float32 if info.is_regression else np.int64
    return Encoded(input_ids, token_type_ids, attention_mask, np.array(labels, dtype=label_dtype), lengths,
                   num_truncated)


def batches(encoded: Encoded, batch_size: int, rng: np.random.Generator | None = None
            ) -> Iterator[dict[str, np.ndarray]]:
    """One pass over ``encoded`` in batches of ``batch_size`` (the last one smaller if N is not a multiple).

    ``rng`` shuffles the examples (``rng.permutation(N)``, so it advances the generator: each epoch gets
    a new order, and a seed makes the sequence of orders repeatable); None keeps file order.

    Each batch is a dict with input_ids, token_type_ids, attention_mask (B, T_b) and labels (B,),
    ready for ``model.forward(**batch)``. T_b is the longest sequence in the batch, not of the whole
    split: the columns cut off are padding in every row of the batch, and padding changes no output
    at a real position (its keys are masked out of attention), so the result is the same while the
    work shrinks (attention costs grow as T_b^2, everything else as T_b).
    """
    if not isinstance(encoded, Encoded):
        raise ValueError(f"batches expects an Encoded (from encode()), got {type(encoded).__name__}")
    positive_int("batch_size", batch_size)
    if rng is not None:
        generator("rng", rng)
    N = len(encoded)
    order = np.arange(N) if rng is None else rng.permutation(N)
    for start in range(0, N, batch_size):
        idx = order[start:start + batch_size]
        t = int(encoded.lengths[idx].max())
        yield {"input_ids": encoded.input_ids[idx, :t],   # fancy indexing copies: contiguous (B, T_b)
               "token_type_ids": encoded.token_type_ids[idx, :t],
               "attention_mask": encoded.attention_mask[idx, :t],
               "labels": encoded.labels[idx]}
