"""Across-seed view of a results folder: per-seed Averages per recipe, tests against a baseline, power.

`rlbench compare` uses `seed_tests` for its "holds across seeds" column; `rlbench compare --power DIFF` prints
`power_report`: how many seeds detect a difference of DIFF points with 80% power, from the seed-to-seed SD in
the folder (paired: SD of the per-seed differences between recipes that share seeds; unpaired: pooled SD), and
how much of that variance evaluation sampling explains (what more samples per problem could remove at most).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rlbench_cli.compare.loader import Run
from rlbench_cli.compare.seed_stats import (
    SeedTest,
    average_sampling_variance,
    min_detectable,
    pooled_seed_sd,
    seed_test,
    seeds_needed,
)
from rlbench_cli.compare.stats import format_bound, format_p


def per_seed_average(runs: Sequence[Run], benchmarks: Sequence[str], metric: str = "mean@k") -> dict[int, float]:
    """seed -> Average over `benchmarks` (points) for the runs of one recipe that evaluated all of them."""
    out: dict[int, float] = {}
    for i, run in enumerate(runs):
        if not all(b in run.evals for b in benchmarks):
            continue
        scores = []
        for b in benchmarks:
            per = run.evals[b].problem_scores(metric)
            if not per:
                break
            scores.append(sum(per.values()) / len(per))
        if len(scores) == len(benchmarks):
            out[run.seed if run.seed is not None else -1 - i] = 100 * sum(scores) / len(scores)
    return out


def sampling_variances(runs: Sequence[Run], benchmarks: Sequence[str], metric: str = "mean@k") -> list[float]:
    """Each run's evaluation-sampling variance of its Average (points²); empty unless `metric` is a mean over
    samples (mean@k, pass@1) and every run has per-problem counts with >= 2 samples."""
    if metric not in ("mean@k", "pass@1") or not benchmarks:
        return []
    out = []
    for run in runs:
        if not all(b in run.evals for b in benchmarks):
            continue
        counts = [[(p.get("n") or 0, p.get("n_correct") or 0) for p in run.evals[b].per_problem] for b in benchmarks]
        v = average_sampling_variance(counts)
        if not math.isfinite(v):
            return []
        out.append(1e4 * v)
    return out


def group_by_recipe(runs: Sequence[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        if r.kind != "base":
            groups.setdefault(r.recipe_name, []).append(r)
    return groups


def common_benchmarks(runs: Sequence[Run]) -> list[str]:
    sets = [set(r.evals) for r in runs if r.evals]
    return sorted(set.intersection(*sets)) if sets else []


def seed_tests(rows: dict[str, dict[int, float]], baseline: str) -> dict[str, SeedTest]:
    """Each recipe's per-seed Averages against the baseline's (paired t if same seeds, else Welch)."""
    base = rows[baseline]
    return {name: seed_test(vals, base) for name, vals in rows.items() if name != baseline}


def power_report(runs: Sequence[Run], diff: float, metric: str = "mean@k") -> dict[str, Any]:
    """Seeds needed for 80% power (two-sided, alpha 0.05) to detect `diff` points, from the folder's seeds."""
    groups = group_by_recipe(runs)
    benches = common_benchmarks([r for g in groups.values() for r in g])
    rows = {name: per_seed_average(g, benches, metric) for name, g in groups.items()}
    rows = {k: v for k, v in rows.items() if v}
    sd, df = pooled_seed_sd([list(v.values()) for v in rows.values()])
    diffs: list[list[float]] = []
    names = sorted(rows)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sorted(set(rows[a]) & set(rows[b]))
            if len(common) >= 2:
                d = [rows[a][s] - rows[b][s] for s in common]
                diffs.append(d)
    sd_diff, df_diff = pooled_seed_sd(diffs)
    out: dict[str, Any] = {
        "benchmarks": benches, "diff_points": diff, "recipes": {k: len(v) for k, v in rows.items()},
        "seed_sd": sd, "seed_sd_df": df, "paired_sd": sd_diff, "paired_sd_df": df_diff,
        "seeds_needed_unpaired": seeds_needed(diff, sd, paired=False) if math.isfinite(sd) else None,
        "seeds_needed_paired": seeds_needed(diff, sd_diff, paired=True) if math.isfinite(sd_diff) else None,
        "mde_3_seeds_unpaired": min_detectable(sd, 3, paired=False) if math.isfinite(sd) else None,
        "mde_3_seeds_paired": min_detectable(sd_diff, 3, paired=True) if math.isfinite(sd_diff) else None,
    }
    out.update(_sampling_part(groups, rows, benches, metric, sd, sd_diff))
    return out


def _sampling_part(groups: dict[str, list[Run]], rows: dict[str, dict[int, float]], benches: Sequence[str],
                   metric: str, sd: float, sd_diff: float) -> dict[str, Any]:
    """The share of the seed variance that evaluation sampling explains, and the power without it.

    A per-seed difference of two runs carries both runs' sampling variance (at most: arms that share sampling
    streams are positively correlated, which lowers it), so its sampling part is taken as twice the mean per run."""
    var = sampling_variances([r for name in rows for r in groups[name]], benches, metric)
    if not var:
        return {"eval_sampling_sd": None}
    v = sum(var) / len(var)
    out: dict[str, Any] = {"eval_sampling_sd": math.sqrt(v), "eval_share_seed_var": None,
                           "eval_share_paired_var": None, "paired_sd_without_eval": None,
                           "mde_3_seeds_paired_without_eval": None}
    if math.isfinite(sd) and sd > 0:
        out["eval_share_seed_var"] = v / sd**2
    if math.isfinite(sd_diff) and sd_diff > 0:
        out["eval_share_paired_var"] = 2 * v / sd_diff**2
        rest = math.sqrt(max(0.0, sd_diff**2 - 2 * v))
        out["paired_sd_without_eval"] = rest
        out["mde_3_seeds_paired_without_eval"] = min_detectable(rest, 3, paired=True)
    return out


def render_power(rep: dict[str, Any]) -> list[str]:
    def f(x: Any) -> str:
        return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.2f}"

    lines = [f"Power for a difference of {rep['diff_points']:g} points in the Average "
             f"({', '.join(rep['benchmarks']) or 'no common benchmarks'}); 80% power, two-sided alpha 0.05."]
    lines.append(f"seed-to-seed SD of the Average (pooled over {len(rep['recipes'])} recipes, df {rep['seed_sd_df']}):"
                 f" {f(rep['seed_sd'])} points -> seeds per recipe needed (unpaired t): "
                 f"{rep['seeds_needed_unpaired'] or '–'}; 3 seeds detect {f(rep['mde_3_seeds_unpaired'])} points")
    lines.append(f"SD of per-seed differences between recipes sharing seeds (df {rep['paired_sd_df']}): "
                 f"{f(rep['paired_sd'])} points -> seeds needed (paired t): {rep['seeds_needed_paired'] or '–'}; "
                 f"3 seeds detect {f(rep['mde_3_seeds_paired'])} points")
    if rep.get("eval_sampling_sd") is not None:
        lines.append(f"Evaluation sampling alone (a new draw of the samples per problem, same policy): SD "
                     f"{f(rep['eval_sampling_sd'])} points per run, {_share(rep.get('eval_share_seed_var'))} of the "
                     f"seed-to-seed variance, at most {_share(rep.get('eval_share_paired_var'))} of the variance of "
                     f"per-seed differences; the rest is training. With no sampling noise at all 3 seeds would "
                     f"detect {f(rep.get('mde_3_seeds_paired_without_eval'))} points (paired): more samples per "
                     f"problem cannot do better than that, more seeds can.")
    if rep["seed_sd_df"] == 0:
        lines.append("No recipe has 2 or more seeds: train more seeds (rlbench train --seeds 0,1,2) to estimate it.")
    return lines


def _share(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.0f}%" if x <= 1 else f"{100 * x:.0f}% (more than all of it: too few seeds to estimate it)"


def across_seeds(rows: Sequence[tuple[str, Sequence[Run]]], baseline: tuple[str, Sequence[Run]],
                 benchmarks: Sequence[str], metric: str = "mean@k") -> list[dict[str, Any]]:
    """Each row's Average vs the baseline's across seeds (paired t on common seeds, else Welch), in points."""
    base_vals = per_seed_average(baseline[1], benchmarks, metric)
    out = []
    for label, runs in rows:
        vals = per_seed_average(runs, benchmarks, metric)
        if not vals or not base_vals:
            continue
        t = seed_test(vals, base_vals)
        holds = "yes" if t.significant else ("n/a" if t.test == "none" else "no")
        out.append({"row": label, "baseline": baseline[0], "holds_across_seeds": holds, **t.to_dict()})
    return out


def render_across_seeds(tests: Sequence[dict[str, Any]]) -> list[str]:
    """Lines under the table; nothing when no row has a test across seeds (single-seed folders stay unchanged)."""
    if not any(t["test"] != "none" for t in tests):
        return []
    lines = [f"Across seeds (Average, points; each seed is one run; test vs {tests[0]['baseline']}):"]
    for t in tests:
        if t["test"] == "none":
            lines.append(f"  {t['row']}: {t['diff']:+.2f}; needs >= 2 seeds in both rows for a test across seeds")
            continue
        lines.append(f"  {t['row']}: {format_bound(t['diff'])} [{format_bound(t['ci_low'])}, "
                     f"{format_bound(t['ci_high'])}] {t['test']} p={format_p(t['p_value'])} seeds {t['n_seeds']} "
                     f"vs {t['n_seeds_baseline']}: holds across seeds: {t['holds_across_seeds']}")
    return lines
