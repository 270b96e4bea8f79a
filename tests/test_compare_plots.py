"""Plots of `rlbench compare`: valid PNG files, the expected line series, consistent colours per recipe."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from rich.console import Console
from test_compare_fixtures import make_run, standard_results

from rlbench_cli.compare import run_compare
from rlbench_cli.compare.loader import load_runs
from rlbench_cli.compare.plots import (
    CURVE_METRICS,
    aggregate_curve,
    bars_figure,
    curves_figure,
    recipe_colors,
)
from rlbench_cli.compare.tables import build_comparison

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def comparison(tmp_path: Path):
    runs, warnings = load_runs(standard_results(tmp_path / "r"))
    return build_comparison(runs, warnings=warnings)


def test_write_plots_valid_pngs(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    root = standard_results(tmp_path / "r")
    res = run_compare(root, plots_dir=tmp_path / "plots", console=Console(file=io.StringIO()))
    names = sorted(Path(p).name for p in res["plots"])
    assert names == ["curves_vs_samples.png", "curves_vs_step.png", "mean_at_k_bars.png"]
    for p in res["plots"]:
        data = Path(p).read_bytes()
        assert data[:8] == PNG_MAGIC
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
        assert img.std() > 0.01  # not a blank canvas


def test_curves_have_one_line_per_recipe_and_metric(comparison) -> None:
    colors = recipe_colors(comparison.rows)
    fig, n_lines = curves_figure(comparison, "step", colors)
    train_rows = [r for r in comparison.rows if r.kind == "train"]
    assert n_lines == len(train_rows) * len(CURVE_METRICS) == 12
    axes = fig.get_axes()
    assert len(axes) == len(CURVE_METRICS)
    for ax in axes:
        assert len(ax.get_lines()) == 2
        assert ax.get_title() and ax.get_xlabel() == "optimizer step" and ax.get_legend() is not None
        # The 3-seed recipe gets a band (a filled collection); the 1-seed one does not.
        assert len(ax.collections) == 1
    assert fig.get_suptitle().startswith("Training curves")


def test_colours_consistent_across_figures(comparison) -> None:
    from matplotlib.colors import to_rgba

    colors = recipe_colors(comparison.rows)
    assert len({tuple(c) for c in colors.values()}) == len(colors)
    fig_step, _ = curves_figure(comparison, "step", colors)
    fig_samples, _ = curves_figure(comparison, "samples", colors)
    for fig in (fig_step, fig_samples):
        for line in fig.get_axes()[0].get_lines():
            label = line.get_label().split(" (")[0]
            assert to_rgba(line.get_color()) == to_rgba(colors[label])
    bars = bars_figure(comparison, colors)
    ax = bars.get_axes()[0]
    for container in ax.containers:
        if hasattr(container, "patches") and container.patches:
            label = container.get_label()
            assert to_rgba(container.patches[0].get_facecolor()) == to_rgba(colors[label])
    assert ax.get_ylabel() == "mean@k (%)"


def test_aggregate_curve_mean_min_max_and_samples_axis() -> None:
    runs = [
        [{"step": 1, "samples": 10, "kl": 0.1}, {"step": 2, "samples": 20, "kl": None}],
        [{"step": 1, "samples": 10, "kl": 0.3}, {"step": 2, "samples": 20, "kl": 0.5}],
    ]
    agg = aggregate_curve(runs, "kl", "step")
    assert agg["x"] == [1.0, 2.0] and agg["n"] == [2.0, 1.0]
    assert math.isclose(agg["mean"][0], 0.2) and agg["min"][0] == 0.1 and agg["max"][0] == 0.3
    assert aggregate_curve(runs, "kl", "samples")["x"] == [10.0, 20.0]
    assert aggregate_curve(runs, "entropy", "step")["x"] == []


def test_no_training_metrics_writes_only_bars(tmp_path: Path) -> None:
    root = tmp_path / "r"
    make_run(root, "base", recipe="base", label="Base", kind="base", evals={"math500": [1, 2]})
    res = run_compare(root, plots_dir=tmp_path / "p", console=Console(file=io.StringIO()))
    assert [Path(p).name for p in res["plots"]] == ["mean_at_k_bars.png"]
    assert any("training-curve plots were not written" in w for w in res["warnings"])
