"""Figures for `rlbench compare --plots DIR`: training curves and a mean@k bar chart (PNG, matplotlib Agg).

Curves: one panel per training metric (reward_mean, accuracy, entropy, kl, response_len, kept_frac), one
figure against optimizer step and one against samples; one line per recipe (mean across its seeds at each
step) with a min–max band when it has several seeds. Bars: the table's metric per benchmark column (and
Average) with the cell's uncertainty as error bars. Each recipe keeps one colour in every figure. Figures are
built on `matplotlib.figure.Figure` directly (no pyplot global state), so this is safe to call repeatedly and
in tests.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from rlbench_cli.compare.model import Comparison, Row

CURVE_METRICS: tuple[tuple[str, str], ...] = (
    ("reward_mean", "mean reward"),
    ("accuracy", "accuracy"),
    ("entropy", "policy entropy"),
    ("kl", "KL to reference"),
    ("response_len", "response length (tokens)"),
    ("kept_frac", "kept fraction"),
)
X_AXES: dict[str, str] = {"step": "optimizer step", "samples": "samples generated"}


def recipe_colors(rows: list[Row]) -> dict[str, Any]:
    """One colour per non-reference row label, stable across all figures (tab10, then tab20)."""
    from matplotlib import colormaps

    labels = [r.label for r in rows if r.kind != "reference"]
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def aggregate_curve(runs_metrics: list[list[dict[str, Any]]], key: str, x_key: str) -> dict[str, list[float]]:
    """Mean/min/max of `key` across seeds at each step; x is the step or the seeds' mean `samples` there."""
    by_step: dict[float, list[tuple[float, float]]] = {}
    for metrics in runs_metrics:
        for rec in metrics:
            step, y = rec.get("step"), rec.get(key)
            x = step if x_key == "step" else rec.get(x_key)
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in (step, x, y)):
                continue
            by_step.setdefault(float(step), []).append((float(x), float(y)))
    out: dict[str, list[float]] = {"x": [], "mean": [], "min": [], "max": [], "n": []}
    for step in sorted(by_step):
        pts = by_step[step]
        ys = [p[1] for p in pts]
        out["x"].append(sum(p[0] for p in pts) / len(pts))
        out["mean"].append(sum(ys) / len(ys))
        out["min"].append(min(ys))
        out["max"].append(max(ys))
        out["n"].append(float(len(ys)))
    return out


def curves_figure(comp: Comparison, x_key: str, colors: dict[str, Any]) -> tuple[Any, int]:
    """The training-curves figure against `x_key` ("step" or "samples") and its number of line series."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 8.5), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    rows = [r for r in comp.rows if r.kind == "train" and any(run.metrics for run in r.runs)]
    n_lines = 0
    for ax, (key, name) in zip(axes, CURVE_METRICS, strict=True):
        drawn = False
        for row in rows:
            agg = aggregate_curve([run.metrics for run in row.runs], key, x_key)
            if not agg["x"]:
                continue
            color = colors.get(row.label)
            seeds = f" ({row.n_seeds} seeds)" if row.n_seeds > 1 else ""
            ax.plot(agg["x"], agg["mean"], color=color, linewidth=1.6, label=row.label + seeds)
            n_lines += 1
            if row.n_seeds > 1:
                ax.fill_between(agg["x"], agg["min"], agg["max"], color=color, alpha=0.2, linewidth=0)
            drawn = True
        ax.set_title(name)
        ax.set_xlabel(X_AXES[x_key])
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    band = " (mean across seeds, band = min–max)" if any(r.n_seeds > 1 for r in rows) else ""
    fig.suptitle(f"Training curves vs {X_AXES[x_key]}{band}")
    return fig, n_lines


def bars_figure(comp: Comparison, colors: dict[str, Any]) -> Any:
    """Grouped bars of the table's metric per column, error bars = the cell's SE or CI half-width."""
    from matplotlib.figure import Figure

    rows = [r for r in comp.rows if r.kind != "reference"]
    cols = comp.columns
    fig = Figure(figsize=(max(6.0, 2 + len(cols) * (0.5 + 0.25 * len(rows))), 4.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        xs, hs, errs = [], [], []
        for j, col in enumerate(cols):
            cell = row.cells.get(col.key)
            if cell is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            hs.append(100 * cell.value)
            u = cell.uncertainty
            errs.append(100 * u if u is not None and math.isfinite(u) else 0.0)
        ax.bar(xs, hs, width=width, yerr=errs, capsize=3, color=colors.get(row.label), label=row.label)
    ax.set_xticks(range(len(cols)), [c.header for c in cols], rotation=20, ha="right")
    ax.set_ylabel(f"{comp.metric} (%)")
    ax.set_xlabel("benchmark")
    ax.set_title(
        f"{comp.metric} per benchmark\n(error bars: SE over problems for one seed, 95% CI across seeds)",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    return fig


def _save(fig: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_plots(comp: Comparison, plots_dir: Path) -> list[Path]:
    """Write curves_vs_step.png, curves_vs_samples.png (if any run logged metrics) and <metric>_bars.png."""
    import matplotlib

    matplotlib.use("Agg")
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    colors = recipe_colors(comp.rows)
    written: list[Path] = []
    for x_key in X_AXES:
        fig, n_lines = curves_figure(comp, x_key, colors)
        if n_lines:
            path = plots_dir / f"curves_vs_{x_key}.png"
            _save(fig, path)
            written.append(path)
    if comp.columns:
        path = plots_dir / f"{comp.metric.replace('@', '_at_')}_bars.png"
        _save(bars_figure(comp, colors), path)
        written.append(path)
    return written
