"""Statistics across seeds: does a difference between two recipes hold from run to run, not only over problems?

The unit is the seed (one training run): each arm contributes one number per seed (e.g. its Average mean@16).
With 3-5 seeds a bootstrap over seeds understates the seed-to-seed variance (it resamples 3 values), so the
test here is Student's t on the per-seed values:

- paired t when both arms have the same seeds (seed i of A and seed i of B share data order and sampling
  streams, so their difference removes the part of the noise they share), df = n - 1;
- Welch's t otherwise (unequal variances, Welch-Satterthwaite df).

`power_t` / `seeds_needed` / `min_detectable` are the matching power calculations (noncentral t, exact for
normal per-seed values). `sampling_variance` splits the seed-to-seed variance: the part a re-evaluation of the
same policy would change (finite samples per problem) against the part only another training run changes.
All functions are pure; scipy is imported inside them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SeedTest:
    """mean(arm) - mean(baseline) across seeds, its 95% t interval and two-sided p-value."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float
    test: str  # "paired-t" | "welch-t" | "none" (too few seeds)
    n_seeds: int
    n_seeds_baseline: int
    sd_diff: float | None = None  # paired: SD of the per-seed differences

    @property
    def significant(self) -> bool:
        return self.test != "none" and self.p_value < 0.05

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def paired_t(arm: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> SeedTest:
    """Paired t-test on per-seed values (same order = same seed)."""
    from scipy import stats

    if len(arm) != len(baseline):
        raise ValueError("paired_t needs the same number of values in both arms")
    n = len(arm)
    d = [a - b for a, b in zip(arm, baseline, strict=True)]
    diff = _mean(d) if d else float("nan")
    if n < 2:
        return SeedTest(diff, float("nan"), float("nan"), float("nan"), 0.0, "none", n, n)
    sd = math.sqrt(_var(d))
    se = sd / math.sqrt(n)
    df = n - 1
    if se <= 1e-12 * max(1.0, abs(diff)):  # float noise of a constant difference is not variance
        p = 1.0 if diff == 0 else 0.0
        return SeedTest(diff, diff, diff, p, df, "paired-t", n, n, sd)
    t = diff / se
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(t), df))
    return SeedTest(diff, diff - half, diff + half, p, df, "paired-t", n, n, sd)


def welch_t(arm: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> SeedTest:
    """Welch's unequal-variance t-test on per-seed values."""
    from scipy import stats

    na, nb = len(arm), len(baseline)
    diff = _mean(arm) - _mean(baseline) if na and nb else float("nan")
    if na < 2 or nb < 2:
        return SeedTest(diff, float("nan"), float("nan"), float("nan"), 0.0, "none", na, nb)
    va, vb = _var(arm) / na, _var(baseline) / nb
    se = math.sqrt(va + vb)
    if se <= 1e-12 * max(1.0, abs(diff)):
        p = 1.0 if diff == 0 else 0.0
        return SeedTest(diff, diff, diff, p, float(na + nb - 2), "welch-t", na, nb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(diff / se), df))
    return SeedTest(diff, diff - half, diff + half, p, df, "welch-t", na, nb)


def seed_test(arm: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95) -> SeedTest:
    """Per-seed values keyed by seed: paired t on the common seeds when the seed sets are equal, else Welch."""
    if set(arm) == set(baseline) and len(arm) >= 2:
        seeds = sorted(arm)
        return paired_t([arm[s] for s in seeds], [baseline[s] for s in seeds], confidence)
    return welch_t(list(arm.values()), list(baseline.values()), confidence)


def power_t(diff: float, sd: float, n: int, *, paired: bool = True, alpha: float = 0.05) -> float:
    """Power of the two-sided t-test to detect a true difference `diff` with n seeds per arm.

    paired: `sd` is the SD of the per-seed differences, df = n - 1, noncentrality diff·√n / sd.
    unpaired: `sd` is the per-arm seed SD (equal in both arms), df = 2n - 2, noncentrality diff / (sd·√(2/n)).
    """
    from scipy import stats

    if n < 2:
        return float("nan")
    if sd <= 0:
        return 1.0 if diff != 0 else alpha
    if paired:
        df, nc = n - 1, abs(diff) * math.sqrt(n) / sd
    else:
        df, nc = 2 * n - 2, abs(diff) / (sd * math.sqrt(2 / n))
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(diff: float, sd: float, *, paired: bool = True, power: float = 0.8, alpha: float = 0.05,
                 max_seeds: int = 1000) -> int | None:
    """Smallest n (>= 2) with power_t >= `power`; None if even max_seeds is not enough."""
    for n in range(2, max_seeds + 1):
        if power_t(diff, sd, n, paired=paired, alpha=alpha) >= power:
            return n
    return None


def min_detectable(sd: float, n: int, *, paired: bool = True, power: float = 0.8, alpha: float = 0.05) -> float:
    """Smallest true difference detected with probability `power` by n seeds (bisection on power_t)."""
    if n < 2 or not math.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    lo, hi = 0.0, sd
    while power_t(hi, sd, n, paired=paired, alpha=alpha) < power:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power_t(mid, sd, n, paired=paired, alpha=alpha) < power else (lo, mid)
    return hi


def pooled_seed_sd(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Pooled within-group SD over groups with >= 2 seeds, and its degrees of freedom (0 if none)."""
    ss, df = 0.0, 0
    for g in groups:
        if len(g) >= 2:
            m = _mean(g)
            ss += sum((x - m) ** 2 for x in g)
            df += len(g) - 1
    return (math.sqrt(ss / df), df) if df else (float("nan"), 0)


def sampling_variance(counts: Sequence[tuple[int, int]]) -> float:
    """Variance of one benchmark's mean@k (a fraction) from evaluation sampling alone, given (n, n_correct) per problem.

    Evaluating the same policy again draws new samples: problem i's score c/n varies by p(1 - p)/n, estimated without
    bias by p̂(1 - p̂)/(n - 1); problems are sampled independently, so the mean over N problems varies by the sum / N².
    nan when a problem has fewer than 2 samples (its sampling variance cannot be estimated)."""
    if not counts:
        return float("nan")
    total = 0.0
    for n, c in counts:
        if n < 2:
            return float("nan")
        p = c / n
        total += p * (1 - p) / (n - 1)
    return total / len(counts) ** 2


def average_sampling_variance(per_benchmark: Sequence[Sequence[tuple[int, int]]]) -> float:
    """Sampling variance of the Average (equal-weight mean over benchmarks, each sampled independently)."""
    if not per_benchmark:
        return float("nan")
    return sum(sampling_variance(b) for b in per_benchmark) / len(per_benchmark) ** 2
