"""Build the comparison table (rows × benchmark columns): grouping, columns, cells, best marks, significance.

Rows are recipes (runs grouped across seeds), base models first. A cell is the metric (default mean@k) with
its uncertainty: one seed → ± standard error over problems; several seeds → mean across seeds ± 95% Student-t
half-width. "Average" is the mean over the table's benchmarks and is shown only for rows that have all of
them.

Mixed evaluation settings: scores obtained under different k, temperature, top_p, max_new_tokens, prompt
template, benchmark data (sha256) or grader version are never pooled. Across rows, a benchmark evaluated under
several settings is split into one column per setting, labelled with what differs (e.g. "MATH500 (k=4)"), and
a warning says so. Within one row (the seeds of one recipe) differing settings are refused with a UserError,
since the row's mean and interval would silently pool incomparable numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rlbench_cli.compare.loader import Run, benchmark_sort_key
from rlbench_cli.compare.model import (
    ALGORITHM_ORDER,
    AVERAGE,
    EXTRA_COLUMNS,
    N_BOOT,
    SIG_LEVEL,
    Cell,
    Column,
    Comparison,
    Row,
)
from rlbench_cli.compare.reference import PAPER_AVERAGE_BENCHMARKS, PAPER_PROTOCOL, reference_rows
from rlbench_cli.compare.render import (  # re-exported: callers import the renderers from here
    latex_escape,
    render_csv,
    render_latex,
    render_markdown,
    render_rich_table,
)
from rlbench_cli.compare.stats import (
    combine_se,
    paired_bootstrap,
    standard_error,
    t_interval,
)
from rlbench_cli.errors import UserError

__all__ = [
    "ALGORITHM_ORDER",
    "AVERAGE",
    "EXTRA_COLUMNS",
    "N_BOOT",
    "SIG_LEVEL",
    "Cell",
    "Column",
    "Comparison",
    "Row",
    "build_comparison",
    "latex_escape",
    "render_csv",
    "render_latex",
    "render_markdown",
    "render_rich_table",
    "resolve_baseline",
    "total_gen_tokens",
]


def _short(key: str, value: Any) -> str:
    if key == "data" and isinstance(value, str):
        return f"data={value[:8]}"
    return f"{key}={value}"


def _group_rows(runs: list[Run], warnings: list[str]) -> list[Row]:
    groups: dict[tuple[bool, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.kind != "base", run.recipe_name), []).append(run)
    rows: list[Row] = []
    for (_, recipe), members in groups.items():
        kept: list[Run] = []
        seen: dict[int, str] = {}
        for run in members:
            if run.seed is not None and run.seed in seen:
                warnings.append(
                    f"{run.name}: duplicate seed {run.seed} of recipe {recipe!r} "
                    f"(already have {seen[run.seed]}); ignored"
                )
                continue
            if run.seed is not None:
                seen[run.seed] = run.name
            kept.append(run)
        labels = sorted({r.label for r in kept})
        if len(labels) > 1:
            warnings.append(
                f"recipe {recipe!r}: runs have different labels {labels}; using {kept[0].label!r}"
            )
        kind = "base" if kept[0].kind == "base" else "train"
        rows.append(
            Row(label=kept[0].label, recipe_name=recipe, kind=kind, algorithm=kept[0].algorithm, runs=kept)
        )

    def order(row: Row) -> tuple[int, int, str]:
        algo = (row.algorithm or "").lower()
        rank = ALGORITHM_ORDER.index(algo) if algo in ALGORITHM_ORDER else len(ALGORITHM_ORDER)
        return (0 if row.kind == "base" else 1, rank, row.recipe_name or "")

    rows.sort(key=order)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.label] = counts.get(row.label, 0) + 1
    for row in rows:  # same label for two recipes (e.g. two base models): disambiguate with the recipe name
        if counts[row.label] > 1:
            row.label = f"{row.label} ({row.recipe_name})"
    return rows


def _check_row_settings(row: Row) -> None:
    """Refuse a row whose seeds were evaluated on one benchmark under different settings."""
    first: dict[str, Run] = {}
    for run in row.runs:
        for bench, ev in run.evals.items():
            ref = first.setdefault(bench, run)
            ref_ev = ref.evals[bench]
            if ref_ev.signature == ev.signature:
                continue
            pairs = zip(ref_ev.signature, ev.signature, strict=True)
            diff = "; ".join(f"{k}: {a!r} vs {b!r}" for (k, a), (_, b) in pairs if a != b)
            raise UserError(
                f"runs {ref.name} and {run.name} of recipe {row.recipe_name!r} were evaluated on {bench} "
                f"under different settings ({diff}), so their seeds cannot be averaged into one row",
                where=str(ev.path),
                fix="re-evaluate both runs with the same settings (rlbench eval), "
                "or compare them from separate results folders",
            )


def _build_columns(rows: list[Row], warnings: list[str]) -> list[Column]:
    for row in rows:
        _check_row_settings(row)
    sigs: dict[str, list[tuple]] = {}
    names: dict[str, str] = {}
    for row in rows:
        for run in row.runs:
            for bench, ev in run.evals.items():
                names.setdefault(bench, ev.display_name)
                if ev.signature not in sigs.setdefault(bench, []):
                    sigs[bench].append(ev.signature)
    columns: list[Column] = []
    for bench in sorted(sigs, key=benchmark_sort_key):
        variants = sorted(sigs[bench], key=lambda s: [str(v) for _, v in s])
        if len(variants) == 1:
            columns.append(Column(bench, names[bench], bench, dict(variants[0])))
            continue
        differing = [i for i in range(len(variants[0])) if len({v[i][1] for v in variants}) > 1]
        headers = []
        for sig in variants:
            tag = ", ".join(_short(*sig[i]) for i in differing)
            headers.append(tag)
            columns.append(Column(f"{bench} ({tag})", f"{names[bench]} ({tag})", bench, dict(sig)))
        warnings.append(
            f"{names[bench]} was evaluated under different settings; split into separate columns: "
            + "; ".join(headers)
        )
    return columns


def _metric_se(run: Run, bench: str, metric: str) -> float | None:
    ev = run.evals[bench]
    se = ev.metrics.get(f"{metric}_se")
    if isinstance(se, int | float):
        return float(se)
    scores = ev.problem_scores(metric)
    return standard_error(list(scores.values())) if scores else None


def _cell_from_runs(values: list[float], ses: list[float | None]) -> Cell:
    if len(values) == 1:
        return Cell(values[0], ses[0], "se", 1)
    mean, half = t_interval(values)
    return Cell(mean, half, "ci95", len(values))


def _fill_cells(row: Row, columns: list[Column], metric: str, warnings: list[str]) -> None:
    bench_cols = [c for c in columns if c.benchmark is not None]
    for col in bench_cols:
        runs = [
            r
            for r in row.runs
            if col.benchmark in r.evals and dict(r.evals[col.benchmark].signature) == col.settings
        ]
        if runs:
            values = [float(r.evals[col.benchmark].metrics[metric]) for r in runs]
            row.cells[col.key] = _cell_from_runs(values, [_metric_se(r, col.benchmark, metric) for r in runs])
    benchmarks = sorted({c.benchmark for c in bench_cols}, key=benchmark_sort_key)
    complete = [r for r in row.runs if all(b in r.evals for b in benchmarks)]
    if not complete or not benchmarks:
        return
    if len(complete) < row.n_seeds:
        warnings.append(
            f"{row.label}: Average uses {len(complete)} of {row.n_seeds} seeds (the others miss a benchmark)"
        )
    averages = [
        sum(float(r.evals[b].metrics[metric]) for b in benchmarks) / len(benchmarks) for r in complete
    ]
    if len(complete) == 1:
        ses = [_metric_se(complete[0], b, metric) for b in benchmarks]
        se = None if any(s is None for s in ses) else combine_se([s for s in ses if s is not None])
        row.cells[AVERAGE] = Cell(averages[0], se, "se", 1)
    else:
        mean, half = t_interval(averages)
        row.cells[AVERAGE] = Cell(mean, half, "ci95", len(complete))


def _last_value(metrics: list[dict[str, Any]], key: str) -> float | None:
    for rec in reversed(metrics):
        v = rec.get(key)
        if isinstance(v, int | float) and math.isfinite(v):
            return float(v)
    return None


def total_gen_tokens(metrics: list[dict[str, Any]]) -> float | None:
    """Total generated tokens: the last value if the series is cumulative (never decreases), else the sum.

    rlbench's RL runner logs running totals (training/rl.py); a series that ever decreases is per-step counts.
    """
    vals = [float(r["gen_tokens"]) for r in metrics if isinstance(r.get("gen_tokens"), int | float)]
    if not vals:
        return None
    cumulative = all(b >= a for a, b in zip(vals, vals[1:], strict=False))
    return vals[-1] if cumulative else sum(vals)


def _fill_extras(row: Row, extras: Sequence[str], benchmarks: list[str]) -> None:
    def mean(xs: list[float | None]) -> float | None:
        got = [x for x in xs if x is not None]
        return sum(got) / len(got) if got else None

    for name in extras:
        per_run: list[float | None] = []
        for run in row.runs:
            if name in ("pass@k", "maj@k"):
                vals = [run.evals[b].metrics.get(name) for b in benchmarks if b in run.evals]
                per_run.append(mean([float(v) for v in vals if isinstance(v, int | float)]))
            elif name == "entropy":
                per_run.append(_last_value(run.metrics, "entropy"))
            elif name == "wall_time":
                per_run.append(run.wall_time_s)
            elif name == "gen_tokens":
                per_run.append(total_gen_tokens(run.metrics))
        row.extras[name] = mean(per_run)


def _mark_best(rows: list[Row], columns: list[Column]) -> None:
    for col in [*columns]:
        cells = [r.cells[col.key] for r in rows if r.kind != "reference" and col.key in r.cells]
        if not cells:
            continue
        top = max(c.value for c in cells)
        for c in cells:
            c.best = c.value >= top - 1e-12


def resolve_baseline(rows: list[Row], name: str) -> Row:
    """The row whose recipe_name (exact) or label (case-insensitive) is `name`."""
    for row in rows:
        if row.recipe_name == name:
            return row
    matches = [r for r in rows if r.label.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted({r.recipe_name or r.label for r in rows} | {r.label for r in rows}))
    if len(matches) > 1:
        raise UserError(
            f"baseline {name!r} matches several rows",
            where="--baseline",
            fix=f"give the recipe name instead; known: {known}",
        )
    raise UserError(
        f"no run matches baseline {name!r}",
        where="--baseline",
        fix=f"use a recipe name or label from the results folder: {known}",
    )


def _score_matrices(
    runs_a: list[Run], runs_b: list[Run], bench: str, metric: str
) -> tuple[list[list[float]], list[list[float]], int, int] | None:
    """Per-problem score matrices (seeds × problems) of two arms, paired by problem id (None: unavailable)."""
    maps_a = [r.evals[bench].problem_scores(metric) for r in runs_a]
    maps_b = [r.evals[bench].problem_scores(metric) for r in runs_b]
    if any(m is None for m in maps_a + maps_b):
        return None
    all_maps = [m for m in maps_a + maps_b if m is not None]
    common = set(all_maps[0])
    for m in all_maps[1:]:
        common &= set(m)
    ids = sorted(common)
    if not ids:
        return None
    largest = max(len(m) for m in all_maps)
    mat_a = [[m[i] for i in ids] for m in maps_a if m is not None]
    mat_b = [[m[i] for i in ids] for m in maps_b if m is not None]
    return mat_a, mat_b, len(ids), largest


def _run_significance(comp: Comparison, baseline: Row) -> None:
    base_cols = {c.key for c in comp.columns if c.key in baseline.cells}
    bench_cols = [c for c in comp.columns if c.benchmark is not None]
    benchmarks = sorted({c.benchmark for c in bench_cols if c.benchmark}, key=benchmark_sort_key)
    for row in comp.rows:
        if row is baseline or row.kind == "reference":
            continue
        for col in bench_cols:
            if col.key not in row.cells or col.key not in base_cols:
                continue
            bench = col.benchmark or ""
            runs_a = [
                r for r in row.runs if bench in r.evals and dict(r.evals[bench].signature) == col.settings
            ]
            runs_b = [
                r
                for r in baseline.runs
                if bench in r.evals and dict(r.evals[bench].signature) == col.settings
            ]
            got = _score_matrices(runs_a, runs_b, bench, comp.metric)
            if got is None:
                comp.warnings.append(
                    f"{row.label} vs {baseline.label} on {col.header}: no per-problem scores "
                    "with shared problem ids; no significance test"
                )
                continue
            mat_a, mat_b, n_common, largest = got
            if n_common < largest:
                comp.warnings.append(
                    f"{row.label} vs {baseline.label} on {col.header}: only {n_common} of "
                    f"{largest} problems are shared; the test uses those"
                )
            row.cells[col.key].test = paired_bootstrap([mat_a], [mat_b], keys=[bench], n_boot=N_BOOT)
        if AVERAGE not in row.cells or AVERAGE not in baseline.cells:
            continue
        runs_a = [r for r in row.runs if all(b in r.evals for b in benchmarks)]
        runs_b = [r for r in baseline.runs if all(b in r.evals for b in benchmarks)]
        same_cols = all(runs_a[0].evals[b].signature == runs_b[0].evals[b].signature for b in benchmarks)
        if not same_cols:
            comp.warnings.append(
                f"{row.label} vs {baseline.label}: Average not tested (benchmarks evaluated "
                "under different settings)"
            )
            continue
        arms_a, arms_b = [], []
        for b in benchmarks:
            got = _score_matrices(runs_a, runs_b, b, comp.metric)
            if got is None:
                break
            arms_a.append(got[0])
            arms_b.append(got[1])
        if len(arms_a) == len(benchmarks):
            row.cells[AVERAGE].test = paired_bootstrap(arms_a, arms_b, keys=benchmarks, n_boot=N_BOOT)


def _add_reference(comp: Comparison, name: str) -> None:
    published = reference_rows(name)
    if comp.metric != "mean@k":
        comp.warnings.append(f"reference {name!r} reports mean@16; not shown for metric {comp.metric}")
        return
    benchmarks = {c.benchmark for c in comp.columns if c.benchmark}
    avg_ok = benchmarks == set(PAPER_AVERAGE_BENCHMARKS)
    if not avg_ok:
        comp.warnings.append(
            f"reference {name!r}: the paper's Average covers MATH500, Minerva Math and "
            "OlympiadBench; this table's Average does not, so published Averages are not shown"
        )
    for col in comp.columns:
        if col.benchmark in PAPER_AVERAGE_BENCHMARKS:
            diffs = [
                f"{k}={col.settings.get(k)}" for k, v in PAPER_PROTOCOL.items() if col.settings.get(k) != v
            ]
            if diffs:
                comp.warnings.append(
                    f"{col.header}: evaluated with {', '.join(diffs)}; the paper used k=16, "
                    "temperature 1.0, top_p 1.0, 4096 new tokens"
                )
    added = 0
    for ref in published:
        row = Row(label=ref.label, recipe_name=None, kind="reference")
        for col in comp.columns:
            key = col.benchmark if col.benchmark else AVERAGE
            if key == AVERAGE and not avg_ok:
                continue
            if key in ref.values:
                row.cells[col.key] = Cell(ref.values[key] / 100.0, None, "reference", 0)
        if row.cells:
            comp.rows.append(row)
            added += 1
    if added == 0:
        comp.warnings.append(f"reference {name!r}: no column of this table matches the published benchmarks")


def build_comparison(
    runs: list[Run],
    *,
    metric: str = "mean@k",
    baseline: str | None = None,
    reference: str | None = None,
    extra_columns: Sequence[str] = (),
    warnings: list[str] | None = None,
) -> Comparison:
    """Group runs into rows, lay out columns, fill cells, mark best values and run the significance tests."""
    warnings = warnings if warnings is not None else []
    unknown = [e for e in extra_columns if e not in EXTRA_COLUMNS]
    if unknown:
        raise UserError(
            f"unknown extra column(s) {unknown}",
            where="--extra-columns",
            fix=f"use any of: {', '.join(EXTRA_COLUMNS)}",
        )
    rows = _group_rows(runs, warnings)
    columns = _build_columns(rows, warnings)
    if columns:
        columns.append(Column(AVERAGE, "Average", None, {}))
    benchmarks = sorted({c.benchmark for c in columns if c.benchmark}, key=benchmark_sort_key)
    for row in rows:
        _fill_cells(row, columns, metric, warnings)
        _fill_extras(row, extra_columns, benchmarks)
    comp = Comparison(
        metric=metric,
        columns=columns,
        rows=rows,
        extra_columns=list(extra_columns),
        warnings=warnings,
        reference=reference,
    )
    _mark_best(rows, columns)
    if baseline is not None:
        base_row = resolve_baseline(rows, baseline)
        base_row.is_baseline = True
        comp.baseline = base_row
        _run_significance(comp, base_row)
    if reference is not None:
        _add_reference(comp, reference)
    comp.legend = _legend(comp)
    return comp


def _legend(comp: Comparison) -> list[str]:
    lines = [
        f"Values: {comp.metric} in %, ± standard error over problems (one seed) or ± 95% Student-t "
        "half-width across seeds (several seeds); (n=…) marks a cell with fewer seeds than its row; "
        "best value per column highlighted; – = not evaluated."
    ]
    if comp.baseline is not None:
        lines.append(
            f"* p < {SIG_LEVEL:g} vs baseline {comp.baseline.label} (paired bootstrap over problems and "
            f"seeds, {N_BOOT} resamples, two-sided)."
        )
    if any(r.kind == "reference" for r in comp.rows):
        lines.append(
            "[paper] rows: published mean@16 of arXiv 2504.11343 Table 1 (v1 per benchmark, v2 Average); "
            "not part of the best marking."
        )
    return lines
