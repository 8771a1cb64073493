"""Linear probes: softmax regression on frozen features, with our own layers and optimiser.

    logits = x W^T + b           minibert.functional.linear_forward / linear_backward
    loss   = mean cross-entropy  minibert.functional.cross_entropy_forward / cross_entropy_backward
    update                       minibert.optim.AdamW

A probe that reaches high accuracy shows that a feature is *linearly decodable* from a layer; it does
not show that the model uses it. A probe can also succeed by memorising words. Hewitt & Liang (2019)
measure that with a **control task**: every word type gets a random label (drawn from the real task's
label distribution), so the only way to predict it is to remember which word was where. A probe is
*selective* when its accuracy on the real task is well above its accuracy on the control task:
    selectivity = accuracy(real task) - accuracy(control task)    (both on held-out words)
"""
from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from minibert import functional as F
from minibert.optim import AdamW
from minibert.validation import positive_int


@dataclasses.dataclass
class ProbeConfig:
    """A fixed number of updates whatever the data size (a small task gets more epochs, so every probe
    is trained about equally far)."""
    steps: int = 1500
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            positive_int(f"ProbeConfig.{name}", getattr(self, name))
        if not self.lr > 0:
            raise ValueError(f"ProbeConfig.lr must be positive, got {self.lr!r}")


class LinearProbe:
    """Softmax regression (H -> C) on standardised features.

    The features are standardised with the training set's mean and standard deviation: an affine map
    does not change what a linear probe can express, but it lets one learning rate suit every layer
    (the embedding output and the encoder layers have different scales).
    """

    def __init__(self, num_features: int, num_classes: int, rng: np.random.Generator):
        if num_classes < 2:
            raise ValueError(f"a probe needs at least 2 classes, got {num_classes}")
        self.weight = (rng.standard_normal((num_classes, num_features)) * 0.01).astype(np.float32)  # (C, H)
        self.bias = np.zeros(num_classes, np.float32)                                               # (C,)
        self.dweight, self.dbias = np.zeros_like(self.weight), np.zeros_like(self.bias)
        self.mean = np.zeros(num_features, np.float32)
        self.std = np.ones(num_features, np.float32)

    def _scale(self, x):
        return ((np.asarray(x, np.float32) - self.mean) / self.std).astype(np.float32)

    def logits(self, x) -> np.ndarray:
        """(N, H) -> (N, C)."""
        return F.linear_forward(self._scale(x), self.weight, self.bias)[0]

    def predict(self, x) -> np.ndarray:
        return self.logits(x).argmax(-1)

    def accuracy(self, x, y) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())

    def fit(self, x, y, rng: np.random.Generator, config: ProbeConfig | None = None) -> list[float]:
        """Minibatch AdamW on the mean cross-entropy for ``config.steps`` updates (whole epochs of
        shuffled minibatches, the last one cut short); returns the mean loss of each epoch."""
        config = config or ProbeConfig()
        x = np.asarray(x, np.float32)
        y = np.asarray(y)
        if x.ndim != 2 or x.shape[1] != self.weight.shape[1] or y.shape != (len(x),):
            raise ValueError(f"expected x (N, {self.weight.shape[1]}) and y (N,), got {x.shape} and {y.shape}")
        if len(x) == 0:
            raise ValueError("cannot fit a probe on zero examples")
        if y.min() < 0 or y.max() >= len(self.bias):
            raise ValueError(f"labels must be in [0, {len(self.bias)}), got [{y.min()}, {y.max()}]")
        self.mean = x.mean(0)
        std = x.std(0)
        self.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)   # a constant feature is left unscaled
        xs = self._scale(x)
        opt = AdamW([("weight", self.weight, self.dweight), ("bias", self.bias, self.dbias)],
                    lr=config.lr, weight_decay=config.weight_decay, eps=1e-8)
        history, step = [], 0
        while step < config.steps:
            order = rng.permutation(len(xs))
            total, seen = 0.0, 0
            for s in range(0, len(order), config.batch_size):
                if step == config.steps:
                    break
                idx = order[s:s + config.batch_size]
                logits, cache = F.linear_forward(xs[idx], self.weight, self.bias)     # (N, C)
                loss, ce_cache = F.cross_entropy_forward(logits, y[idx])
                self.dweight.fill(0)
                self.dbias.fill(0)
                F.linear_backward(F.cross_entropy_backward(1.0, ce_cache), cache, self.dweight, self.dbias)
                opt.step()
                total += float(loss) * len(idx)
                seen += len(idx)
                step += 1
            history.append(total / seen)
        return history


def control_labels(types, labels, rng: np.random.Generator) -> np.ndarray:
    """Hewitt & Liang's control task: one random label per word *type*, drawn from the empirical
    distribution of ``labels``; every token of a type gets its type's label.

    types: N hashable word types (e.g. lower-cased words); labels: N integer labels of the real task.
    Types are visited in sorted order, so the result depends only on the data and ``rng``.
    """
    types = list(types)
    labels = np.asarray(labels)
    if len(types) != len(labels):
        raise ValueError(f"got {len(types)} types but {len(labels)} labels")
    classes, counts = np.unique(labels, return_counts=True)
    vocab = sorted(set(types))
    drawn = rng.choice(classes, size=len(vocab), p=counts / counts.sum())
    table = dict(zip(vocab, drawn))
    return np.asarray([table[t] for t in types], dtype=labels.dtype)


def majority_accuracy(train_labels, test_labels) -> float:
    """Accuracy of always predicting the most frequent training label."""
    top = Counter(np.asarray(train_labels).tolist()).most_common(1)[0][0]
    return float((np.asarray(test_labels) == top).mean())


def probe_layers(features, labels, train, num_classes: int, rng: np.random.Generator,
                 config: ProbeConfig | None = None, control=None) -> dict:
    """Fit one probe per layer and report held-out accuracy (and control accuracy, selectivity).

    features (L+1, N, H): the same N examples read at every layer; labels (N,); train (N,) bool, True
    for training examples (the rest is the test set); control (N,) control-task labels or None.
    Returns lists over layers: ``train_accuracy``, ``test_accuracy`` and, with a control task,
    ``control_accuracy`` and ``selectivity`` (and ``control_majority``, the control task's own
    majority baseline: a few frequent word types can skew it); plus ``majority`` (the majority-label
    baseline of the real task).
    """
    features = np.asarray(features)
    labels = np.asarray(labels)
    train = np.asarray(train, bool)
    if features.ndim != 3 or features.shape[1] != len(labels) or train.shape != labels.shape:
        raise ValueError(f"expected features (L+1, N, H), labels (N,), train (N,); got {features.shape}, "
                         f"{labels.shape}, {train.shape}")
    if train.all() or not train.any():
        raise ValueError("the split needs both training and test examples")
    test = ~train
    out = {"train_accuracy": [], "test_accuracy": [], "majority": majority_accuracy(labels[train], labels[test]),
           "n_train": int(train.sum()), "n_test": int(test.sum())}
    if control is not None:
        control = np.asarray(control)
        out.update(control_accuracy=[], selectivity=[],
                   control_majority=majority_accuracy(control[train], control[test]))
    for x in features:
        probe = LinearProbe(x.shape[1], num_classes, rng)
        probe.fit(x[train], labels[train], rng, config)
        out["train_accuracy"].append(probe.accuracy(x[train], labels[train]))
        out["test_accuracy"].append(probe.accuracy(x[test], labels[test]))
        if control is not None:
            ctrl = LinearProbe(x.shape[1], num_classes, rng)
            ctrl.fit(x[train], control[train], rng, config)
            out["control_accuracy"].append(ctrl.accuracy(x[test], control[test]))
            out["selectivity"].append(out["test_accuracy"][-1] - out["control_accuracy"][-1])
    return out
