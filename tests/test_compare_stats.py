"""Statistics of `rlbench compare` against hand-computed values and constructed bootstrap cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlbench_cli.compare.stats import (
    combine_se,
    format_bound,
    format_p,
    paired_bootstrap,
    standard_error,
    t_interval,
)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 1.0], 0.5),  # sd = 1/sqrt(2), / sqrt(2)
        ([1.0, 2.0, 3.0, 4.0], math.sqrt(5 / 3) / 2),  # var = 5/3
        ([0.3, 0.3, 0.3], 0.0),
        ([0.7], 0.0),
        ([], 0.0),
    ],
)
def test_standard_error(values: list[float], expected: float) -> None:
    assert math.isclose(standard_error(values), expected, abs_tol=1e-12)


@pytest.mark.parametrize(
    ("ses", "expected"),
    [
        ([0.03, 0.04], 0.025),  # sqrt(0.0025) / 2
        ([0.02], 0.02),
        ([0.01, 0.01, 0.01, 0.01], 0.005),
    ],
)
def test_combine_se(ses: list[float], expected: float) -> None:
    assert math.isclose(combine_se(ses), expected)


def test_t_interval_hand_values() -> None:
    mean, half = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    # t_{0.975, 2} = 4.302653, sd = 1, se = 1/sqrt(3)
    assert math.isclose(half, 4.302653 / math.sqrt(3), rel_tol=1e-6)
    mean, half = t_interval([0.5, 0.7])
    assert math.isclose(mean, 0.6)
    assert math.isclose(half, 12.706205 * 0.1, rel_tol=1e-6)  # t_{0.975,1}, se = 0.1
    mean, half = t_interval([0.4])
    assert mean == 0.4 and math.isnan(half)


def test_bootstrap_identical_arms() -> None:
    a = np.array([[0.0, 0.25, 1.0, 0.5, 0.75, 0.0, 1.0]])
    r = paired_bootstrap([a], [a.copy()], n_boot=2000)
    assert r.diff == 0.0 and r.ci_low == 0.0 and r.ci_high == 0.0
    assert r.p_value == 1.0


def test_bootstrap_dominating_arm() -> None:
    a, b = np.ones((1, 40)), np.zeros((1, 40))
    r = paired_bootstrap([a], [b], n_boot=2000)
    assert r.diff == 1.0 and math.isclose(r.ci_low, 1.0)
    assert r.p_value < 0.01


def test_bootstrap_uses_pairing() -> None:
    """A constant per-problem gain over widely varying problems: paired resampling gives zero width."""
    base = np.linspace(0.0, 0.9, 30)[None, :]
    r = paired_bootstrap([base + 0.05], [base], n_boot=2000)
    assert math.isclose(r.diff, 0.05)
    assert math.isclose(r.ci_low, 0.05) and math.isclose(r.ci_high, 0.05)
    assert r.p_value < 0.01
    # Unpaired (shuffled) problems would overlap heavily; pairing must be by column, so reversing one arm's
    # column order changes the answer.
    flipped = paired_bootstrap([base[:, ::-1] + 0.05], [base], n_boot=2000)
    assert flipped.ci_high - flipped.ci_low > 0.1


def test_bootstrap_resamples_seeds() -> None:
    """Two seeds at 1 and 0 vs a baseline at 0.5: diff 0, but seed resampling spreads it to ±0.5."""
    arm = np.array([np.ones(20), np.zeros(20)])
    base = np.full((1, 20), 0.5)
    r = paired_bootstrap([arm], [base], n_boot=4000)
    assert r.diff == 0.0
    assert math.isclose(r.ci_low, -0.5) and math.isclose(r.ci_high, 0.5)
    assert r.p_value > 0.9
    assert r.n_seeds == 2 and r.n_seeds_baseline == 1


def test_bootstrap_average_is_mean_over_benchmarks() -> None:
    """10 problems all solved vs none, plus 20 problems tied: Average diff = 0.5 (not pooled 10/30)."""
    r = paired_bootstrap(
        [np.ones((1, 10)), np.zeros((1, 20))], [np.zeros((1, 10)), np.zeros((1, 20))], n_boot=1000
    )
    assert math.isclose(r.diff, 0.5)
    assert r.n_problems == 30


def test_bootstrap_deterministic_and_seeded() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random((2, 50)), rng.random((3, 50))
    r1 = paired_bootstrap([a], [b], n_boot=1500)
    r2 = paired_bootstrap([a], [b], n_boot=1500)
    assert r1 == r2
    assert r1.ci_low <= r1.diff <= r1.ci_high


@pytest.mark.parametrize(
    ("arm", "base"),
    [
        ([np.ones((1, 3))], [np.ones((1, 4))]),  # problem counts differ
        ([], []),  # no benchmark
        ([np.ones((1, 3)), np.ones((2, 3))], [np.ones((1, 3))] * 2),  # seed count differs across benchmarks
    ],
)
def test_bootstrap_rejects_bad_shapes(arm: list, base: list) -> None:
    with pytest.raises(ValueError):
        paired_bootstrap(arm, base, n_boot=10)


@pytest.mark.parametrize(("p", "shown"), [
    (0.049974, "0.04997"),   # .3g would print 0.05 next to "holds across seeds: yes"
    (0.0500004, "0.05"),     # not significant, and 0.05 is not below alpha
    (0.04999996, "0.04999996"),
    (0.04999999999, "0.05"),  # below alpha only past 7 digits, the most tried
    (0.0581121, "0.0581"),
    (0.000123456, "0.000123"),
    (0.956, "0.956"),
    (1.0, "1"),
    (float("nan"), "nan"),
])
def test_format_p_never_rounds_across_alpha(p, shown):
    assert format_p(p) == shown


@pytest.mark.parametrize(("x", "shown"), [
    (0.0008523865866303382, "+0.00085"),  # an interval that excludes 0 must not print +0.00
    (-0.004, "-0.004"),
    (0.0, "+0.00"),
    (4.363425925925934, "+4.36"),
    (-11.5712, "-11.57"),
])
def test_format_bound_never_shows_a_nonzero_as_zero(x, shown):
    assert format_bound(x) == shown
