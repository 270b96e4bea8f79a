"""`rlbench compare`: paper-style tables, significance tests and plots from a results folder.

Entry point: `run_compare(results_dir, ...)`. It loads every completed run (loader.py; bad runs are skipped
with one warning each), groups them into recipe rows with benchmark columns (tables.py builds the objects of
model.py; mixed evaluation settings are split into separate columns, or refused inside one row — see
tables.py), optionally tests each row against a baseline with a paired bootstrap (stats.py), adds published
reference rows (reference.py), renders the table as rich / markdown / latex / csv / json (render.py) or as
lm-evaluation-harness results files (lmeval.py), and writes plots (plots.py). Heavy libraries load lazily.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError

FORMATS = ("rich", "markdown", "latex", "csv", "json", "lm-eval")
METRICS = ("mean@k", "pass@k", "maj@k", "pass@1")

__all__ = ["FORMATS", "METRICS", "run_compare"]


def run_compare(
    results_dir: Path,
    *,
    fmt: str = "rich",
    output: Path | None = None,
    baseline: str | None = None,
    reference: str | None = None,
    plots_dir: Path | None = None,
    extra_columns: Sequence[str] = (),
    metric: str = "mean@k",
    console: Any = None,
) -> dict[str, Any]:
    """Print (and/or write to `output`) the comparison table; return it as a JSON-able dict.

    The dict has keys metric, columns, rows (with cells and extras), stats (baseline tests), warnings, plots,
    format, output. Warnings go to stderr except with the rich format and a given console.
    """
    from rlbench_cli.compare.loader import load_runs
    from rlbench_cli.compare.tables import build_comparison, render_csv, render_latex, render_markdown
    from rlbench_cli.records import atomic_write_text

    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}", where="--format", fix=f"use one of: {', '.join(FORMATS)}")
    if metric not in METRICS:
        raise UserError(
            f"unknown metric {metric!r}", where="--metric", fix=f"use one of: {', '.join(METRICS)}"
        )
    results_dir = Path(results_dir)
    if not results_dir.exists():
        raise UserError(
            "results folder not found",
            where=str(results_dir),
            fix="pass the folder that `rlbench train` / `rlbench eval` wrote runs into",
        )
    runs, warnings = load_runs(results_dir, metric)
    if not any(run.evals for run in runs):
        found = f"{len(runs)} completed run(s) but none has an eval summary" if runs else "no completed runs"
        detail = (
            f" ({len(warnings)} folder(s) skipped: {warnings[0]}{' …' if len(warnings) > 1 else ''})"
            if warnings
            else ""
        )
        raise UserError(
            f"{found} with eval/<benchmark>/summary.json for metric {metric}{detail}",
            where=str(results_dir),
            fix="train a recipe (`rlbench train RECIPE --results-dir DIR`) and evaluate it "
            "(`rlbench eval --results-dir DIR`), or evaluate a base model, then rerun compare on DIR",
        )

    comp = build_comparison(
        runs,
        metric=metric,
        baseline=baseline,
        reference=reference,
        extra_columns=list(extra_columns),
        warnings=warnings,
    )
    plots: list[str] = []
    if plots_dir is not None:
        from rlbench_cli.compare.plots import write_plots

        plots = [str(p) for p in write_plots(comp, Path(plots_dir))]
        if not any(r.kind == "train" and any(run.metrics for run in r.runs) for r in comp.rows):
            warnings.append("no run has metrics.jsonl entries; training-curve plots were not written")
    result = comp.to_dict()
    result.update(
        {
            "results_dir": str(results_dir),
            "plots": plots,
            "format": fmt,
            "output": str(output) if output else None,
        }
    )

    renderers = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}
    text: str | None = None
    if fmt == "json":
        text = json.dumps(result, indent=2, default=str) + "\n"
    elif fmt in renderers:
        text = renderers[fmt](comp)
    elif fmt == "lm-eval":
        from rlbench_cli.compare.lmeval import lm_eval_documents, write_lm_eval

        docs = lm_eval_documents(comp)
        if output is not None:  # lm-eval's own layout: one results file per model under the folder
            result["output_files"] = [str(p) for p in write_lm_eval(docs, output)]
            output = None
            text = "".join(f"wrote {p}\n" for p in result["output_files"])
        else:
            text = json.dumps(docs, indent=2, default=str) + "\n"

    from rich.console import Console

    out_console = console if console is not None else Console()
    # Only the rich table shares its console with warnings; text formats keep stdout clean for redirection.
    warn_console = console if (fmt == "rich" and console is not None) else Console(stderr=True)
    if fmt == "rich":
        from rlbench_cli.compare.tables import render_rich_table

        table = render_rich_table(comp)
        out_console.print(table)
        if output is not None:
            rec = Console(record=True, width=200, file=_null_file())
            rec.print(table)
            atomic_write_text(output, rec.export_text())
    elif output is not None:
        atomic_write_text(output, text or "")
        out_console.print(f"wrote {output}", markup=False, highlight=False)
    else:
        # Console.out writes the text as is: no markup, emoji codes, highlighting or wrapping.
        out_console.out(text or "", highlight=False, end="")
    for w in warnings:
        warn_console.print(f"warning: {w}", markup=False, highlight=False, style="yellow", soft_wrap=True)
    for p in plots:
        warn_console.print(f"wrote {p}", markup=False, highlight=False)
    return result


def _null_file() -> Any:
    """A sink for the recording console (it must not print twice)."""
    import io

    return io.StringIO()
