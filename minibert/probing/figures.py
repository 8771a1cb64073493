"""The probes' figures, written to PNG files. Every figure shows the probed model beside its
baselines: the same model's embedding layer and a randomly initialised model of the same size.

Figures are ``matplotlib.figure.Figure`` objects, not pyplot's, so drawing one changes no backend (a
notebook keeps its inline figures), as in ``minibert.plots``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

COLORS = {"model": "C0", "embeddings": "C2", "random": "C3", "baseline": "0.45"}


def _subplots(nrows=1, ncols=1, squeeze=True, **kwargs):
    fig = Figure(**kwargs)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _save(fig, path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def _legend_beside(ax):
    """The legend right of the axes: bars and curves reach any height, so inside it covers some."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def _bars(ax, groups, series: dict, labels: dict, chance=None):
    """Grouped bars: ``series[name][g]`` for g in groups (None is drawn as no bar)."""
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        vals = [np.nan if values.get(g) is None else values[g] for g in groups]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=labels.get(name, name),
               color=COLORS.get(name))
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=0.8, label="chance")
    ax.set_xticks(x, groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.02)


def plot_agreement(results: dict, labels: dict, path) -> Path:
    """Accuracy by number of attractors (left) and by construction (right), with the nearest-noun
    baseline."""
    fig, axes = _subplots(1, 2, figsize=(12, 4))
    any_run = next(iter(results.values()))
    baseline = any_run["nearest_noun_baseline"]
    att = sorted(any_run["by_attractors"], key=int)
    for name, r in results.items():
        axes[0].plot([int(a) for a in att], [r["by_attractors"][a]["accuracy"] for a in att], "o-",
                     color=COLORS.get(name), label=labels.get(name, name))
    axes[0].plot([int(a) for a in att], [baseline["by_attractors"][a]["accuracy"] for a in att], "s--",
                 color=COLORS["baseline"], label="agree with the nearest noun")
    axes[0].axhline(0.5, color="gray", lw=0.8, ls=":")
    axes[0].set(title="subject-verb agreement by attractors", xlabel="attractors (nouns of the other number)",
                ylabel="accuracy", ylim=(0, 1.02), xticks=[int(a) for a in att])
    axes[0].legend(fontsize=8)
    cons = list(any_run["by_construction"])
    series = {name: {c: r["by_construction"][c]["accuracy"] for c in cons} for name, r in results.items()}
    series["baseline"] = {c: baseline["by_construction"][c]["accuracy"] for c in cons}
    _bars(axes[1], cons, series, {**labels, "baseline": "nearest noun"}, chance=0.5)
    axes[1].set(title="by construction (all attractor counts)", ylabel="accuracy")
    _legend_beside(axes[1])
    return _save(fig, path)


def plot_cloze_bars(results: dict, labels: dict, metrics: dict, title: str, path, chance=None) -> Path:
    """One group of bars per metric: ``metrics`` maps a display name to a function of a run's result."""
    fig, ax = _subplots(figsize=(max(6, 1.4 * len(metrics) + 2), 4))
    series = {name: {m: f(r) for m, f in metrics.items()} for name, r in results.items()}
    _bars(ax, list(metrics), series, labels, chance)
    ax.set(title=title, ylabel="accuracy / rate")
    _legend_beside(ax)
    return _save(fig, path)


def plot_layers(results: dict, labels: dict, path) -> Path:
    """Held-out probe accuracy per layer for every task: model (solid), random model (dashed),
    control task (dotted), majority baseline (gray)."""
    tasks = [t for t, r in next(iter(results.values())).items() if "skipped" not in r]
    if not tasks:
        raise ValueError("plot_layers: every task was skipped")
    cols = min(3, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = _subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for name, res in results.items():
            r = res[task]
            layers = np.arange(len(r["test_accuracy"]))
            style = "-" if name == "model" else "--"
            ax.plot(layers, r["test_accuracy"], "o" + style, color=COLORS.get(name), label=labels.get(name, name))
            if "control_accuracy" in r:
                ax.plot(layers, r["control_accuracy"], "x:", color=COLORS.get(name),
                        label=f"{labels.get(name, name)}: control task")
        ax.axhline(r["majority"], color=COLORS["baseline"], lw=0.8, label="majority label")
        ax.set(title=task, xlabel="layer (0 = embeddings)", ylabel="test accuracy", ylim=(0, 1.02),
               xticks=layers)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    # One legend for every panel, under them: inside a panel it would cover some task's curves.
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    return Path(path)


def plot_selectivity(results: dict, labels: dict, path) -> Path:
    """Selectivity (accuracy minus control accuracy) per layer, for the tasks with a control task."""
    tasks = [t for t, r in next(iter(results.values())).items() if "selectivity" in r]
    if not tasks:
        raise ValueError("plot_selectivity: no task has a control task")
    fig, ax = _subplots(figsize=(8, 4))                 # room for the legend beside the axes
    for k, task in enumerate(tasks):
        for name, res in results.items():
            sel = res[task]["selectivity"]
            ax.plot(range(len(sel)), sel, "o-" if name == "model" else "o--", color=f"C{k}",
                    label=f"{task}, {labels.get(name, name)}")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(title="selectivity = accuracy - control accuracy", xlabel="layer (0 = embeddings)", ylabel="selectivity",
           xticks=range(len(sel)))
    _legend_beside(ax)
    return _save(fig, path)


def plot_structural(results: dict, labels: dict, path) -> Path:
    """UUAS and Spearman of the structural probe per layer, with the linear-chain baseline."""
    fig, axes = _subplots(1, 2, figsize=(10, 3.6))
    for name, r in results.items():
        layers = np.arange(len(r["uuas"]))
        style = "o-" if name == "model" else "o--"
        axes[0].plot(layers, r["uuas"], style, color=COLORS.get(name), label=labels.get(name, name))
        axes[1].plot(layers, r["spearman"], style, color=COLORS.get(name), label=labels.get(name, name))
    axes[0].axhline(next(iter(results.values()))["linear_chain_uuas"], color=COLORS["baseline"], ls="--",
                    label="linear chain")
    axes[0].set(title="structural probe: UUAS", xlabel="layer (0 = embeddings)", ylim=(0, 1.02), xticks=layers)
    axes[1].set(title="structural probe: Spearman (distances)", xlabel="layer (0 = embeddings)", ylim=(0, 1.02),
                xticks=layers)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def plot_head_stats(stats: dict, labels: dict, path) -> Path:
    """One heatmap (layers x heads) per statistic and model."""
    names = list(stats)
    keys = list(next(iter(stats.values())))
    fig, axes = _subplots(len(keys), len(names), figsize=(3.2 * len(names) + 1, 1.9 * len(keys)), squeeze=False)
    for i, key in enumerate(keys):
        vmax = max(float(np.max(stats[n][key])) for n in names)
        for j, name in enumerate(names):
            a = np.asarray(stats[name][key])
            ax = axes[i, j]
            ax.imshow(a, cmap="viridis", vmin=0, vmax=vmax or 1, aspect="auto")
            L, A = a.shape
            if L * A <= 64:
                for (l, h), v in np.ndenumerate(a):
                    ax.text(h, l, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")
            ax.set_xticks(range(A))
            ax.set_yticks(range(L), [f"L{l + 1}" for l in range(L)])
            ax.set_title(f"{key} - {labels.get(name, name)}", fontsize=8)
    return _save(fig, path)


def plot_dependency(best: dict, labels: dict, path) -> Path:
    """Per relation: the best head's accuracy for each model beside the best fixed offset."""
    names = list(best)
    rels = [r for r in next(iter(best.values())) if r != "all"] + ["all"]
    series = {n: {r: best[n][r]["accuracy"] for r in rels if r in best[n]} for n in names}
    series["baseline"] = {r: best[names[0]][r]["offset_accuracy"] for r in rels}
    fig, ax = _subplots(figsize=(min(14, max(6, 0.6 * len(rels) + 2)), 4))
    _bars(ax, rels, series, {**labels, "baseline": "best fixed offset"})
    ax.set(title="does the best head's attention argmax hit the dependency head?", ylabel="accuracy")
    _legend_beside(ax)
    return _save(fig, path)


def plot_attention_maps(maps: dict, pieces, labels: dict, title: str, path) -> Path:
    """Every head's attention for one sentence, one row of panels per (model, layer); rows of a panel
    are queries, columns keys. maps: {name: (L, A, T, T)}."""
    panels = [(name, l) for name, m in maps.items() for l in range(np.shape(m)[0])]
    A, T = np.shape(next(iter(maps.values())))[1], len(pieces)
    size = 0.2 * T + 1.4
    fig, axes = _subplots(len(panels), A, figsize=(size * A, size * len(panels)), squeeze=False)
    for row, (name, l) in enumerate(panels):
        for h in range(A):
            ax = axes[row, h]
            ax.imshow(np.asarray(maps[name])[l, h], cmap="Blues", vmin=0, vmax=1)
            # Every panel shows the same sentence, and the panels of a row sit side by side: the queries
            # are labelled in the left column only (labelling them in every panel took a third of the
            # figure's time).
            ax.set_xticks(range(T), pieces, rotation=90, fontsize=6)
            ax.set_yticks(range(T), pieces if h == 0 else [], fontsize=6)
            ax.set_title(f"{labels.get(name, name)}: layer {l + 1}, head {h}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
