"""Scores of a fine-tuned classifier (or regressor), in NumPy only.

Classification (``pred``, ``gold``: integer label ids, shape (N,)):

    accuracy            share of predictions equal to the gold label
    f1                  binary task: F1 of the positive class 1 = 2 TP / (2 TP + FP + FN) (as GLUE's MRPC,
                        QQP); multi-class: macro F1, the unweighted mean of each class's F1 over the classes
                        that occur in ``gold`` or ``pred`` (scikit-learn's ``average="macro"`` default)
    matthews_corrcoef   Matthews correlation (CoLA's metric), Gorodkin's R_K for K classes; 0 when undefined

Regression (``pred``, ``gold``: real numbers, shape (N,)):

    pearson             linear correlation (STS-B's first metric)
    spearman            Pearson correlation of the ranks, tied values sharing their average rank

All of them in terms of the confusion matrix C (K, K), C[i, j] = examples of gold class i predicted as j;
t_k = sum_j C[k, j] (gold counts), p_k = sum_i C[i, k] (predicted counts), c = trace(C) (correct),
s = N:

    accuracy = c / s
    F1_k     = 2 C[k, k] / (t_k + p_k)
    R_K      = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))

For K = 2, R_K is the familiar (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)). It is the Pearson
correlation of the one-hot gold and predicted vectors, so it is 0 for a constant prediction however
skewed the classes, which is why CoLA reports it instead of accuracy.

Undefined cases return 0.0 rather than NaN, so a score can always be compared with a baseline:
R_K when every gold label or every prediction is the same class (a factor of the denominator is 0;
scikit-learn does the same), binary F1 when class 1 occurs in neither ``gold`` nor ``pred``
(scikit-learn's ``zero_division=0``), and the correlations when ``pred`` or ``gold`` is constant
(SciPy returns NaN there; a constant prediction has no linear relation to measure).

``compute`` turns model output into predictions (argmax of logits (N, K), or logits (N, 1) of a
regression head) and returns several scores at once as ``{name: float}``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews_corrcoef")
REGRESSION_METRICS = ("pearson", "spearman")


# ---------------------------------------------------------------------------------------- checks
def _labels(x, name: str, num_labels: int | None = None) -> np.ndarray:
    """``x`` as a 1-D int64 array of label ids in [0, num_labels); ValueError naming the problem."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of label ids (N,), got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer label ids, got dtype {a.dtype} (for logits (N, K) use "
                         f"compute(), which takes the argmax)")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{name} holds the negative label id {a.min()}")
    if num_labels is not None and a.size and a.max() >= num_labels:
        raise ValueError(f"{name} holds the label id {a.max()}, outside [0, {num_labels}) "
                         f"(num_labels = {num_labels})")
    return a


def _pair(pred, gold, num_labels: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked (pred, gold, K): same length N >= 1; K = num_labels, or 1 + the largest id seen (at least 2)."""
    if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer))
                                   or num_labels < 2):
        raise ValueError(f"num_labels must be an integer >= 2 for classification, got {num_labels!r}")
    pred, gold = _labels(pred, "pred", num_labels), _labels(gold, "gold", num_labels)
    _same_length(pred, gold)
    k = int(num_labels) if num_labels is not None else max(2, int(max(pred.max(), gold.max())) + 1)
    return pred, gold, k


def _same_length(pred: np.ndarray, gold: np.ndarray) -> None:
    if len(pred) != len(gold):
        raise ValueError(f"pred and gold must have the same length, got {len(pred)} predictions and "
                         f"{len(gold)} gold labels")
    if len(gold) == 0:
        raise ValueError("pred and gold are empty: a score needs at least one example")


def _reals(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of numbers (N,), got shape {a.shape}")
    if a.size and not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds {a[~np.isfinite(a)][0]}: every value must be finite")
    return a


# ---------------------------------------------------------------------------------------- classification
def confusion_matrix(pred, gold, num_labels: int | None = None) -> np.ndarray:
    """C (K, K) int64 with C[i, j] = number of examples of gold class i predicted as class j.

    K = ``num_labels``, or 1 + the largest label id in ``pred`` and ``gold`` (at least 2).
    """
    pred, gold, k = _pair(pred, gold, num_labels)
    # Each (gold, pred) pair becomes one cell index gold * K + pred; counting them fills the matrix.
    return np.bincount(gold * k + pred, minlength=k * k).reshape(k, k)


def accuracy(pred, gold) -> float:
    """Share of examples with ``pred == gold``."""
    pred, gold, _ = _pair(pred, gold, None)
    return float(np.mean(pred == gold))


def f1(pred, gold, num_labels: int | None = None) -> float:
    """F1 of class 1 when there are two classes; macro F1 over the classes present otherwise.

    ``num_labels`` (K) decides which: pass it, because a 3-class task whose batch only shows labels 0
    and 1 would otherwise be scored as binary. Binary: 2 TP / (2 TP + FP + FN) with class 1 positive,
    0.0 when class 1 occurs in neither ``pred`` nor ``gold``. Multi-class: the mean of F1_k =
    2 C[k, k] / (t_k + p_k) over the classes k with t_k + p_k > 0 (a class absent from both has no F1).
    """
    c = confusion_matrix(pred, gold, num_labels).astype(np.float64)
    tp = np.diag(c)
    denom = c.sum(axis=1) + c.sum(axis=0)   # t_k + p_k = 2 TP + FP + FN
    if len(c) == 2:
        return float(2 * tp[1] / denom[1]) if denom[1] > 0 else 0.0
    present = denom > 0
    return float(np.mean(2 * tp[present] / denom[present]))


def matthews_corrcoef(pred, gold, num_labels: int | None = None) -> float:
    """Matthews correlation coefficient, Gorodkin's R_K for K classes (see the module docstring).

    In [-1, 1]; 1 = perfect, 0 = no better than chance or undefined (all gold labels, or all
    predictions, in one class). For K > 2 the lowest value is above -1.
    """
    c = confusion_matrix(pred, gold, num_labels).astype(np.float64)   # float: s^2 products overflow int64
    t, p = c.sum(axis=1), c.sum(axis=0)
    s, correct = c.sum(), np.trace(c)
    cov_tp = correct * s - p @ t
    cov_pp = s * s - p @ p
    cov_tt = s * s - t @ t
    if cov_pp == 0 or cov_tt == 0:
        return 0.0
    return float(np.clip(cov_tp / np.sqrt(cov_pp * cov_tt), -1.0, 1.0))


# ---------------------------------------------------------------------------------------- regression
def rankdata(x) -> np.ndarray:
    """Ranks 1..N of the values of ``x`` (N,), tied values sharing the mean of their ranks (float64).

    [10, 20, 20, 5] -> [2, 3.5, 3.5, 1]: the two 20s would take ranks 3 and 4, so both get 3.5.
    """
    x = _reals(x, "x")
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])   # where each run of equal values starts
    counts = np.diff(np.r_[first, len(x)])
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)        # the mean of ranks first + 1 .. first + counts
    return ranks


def pearson(pred, gold) -> float:
    """Pearson correlation sum(dx dy) / sqrt(sum(dx^2) sum(dy^2)), d = deviation from the mean; 0.0 when
    either input is constant."""
    x, y = _reals(pred, "pred"), _reals(gold, "gold")
    _same_length(x, y)
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = dx @ dx, dy @ dy
    if sxx == 0 or syy == 0:
        return 0.0
    return float(np.clip((dx @ dy) / np.sqrt(sxx * syy), -1.0, 1.0))


def spearman(pred, gold) -> float:
    """Spearman's rank correlation: ``pearson`` of the ranks (ties get their average rank); 0.0 when
    either input is constant."""
    x, y = _reals(pred, "pred"), _reals(gold, "gold")
    _same_length(x, y)
    return pearson(rankdata(x), rankdata(y))


# ---------------------------------------------------------------------------------------- several at once
def predictions(logits_or_predictions, num_labels: int | None = None) -> np.ndarray:
    """Label ids (N,) int64 from logits (N, K) (argmax; the first maximum on a tie) or from ids (N,).

    ``num_labels`` given: logits must have exactly that many columns.
    """
    a = np.asarray(logits_or_predictions)
    if a.ndim == 2:
        if a.shape[1] < 2:
            raise ValueError(f"classification logits must have shape (N, K) with K >= 2 classes, got {a.shape} "
                             f"(one column is a regression head: score it with pearson/spearman)")
        if num_labels is not None and a.shape[1] != num_labels:
            raise ValueError(f"logits have {a.shape[1]} columns, the task has {num_labels} labels")
        if not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"logits must be numbers, got dtype {a.dtype}")
        return np.argmax(a, axis=1).astype(np.int64)
    if a.ndim == 1:
        return _labels(a, "predictions", num_labels)
    raise ValueError(f"expected logits (N, K) or predicted label ids (N,), got shape {a.shape}")


def regression_predictions(outputs_or_predictions) -> np.ndarray:
    """Predicted values (N,) float64 from a regression head's outputs (N, 1) or from values (N,)."""
    a = np.asarray(outputs_or_predictions)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim != 1:
        raise ValueError(f"regression outputs must have shape (N, 1) or (N,), got {a.shape}")
    return _reals(a, "predictions")


def compute(metrics, logits_or_predictions, gold) -> dict[str, float]:
    """``{name: score}`` of model output against ``gold`` (N,).

    ``metrics``: a metric name, a list of names (all classification or all regression), or a TaskInfo
    (``minibert.finetuning.data``): then its own metric comes first, followed by the other metrics of
    its kind, and its ``num_labels`` is checked against the logits and the labels.
    ``logits_or_predictions``: classification logits (N, K) or label ids (N,); regression outputs (N, 1)
    or values (N,). Without a TaskInfo, K for F1 is the logits' width, else inferred from the ids.
    """
    num_labels = None
    if hasattr(metrics, "metric") and hasattr(metrics, "num_labels"):   # a TaskInfo (not imported: no cycle)
        kind = REGRESSION_METRICS if metrics.num_labels == 1 else CLASSIFICATION_METRICS
        names = [metrics.metric] + [m for m in kind if m != metrics.metric]
        num_labels = None if metrics.num_labels == 1 else metrics.num_labels
    elif isinstance(metrics, str):
        names = [metrics]
    elif isinstance(metrics, Sequence) and metrics and all(isinstance(m, str) for m in metrics):
        names = list(metrics)
    else:
        raise ValueError(f"metrics must be a metric name, a non-empty list of names or a TaskInfo, got {metrics!r}")
    unknown = [m for m in names if m not in CLASSIFICATION_METRICS + REGRESSION_METRICS]
    if unknown:
        known = ", ".join(CLASSIFICATION_METRICS + REGRESSION_METRICS)
        raise ValueError(f"unknown metric {unknown[0]!r}; known: {known}")
    regression = [m in REGRESSION_METRICS for m in names]
    if any(regression) and not all(regression):
        raise ValueError(f"cannot mix classification metrics ({', '.join(CLASSIFICATION_METRICS)}) and regression "
                         f"metrics ({', '.join(REGRESSION_METRICS)}) in one call, got {names}")
    if all(regression):
        pred, gold = regression_predictions(logits_or_predictions), _reals(gold, "gold")
        _same_length(pred, gold)
        return {m: {"pearson": pearson, "spearman": spearman}[m](pred, gold) for m in names}
    out = np.asarray(logits_or_predictions)
    if num_labels is None and out.ndim == 2:
        num_labels = out.shape[1]
    pred = predictions(out, num_labels)
    gold = _labels(gold, "gold", num_labels)
    _same_length(pred, gold)
    scores = {"accuracy": lambda: accuracy(pred, gold), "f1": lambda: f1(pred, gold, num_labels),
              "matthews_corrcoef": lambda: matthews_corrcoef(pred, gold, num_labels)}
    return {m: scores[m]() for m in names}
