"""Figures keep their legends off the data and name everything they draw.

Each figure is captured at ``savefig`` (nothing is written into the repository) and its artists read.
"""
import pytest

pytest.importorskip("matplotlib", reason="matplotlib is a runtime dependency: pip install '.[test]'")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from minibert.finetuning import stability  # noqa: E402
from minibert.probing import figures  # noqa: E402


@pytest.fixture
def saved(monkeypatch, tmp_path):
    """The figures passed to Figure.savefig during the test."""
    captured = []
    original = Figure.savefig

    def capture(fig, path, *args, **kwargs):
        captured.append(fig)
        return original(fig, tmp_path / "figure.png", *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    return captured


def renderer_of(fig):
    """A renderer with the layout of the saved figure (a Figure made without pyplot has no canvas)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()


def legend_outside(ax) -> bool:
    """Whether the axes' legend lies entirely outside the axes' drawing area."""
    renderer = renderer_of(ax.figure)
    box, area = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    return box.x0 >= area.x1 or box.y1 <= area.y0 or box.x1 <= area.x0 or box.y0 >= area.y1


def test_swarm_plot_names_the_failed_runs_and_keeps_its_legend_off_them(saved, tmp_path):
    records = [{"strategy": s, "dev": d, "failed": d <= 0.5}
               for s, devs in (("dropout", (0.5, 0.62, 0.7)), ("random", (0.5, 0.52))) for d in devs]
    stability.plot_swarm(records, ["dropout", "random"], 0.5,
                         "entailment: 3 pretrained, 2 random-init runs", tmp_path / "swarm.png")
    ax = saved[-1].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["run", "failed run (dev <= baseline)", "mean", "majority baseline 0.50"]
    assert legend_outside(ax)
    title = ax.title.get_window_extent(renderer_of(saved[-1]))
    assert title.x0 >= 0 and title.x1 <= saved[-1].bbox.x1              # the title is not clipped


def test_probing_bar_and_line_figures_put_their_legends_beside_the_axes(saved, tmp_path):
    labels = {"model": "pretrained", "random": "random init"}
    runs = {name: {"by_attractors": {str(k): {"accuracy": 0.5} for k in range(4)},
                   "by_construction": {c: {"accuracy": 0.9} for c in ("simple", "pp")},
                   "nearest_noun_baseline": {"by_attractors": {str(k): {"accuracy": 1.0} for k in range(4)},
                                             "by_construction": {c: {"accuracy": 0.1}
                                                                 for c in ("simple", "pp")}}}
            for name in labels}
    figures.plot_agreement(runs, labels, tmp_path / "agreement.png")
    assert legend_outside(saved[-1].axes[1])
    figures.plot_cloze_bars({name: {"a": 0.9} for name in labels}, labels,
                            {"metric": lambda r: r["a"]}, "title", tmp_path / "bars.png", chance=0.5)
    assert legend_outside(saved[-1].axes[0])
    tasks = {name: {"pos": {"test_accuracy": [0.9, 0.95], "control_accuracy": [0.6, 0.6],
                            "selectivity": [0.3, 0.35], "majority": 0.2}} for name in labels}
    figures.plot_selectivity(tasks, labels, tmp_path / "selectivity.png")
    assert legend_outside(saved[-1].axes[0])
    figures.plot_layers(tasks, labels, tmp_path / "layers.png")
    fig = saved[-1]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1


def test_parity_and_pretraining_figures_keep_their_legends_off_the_points(saved, tmp_path):
    import numpy as np

    from minibert import plots

    ours = np.linspace(4.0, 3.5, 10)
    theirs = ours.copy()
    theirs[:4] += 4.8e-7                        # some steps differ, the others are equal
    plots.plot_parity(ours, theirs, tmp_path / "parity.png")
    assert legend_outside(saved[-1].axes[1])
    records = [{"step": s, "loss": 8.0, "mlm_loss": 7.3, "nsp_loss": 0.7, "lr": 1e-3,
                "eval_mlm_loss": 7.0, "eval_mlm_accuracy": 0.13, "eval_nsp_accuracy": 0.6}
               for s in range(1, 11)]
    fig = plots.pretraining_figure(records, mlm_baseline=0.126, nsp_majority=0.597)
    fig.savefig(tmp_path / "pretraining.png")
    assert legend_outside(fig.axes[1])
