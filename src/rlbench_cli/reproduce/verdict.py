"""Per-seed metrics of a run folder, and the verdict of a finding: holds / does not hold / inconclusive.

Metrics are read from what the runs wrote (eval summary.json per benchmark, metrics.jsonl per step), so a
report can be recomputed from a finished output folder without training. Accuracies are in points (0-100).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlbench_cli.compare.seed_stats import SeedTest, seed_test, seeds_needed
from rlbench_cli.records import read_jsonl
from rlbench_cli.reproduce.spec import Finding, Metric


def _eval_summaries(folder: Path) -> list[dict[str, Any]]:
    """Eval summaries of a run folder, or of the base-model folder a 'base' run writes under it."""
    found = sorted(folder.glob("eval/*/summary.json")) or sorted(folder.glob("base-*/eval/*/summary.json"))
    return [json.loads(p.read_text()) for p in found]


def eval_metric(folder: Path, kind: str) -> float:
    """Average over benchmarks of mean@k or pass@k, in points, from the per-problem counts."""
    scores = []
    for s in _eval_summaries(folder):
        rows = s["per_problem"]
        if kind == "eval_mean_at_k":
            scores.append(sum(r["n_correct"] / r["n"] for r in rows) / len(rows))
        else:
            scores.append(sum(r["n_correct"] > 0 for r in rows) / len(rows))
    if not scores:
        raise ValueError(f"{folder}: no eval summaries")
    return 100 * sum(scores) / len(scores)


def _rollouts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per rollout: optimizer steps that trained on the same rollout share its `samples` count."""
    seen: dict[Any, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(r.get("samples"), r)
    return list(seen.values())


def train_metric(folder: Path, metric: Metric) -> float:
    rows = [r for r in read_jsonl(folder / "metrics.jsonl") if isinstance(r, dict)]
    if not rows:
        raise ValueError(f"{folder}: no training metrics")
    if metric.kind == "train_accuracy_auc":
        assert metric.samples is not None
        early = [r["accuracy"] for r in _rollouts(rows) if r.get("samples") is not None
                 and r["samples"] <= metric.samples and r.get("accuracy") is not None]
        if not early:
            raise ValueError(f"{folder}: no rollout within the first {metric.samples} samples")
        return 100 * sum(early) / len(early)
    key = {"entropy_end": "entropy", "incorrect_length_end": "incorrect_len"}[metric.kind]
    tail = [r[key] for r in rows[-(metric.last_steps or 1):] if r.get(key) is not None]
    if not tail:
        raise ValueError(f"{folder}: no {key} in the last {metric.last_steps} steps")
    return sum(tail) / len(tail)


def run_metric(folder: Path, metric: Metric) -> float:
    return eval_metric(folder, metric.kind) if metric.needs_eval else train_metric(folder, metric)


def verdict(finding: Finding, a: dict[int, float], b: dict[int, float]) -> tuple[str, SeedTest, str]:
    """(verdict, test, reason) for per-seed values of arm a and arm b (see findings/README.md)."""
    test = seed_test(a, b)
    rel = finding.relation
    if test.test == "none" or math.isnan(test.ci_low):
        return "inconclusive", test, "fewer than 2 seeds in an arm"
    if set(a) == set(b) and all(a[s] == b[s] for s in a):
        return "inconclusive", test, "the arms gave identical results on every seed"
    threshold = 0.0 if rel.type == "greater" else -rel.margin
    if test.ci_low > threshold:
        return "holds", test, f"95% interval of {rel.a} - {rel.b} lies above {threshold:g}"
    if test.ci_high < threshold:
        return "does not hold", test, f"95% interval of {rel.a} - {rel.b} lies below {threshold:g}"
    return "inconclusive", test, f"95% interval of {rel.a} - {rel.b} contains {threshold:g}"


def seeds_to_settle(finding: Finding, test: SeedTest, verdict_name: str) -> int | None:
    """For an inconclusive paired verdict: how many seeds would give 80% power (paired t, two-sided alpha 0.05) to
    settle a true difference as far from the finding's threshold as the observed one, with the observed SD of the
    per-seed differences. A planning figure (that SD is itself uncertain at 3 seeds), not a verdict; None when the
    verdict is settled, the test is not paired, the observed difference sits on the threshold, or over 1000 seeds."""
    if verdict_name != "inconclusive" or test.test != "paired-t" or test.sd_diff is None:
        return None
    threshold = 0.0 if finding.relation.type == "greater" else -finding.relation.margin
    gap = abs(test.diff - threshold)
    if not math.isfinite(gap) or gap == 0 or not math.isfinite(test.sd_diff) or test.sd_diff == 0:
        return None
    return seeds_needed(gap, test.sd_diff, paired=True)
