"""matplotlib figures, written to PNG files.

Figures are built as ``matplotlib.figure.Figure`` objects, not through pyplot, so saving one needs no
display and does not change the backend of the caller (a notebook keeps showing its own figures inline).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def _subplots(nrows=1, ncols=1, **kwargs):
    fig = Figure(**kwargs)
    return fig, fig.subplots(nrows, ncols)


def read_jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def smooth(values, window: int):
    """Trailing moving average (the first points average what exists so far)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0 or window <= 1:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    lo = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (c[1:] - c[lo]) / (np.arange(1, len(values) + 1) - lo)


def plot_pretraining(metrics_path, out_path, mlm_baseline: float | None = None,
                     nsp_majority: float | None = None) -> Path:
    """Three panels from a pretraining metrics.jsonl, written to ``out_path``: losses, held-out
    accuracies, learning rate (see ``pretraining_figure``)."""
    fig = pretraining_figure(read_jsonl(metrics_path), mlm_baseline, nsp_majority)
    fig.savefig(out_path, dpi=100)
    return Path(out_path)


def pretraining_figure(records: list[dict], mlm_baseline: float | None = None,
                       nsp_majority: float | None = None) -> Figure:
    """The figure of ``plot_pretraining`` from the records of a metrics.jsonl.

    ``mlm_baseline`` (the accuracy of always predicting the most frequent masked token) and
    ``nsp_majority`` (the accuracy of always predicting the more frequent next-sentence label) are
    drawn on the accuracy panel when given; NSP chance, 0.5, always is.
    """
    # A resumed run appends; keep the last record of each step.
    by_step = {r["step"]: r for r in records}
    records = [by_step[s] for s in sorted(by_step)]
    steps = [r["step"] for r in records]
    window = max(1, len(records) // 50)
    fig, axes = _subplots(1, 3, figsize=(15, 4.2))
    for key, label in (("loss", "total"), ("mlm_loss", "masked LM"), ("nsp_loss", "next sentence")):
        axes[0].plot(steps, smooth([r[key] for r in records], window), label=label)
    evals = [r for r in records if "eval_mlm_loss" in r]
    eval_steps = [r["step"] for r in evals]
    if evals:
        axes[0].plot(eval_steps, [r["eval_mlm_loss"] for r in evals], "o-",
                     label="masked LM (held out)")
        axes[1].plot(eval_steps, [r["eval_mlm_accuracy"] for r in evals], "o-", color="C0",
                     label="masked LM accuracy")
        axes[1].plot(eval_steps, [r["eval_nsp_accuracy"] for r in evals], "o-", color="C1",
                     label="NSP accuracy")
    if mlm_baseline is not None:
        axes[1].axhline(mlm_baseline, color="C0", lw=1, ls="--",
                        label=f"MLM: most frequent token ({mlm_baseline:.3f})")
    axes[1].axhline(0.5, color="C1", lw=0.8, ls=":", label="NSP: chance (0.5)")
    if nsp_majority is not None:
        axes[1].axhline(nsp_majority, color="C1", lw=1, ls="--",
                        label=f"NSP: majority label ({nsp_majority:.3f})")
    axes[0].set(title=f"training loss (moving average of {window})", xlabel="step", ylabel="loss")
    axes[1].set(title="held-out accuracy", xlabel="step", ylim=(0, 1))
    axes[2].plot(steps, [r["lr"] for r in records])
    axes[2].set(title="learning rate", xlabel="step")
    axes[0].legend(fontsize=8, loc="best")
    # Below the panel: inside, five entries would cover the curves, which span most of [0, 1].
    axes[1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    return fig


def plot_parity(ours, theirs, out_path, labels=("minibert", "Hugging Face (PyTorch)"),
                title: str | None = None) -> Path:
    """Two training-loss curves of the same run on one figure, and their absolute difference on a log scale.

    ``ours`` and ``theirs`` are the losses of steps 1, 2, ...; the second panel shows |ours - theirs|,
    which for a faithful re-implementation is float32 rounding that grows slowly as the runs drift apart.
    """
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    if ours.shape != theirs.shape or ours.ndim != 1 or len(ours) == 0:
        raise ValueError(f"need two equally long, non-empty loss sequences, got shapes {ours.shape} and {theirs.shape}")
    steps = np.arange(1, len(ours) + 1)
    fig, axes = _subplots(1, 2, figsize=(12, 4))
    axes[0].plot(steps, ours, lw=2.5, alpha=0.6, label=labels[0])
    axes[0].plot(steps, theirs, lw=1, ls="--", color="black", label=labels[1])
    axes[0].set(title=title or "training loss, same weights and batches", xlabel="step", ylabel="loss (MLM + NSP)")
    axes[0].legend()
    diff = np.abs(ours - theirs)
    equal = diff == 0
    axes[1].semilogy(steps[~equal], diff[~equal], ".", ms=5, label="|difference|")
    if equal.any():
        # A log axis cannot show 0: draw equal losses at the float32 spacing of the loss, marked apart.
        spacing = np.spacing(np.abs(theirs[equal]).astype(np.float32)).astype(float)
        axes[1].semilogy(steps[equal], spacing, "x", ms=5, color="gray",
                         label="equal (drawn at float32 spacing)")
        # Under the panel: the points fill its whole height, so a legend inside covers some.
        axes[1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    axes[1].set(title=f"|difference|, largest {diff.max():.1e}", xlabel="step")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    return Path(out_path)
