"""Statistics for `rlbench compare`: standard errors, Student-t intervals and a paired bootstrap.

All functions are pure (numpy in, numbers out). numpy/scipy are imported inside functions so that importing
the compare package stays cheap for the CLI.

Bootstrap design (see `paired_bootstrap`): problems are the paired unit. In every resample the same problem
indices are drawn for both arms (per benchmark), and, when an arm has several seeds, that arm's seeds are also
resampled with replacement (independently per arm: seeds of two recipes are different runs, not pairs). The
statistic is the mean over benchmarks of (mean over the arm's seeds and problems), difference row − baseline.
The p-value is two-sided and percentile-based: twice the smaller tail mass of the bootstrap differences on
either side of zero, with the +1 correction so it is never exactly 0.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any


def standard_error(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1) / sqrt(n); 0.0 for fewer than two values."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def combine_se(ses: Sequence[float]) -> float:
    """SE of the mean of independent estimates: sqrt(sum se²) / n (used for the Average column)."""
    if not ses:
        return float("nan")
    return math.sqrt(sum(s * s for s in ses)) / len(ses)


def format_p(p: float, alpha: float = 0.05, digits: int = 3) -> str:
    """p with `digits` significant digits, more where rounding would carry it across alpha: a test called
    significant never prints p=0.05 (0.049974 -> '0.04997'), one that is not never prints below it."""
    if not math.isfinite(p):
        return "nan"
    for d in range(digits, max(digits, 7) + 1):
        text = f"{p:.{d}g}"
        if (float(text) < alpha) == (p < alpha):
            break
    return text


def format_bound(x: float, decimals: int = 2) -> str:
    """A signed interval bound (or difference) with `decimals` decimals, but never a nonzero value shown as +0.00
    (an interval that excludes 0 must not print a bound of 0): 0.00085 -> '+0.00085'."""
    text = f"{x:+.{decimals}f}"
    return f"{x:+.2g}" if x != 0 and math.isfinite(x) and float(text) == 0 else text


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t confidence interval; half-width is nan for a single value."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * standard_error(values)
    return mean, half


@dataclass(frozen=True)
class BootstrapResult:
    """Difference (arm − baseline), its percentile interval and two-sided p-value."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_boot: int
    n_problems: int
    n_seeds: int
    n_seeds_baseline: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=16)
def resample_counts(n_problems: int, n_boot: int, seed: int, key: str) -> Any:
    """Read-only (n_boot × n_problems) matrix: how often each problem is drawn in each bootstrap replicate.

    Deterministic in (seed, key, n_problems) and cached, so every row compared with one baseline reuses the
    same draws of a benchmark (common random numbers) and the per-benchmark and Average tests agree.
    """
    import numpy as np

    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), n_problems])
    dtype = np.uint16 if n_problems < 2**16 else np.uint32
    out = np.empty((n_boot, n_problems), dtype=dtype)
    for start in range(0, n_boot, 1000):
        m = min(1000, n_boot - start)
        idx = rng.integers(0, n_problems, size=(m, n_problems))
        flat = (np.arange(m)[:, None] * n_problems + idx).ravel()
        out[start : start + m] = np.bincount(flat, minlength=m * n_problems).reshape(m, n_problems)
    out.flags.writeable = False
    return out


def paired_bootstrap(
    arm: Sequence[Any],
    baseline: Sequence[Any],
    *,
    keys: Sequence[str] | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    chunk: int = 2000,
) -> BootstrapResult:
    """Paired bootstrap of mean(arm) − mean(baseline) over benchmarks.

    `arm[j]` and `baseline[j]` are per-problem score matrices for benchmark j, shape (seeds, problems),
    with the problem columns in the same order in both arms (pair them by problem id before calling). The seed
    counts may differ between the arms but must be the same across benchmarks within one arm. `keys` names the
    benchmarks (default: their positions); the problem draws depend only on (seed, key, problem count).
    """
    import numpy as np

    if len(arm) != len(baseline) or not arm:
        raise ValueError("arm and baseline need the same, non-zero number of benchmarks")
    keys = list(keys) if keys is not None else [str(j) for j in range(len(arm))]
    if len(keys) != len(arm):
        raise ValueError("one key per benchmark")
    a_mats = [np.atleast_2d(np.asarray(m, dtype=float)) for m in arm]
    b_mats = [np.atleast_2d(np.asarray(m, dtype=float)) for m in baseline]
    sa, sb = a_mats[0].shape[0], b_mats[0].shape[0]
    for a, b in zip(a_mats, b_mats, strict=True):
        if a.shape[1] != b.shape[1] or a.shape[1] == 0:
            raise ValueError(f"problem counts differ or are zero: {a.shape[1]} vs {b.shape[1]}")
        if a.shape[0] != sa or b.shape[0] != sb:
            raise ValueError("seed counts must be the same across benchmarks within an arm")

    observed = float(np.mean([a.mean() - b.mean() for a, b in zip(a_mats, b_mats, strict=True)]))
    counts = [resample_counts(a.shape[1], n_boot, seed, k) for a, k in zip(a_mats, keys, strict=True)]
    # Seeds are runs: one seed draw per replicate, shared by all benchmarks of that arm.
    rng = np.random.default_rng([seed, sa, sb])
    seed_a = rng.integers(0, sa, size=(n_boot, sa)) if sa > 1 else np.zeros((n_boot, 1), dtype=int)
    seed_b = rng.integers(0, sb, size=(n_boot, sb)) if sb > 1 else np.zeros((n_boot, 1), dtype=int)
    diffs = np.zeros(n_boot)
    for start in range(0, n_boot, chunk):
        sl = slice(start, min(n_boot, start + chunk))
        rows = np.arange(sl.stop - sl.start)[:, None]
        for a, b, c in zip(a_mats, b_mats, counts, strict=True):
            w = c[sl].astype(float) / a.shape[1]
            # Resampled mean of every seed: (m × p)·(seeds × p)ᵀ. einsum, not BLAS: with seeds ≤ a few, a
            # threaded GEMM is dominated by thread start-up and was 20× slower on a busy 2-core machine.
            a_means, b_means = np.einsum("mp,sp->ms", w, a), np.einsum("mp,sp->ms", w, b)
            diffs[sl] += a_means[rows, seed_a[sl]].mean(axis=1) - b_means[rows, seed_b[sl]].mean(axis=1)
    diffs /= len(a_mats)

    diffs[np.abs(diffs) < 1e-12] = 0.0  # float noise must not decide the sign of a zero difference
    alpha = 1.0 - confidence
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    below = (1 + int(np.sum(diffs <= 0))) / (n_boot + 1)
    above = (1 + int(np.sum(diffs >= 0))) / (n_boot + 1)
    p_value = min(1.0, 2 * min(below, above))
    return BootstrapResult(
        diff=observed,
        ci_low=float(lo),
        ci_high=float(hi),
        p_value=float(p_value),
        n_boot=n_boot,
        n_problems=int(sum(a.shape[1] for a in a_mats)),
        n_seeds=sa,
        n_seeds_baseline=sb,
    )
