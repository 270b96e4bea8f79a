"""Accuracy over k samples per problem: mean@k (the paper's average@16), pass@k, maj@k, standard error.

Pure functions on plain Python data (numpy only); scores are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which stays exact-ish for large n (no huge binomials).
    """
    if n < 0 or c < 0 or k < 1 or c > n or k > n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_at_k(correct: Sequence[Sequence[bool]]) -> float:
    """Mean over problems of each problem's fraction of correct samples (no samples: error)."""
    if not correct:
        return 0.0
    fractions = []
    for row in correct:
        if len(row) == 0:
            raise ValueError("mean_at_k: a problem has no samples")
        fractions.append(sum(bool(x) for x in row) / len(row))
    return sum(fractions) / len(fractions)


def majority_answer(preds: Sequence[str | None]) -> int | None:
    """Index of the first sample holding the most common non-empty answer (ties: first seen), or None."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, p in enumerate(preds):
        if p is None or not str(p).strip():
            continue
        key = _vote_key(p)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return None
    best = max(counts.values())
    return min(first[k] for k, v in counts.items() if v == best)


def _vote_key(pred: str) -> str:
    """Answers that normalise to the same string vote together (e.g. `\\dfrac12` and `\\frac12`)."""
    from rlbench_cli.evaluation.grader import normalize_answer

    return "".join(normalize_answer(pred).split())


def maj_at_k(preds: Sequence[str | None], correct: Sequence[bool]) -> float:
    """1.0 if the majority-vote answer of one problem's samples is correct, else 0.0 (all None → 0.0)."""
    if len(preds) != len(correct):
        raise ValueError(f"maj_at_k: {len(preds)} answers but {len(correct)} verdicts")
    idx = majority_answer(preds)
    return 0.0 if idx is None else float(bool(correct[idx]))


def standard_error(per_problem_scores: Sequence[float]) -> float:
    """Standard error of the mean: sample std (ddof=1) / sqrt(n); 0 for fewer than two problems."""
    import numpy as np

    n = len(per_problem_scores)
    if n < 2:
        return 0.0
    return float(np.std(np.asarray(per_problem_scores, dtype=float), ddof=1) / math.sqrt(n))


def summarize(per_problem: list[dict[str, Any]]) -> dict[str, Any]:
    """Benchmark metrics from per-problem dicts {"id", "n", "n_correct", "maj_correct"}.

    k is the smallest n over problems (all problems normally have the same n); pass@1 and pass@k use each
    problem's own n. maj@k is the fraction of problems whose majority answer is correct.
    """
    if not per_problem:
        return {"mean@k": 0.0, "mean@k_se": 0.0, "pass@k": 0.0, "pass@1": 0.0, "maj@k": 0.0, "k": 0,
                "n_problems": 0}
    for p in per_problem:
        if p["n"] < 1 or not 0 <= p["n_correct"] <= p["n"]:
            raise ValueError(f"summarize: bad counts for problem {p.get('id')!r}: {p}")
    k = min(int(p["n"]) for p in per_problem)
    fractions = [p["n_correct"] / p["n"] for p in per_problem]
    n_problems = len(per_problem)
    return {
        "mean@k": sum(fractions) / n_problems,
        "mean@k_se": standard_error(fractions),
        "pass@k": sum(pass_at_k(int(p["n"]), int(p["n_correct"]), k) for p in per_problem) / n_problems,
        "pass@1": sum(pass_at_k(int(p["n"]), int(p["n_correct"]), 1) for p in per_problem) / n_problems,
        "maj@k": sum(bool(p.get("maj_correct")) for p in per_problem) / n_problems,
        "k": k,
        "n_problems": n_problems,
    }
