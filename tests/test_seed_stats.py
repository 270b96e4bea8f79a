"""Across-seed statistics: hand-computed t-tests and power, and a simulation of the test's error rate and power."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlbench_cli.compare.seed_stats import (
    average_sampling_variance,
    min_detectable,
    paired_t,
    pooled_seed_sd,
    power_t,
    sampling_variance,
    seed_test,
    seeds_needed,
    welch_t,
)

# t quantiles (R: qt(0.975, df)): df 2 -> 4.302653, df 4 -> 2.776445
T975 = {2: 4.302653, 4: 2.776445}


@pytest.mark.parametrize(("arm", "base", "diff", "sd", "t_abs", "df"), [
    # d = 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t = 2·sqrt(3)
    ([11.0, 12.0, 13.0], [10.0, 10.0, 10.0], 2.0, 1.0, 2 * math.sqrt(3), 2),
    # d = 0.5, -0.5, 1.5: mean 0.5, sd 1, t = 0.5·sqrt(3)
    ([1.5, 0.5, 2.5], [1.0, 1.0, 1.0], 0.5, 1.0, 0.5 * math.sqrt(3), 2),
    # d = 1, 1, 1, 3, -1 : mean 1, var = (0+0+0+4+4)/4 = 2, t = 1/(sqrt(2)/sqrt(5))
    ([2.0, 2.0, 2.0, 4.0, 0.0], [1.0] * 5, 1.0, math.sqrt(2), math.sqrt(5 / 2), 4),
])
def test_paired_t_hand_values(arm, base, diff, sd, t_abs, df) -> None:
    from scipy import stats

    r = paired_t(arm, base)
    assert r.test == "paired-t" and r.df == df
    assert math.isclose(r.diff, diff) and math.isclose(r.sd_diff, sd)
    half = T975[df] * sd / math.sqrt(len(arm))
    assert math.isclose(r.ci_low, diff - half, rel_tol=1e-6) and math.isclose(r.ci_high, diff + half, rel_tol=1e-6)
    assert math.isclose(r.p_value, 2 * stats.t.sf(t_abs, df), rel_tol=1e-9)


def test_paired_t_known_p_value() -> None:
    # d = 1,2,3: t = 3.4641, df 2: two-sided p = 0.07418 (R: 2*pt(-2*sqrt(3), 2))
    assert math.isclose(paired_t([11.0, 12.0, 13.0], [10.0] * 3).p_value, 0.074180, abs_tol=1e-5)


def test_welch_t_hand_values() -> None:
    # a = 1,2,3 (var 1), b = 4,6,8 (var 4): diff -4, se = sqrt(1/3 + 4/3) = sqrt(5/3)
    # df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = (25/9) / (17/18) = 50/17
    r = welch_t([1.0, 2.0, 3.0], [4.0, 6.0, 8.0])
    assert r.test == "welch-t" and math.isclose(r.diff, -4.0)
    assert math.isclose(r.df, 50 / 17)
    from scipy import stats

    t = -4.0 / math.sqrt(5 / 3)
    assert math.isclose(r.p_value, 2 * stats.t.sf(abs(t), 50 / 17))
    assert 0.03 < r.p_value < 0.08


def test_degenerate_cases() -> None:
    assert paired_t([1.0], [0.0]).test == "none"
    assert not paired_t([1.0], [0.0]).significant
    assert welch_t([1.0, 2.0], [3.0]).test == "none"
    same = paired_t([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert same.diff == 0 and same.p_value == 1.0 and not same.significant
    shifted = paired_t([1.3, 1.4, 1.5], [0.3, 0.4, 0.5])  # a constant shift: zero variance of differences
    assert math.isclose(shifted.diff, 1.0) and shifted.p_value == 0.0


def test_seed_test_pairs_equal_seed_sets_only() -> None:
    assert seed_test({0: 2.0, 1: 3.0, 2: 5.0}, {0: 1.0, 1: 1.0, 2: 2.0}).test == "paired-t"
    assert seed_test({0: 2.0, 1: 3.0, 2: 5.0}, {0: 1.0, 1: 1.0, 3: 2.0}).test == "welch-t"
    # order of the dict does not matter for pairing
    a = seed_test({2: 5.0, 0: 2.0, 1: 3.0}, {0: 1.0, 1: 1.0, 2: 2.0})
    assert math.isclose(a.diff, 2.0) and math.isclose(a.sd_diff, 1.0)


@pytest.mark.parametrize(("diff", "sd", "n", "paired", "expected"), [
    # R power.t.test(n=10, delta=1, sd=1, type="paired") = 0.8031; n=3: 0.1793 (a 400k-draw Monte Carlo of
    # the t statistic gives 0.1788 and 0.8032)
    (1.0, 1.0, 3, True, 0.1793),
    (1.0, 1.0, 10, True, 0.8031),
    # R power.t.test(n=5, delta=2, sd=1) (two-sample) = 0.7905
    (2.0, 1.0, 5, False, 0.7905),
])
def test_power_against_r(diff, sd, n, paired, expected) -> None:
    assert math.isclose(power_t(diff, sd, n, paired=paired), expected, abs_tol=6e-4)


def test_seeds_needed_and_min_detectable_agree() -> None:
    assert seeds_needed(1.0, 1.0) == 10  # power 0.8031 at n=10, 0.7584 at n=9
    d3 = min_detectable(0.6, 3)
    assert math.isclose(power_t(d3, 0.6, 3), 0.8, abs_tol=1e-6)
    assert seeds_needed(d3 * 1.0001, 0.6) == 3 and seeds_needed(d3 * 0.95, 0.6) > 3
    assert min_detectable(0.0, 3) == 0.0 and math.isnan(min_detectable(1.0, 1))


def test_pooled_seed_sd() -> None:
    sd, df = pooled_seed_sd([[1.0, 2.0, 3.0], [4.0, 6.0, 8.0], [5.0]])
    assert df == 4 and math.isclose(sd, math.sqrt((2 + 8) / 4))
    assert math.isnan(pooled_seed_sd([[1.0]])[0])


def _simulate(effect: float, n_seeds: int, reps: int, rng: np.random.Generator, paired: bool) -> float:
    """Share of repetitions called significant. Per-seed Averages: a shared seed effect (data order) plus
    independent run noise, SD 1.2 points per arm as measured on the v1 testbed."""
    hits = 0
    for _ in range(reps):
        shared = rng.normal(0, 0.6, n_seeds) if paired else 0.0
        a = 40 + effect + shared + rng.normal(0, 1.2, n_seeds)
        b = 40 + shared + rng.normal(0, 1.2, n_seeds)
        test = paired_t(list(a), list(b)) if paired else welch_t(list(a), list(b))
        hits += test.significant
    return hits / reps


@pytest.mark.parametrize("n_seeds", [3, 4, 5])
def test_false_positive_rate_is_about_five_percent(n_seeds: int) -> None:
    """Two arms from one distribution, paired seeds (compare's default): 'significant' in 3-8% of 1,000 reps."""
    rate = _simulate(0.0, n_seeds, 1000, np.random.default_rng(11 + n_seeds), paired=True)
    assert 0.03 <= rate <= 0.08, rate


@pytest.mark.parametrize(("n_seeds", "band"), [(3, (0.02, 0.055)), (5, (0.03, 0.065))])
def test_welch_false_positive_rate(n_seeds: int, band: tuple[float, float]) -> None:
    """Welch (seed sets differ) is slightly conservative at 3 seeds: 3.4% in 200,000 draws, 4.4% at 5 seeds.
    4,000 repetitions keep the band tight around that rate, and never above 5.5-6.5%."""
    rate = _simulate(0.0, n_seeds, 4000, np.random.default_rng(21 + n_seeds), paired=False)
    assert band[0] <= rate <= band[1], rate


def test_power_matches_simulation() -> None:
    """A real difference is detected at the rate power_t predicts (paired, 3 seeds, SD of differences 1.2·√2)."""
    sd_diff = 1.2 * math.sqrt(2)
    effect = min_detectable(sd_diff, 3)  # 80% power by construction
    rate = _simulate(effect, 3, 1000, np.random.default_rng(5), paired=True)
    assert abs(rate - 0.8) < 0.04, (effect, rate)
    rate_small = _simulate(effect / 2, 3, 1000, np.random.default_rng(6), paired=True)
    assert abs(rate_small - power_t(effect / 2, sd_diff, 3)) < 0.04


def _seed_folder(root, averages: dict[str, list[float]]):
    """Runs whose single benchmark (4 problems, k=4) scores exactly the given Average per seed (25-point grid)."""
    from test_compare_fixtures import make_run

    for recipe, values in averages.items():
        for seed, v in enumerate(values):
            n_correct = round(v / 100 * 16)  # 16 samples in all
            counts = [min(4, max(0, n_correct - 4 * i)) for i in range(4)]
            make_run(root, f"{recipe}-s{seed}", recipe=recipe, label=recipe, algorithm="grpo", seed=seed,
                     evals={"testbed_easy": counts})
    return root


def test_power_report_hand_values(tmp_path) -> None:
    from rlbench_cli.compare.loader import load_runs
    from rlbench_cli.compare.seeds import per_seed_average, power_report

    # a: 50, 56.25, 62.5 (sd 6.25); b: 25, 37.5, 37.5 (sd 7.2169); differences 25, 18.75, 25 (sd 3.6084)
    _seed_folder(tmp_path, {"a": [50.0, 56.25, 62.5], "b": [25.0, 37.5, 37.5]})
    runs, _ = load_runs(tmp_path)
    assert per_seed_average([r for r in runs if r.recipe_name == "a"], ["testbed_easy"]) == {
        0: 50.0, 1: 56.25, 2: 62.5}
    rep = power_report(runs, 10.0)
    pooled = math.sqrt((6.25**2 * 2 + 7.216878**2 * 2) / 4)
    assert math.isclose(rep["seed_sd"], pooled, rel_tol=1e-6) and rep["seed_sd_df"] == 4
    assert math.isclose(rep["paired_sd"], 3.608439, rel_tol=1e-6) and rep["paired_sd_df"] == 2
    assert rep["seeds_needed_paired"] == seeds_needed(10.0, 3.608439)
    assert rep["seeds_needed_unpaired"] == seeds_needed(10.0, pooled, paired=False)


@pytest.mark.parametrize(("counts", "expected"), [
    ([(4, 2)], 0.25 / 3),  # p̂ 0.5: p̂(1 - p̂)/(n - 1)
    ([(4, 0), (4, 4)], 0.0),  # all-wrong and all-right problems do not move when resampled
    ([(4, 1), (4, 3)], (0.1875 / 3 + 0.1875 / 3) / 4),  # sum over problems / N²
    ([(16, 4), (8, 4), (2, 1)], (0.1875 / 15 + 0.25 / 7 + 0.25 / 1) / 9),  # k may differ per problem
    ([(1, 1), (4, 2)], float("nan")),  # one sample: no estimate
    ([], float("nan")),
])
def test_sampling_variance_hand_values(counts, expected) -> None:
    got = sampling_variance(counts)
    assert math.isclose(got, expected, rel_tol=1e-12) if math.isfinite(expected) else math.isnan(got)


def test_sampling_variance_matches_resampling() -> None:
    """The estimate is the variance a re-evaluation of the same policy shows (Monte Carlo, 20,000 redraws)."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 50)
    n = 16
    draws = rng.binomial(n, p, size=(20_000, 50)) / n
    truth = float(draws.mean(1).var())
    estimates = [sampling_variance([(n, int(c)) for c in row]) for row in (draws[:200] * n).round().astype(int)]
    assert math.isclose(float(np.mean(estimates)), truth, rel_tol=0.04)  # 0.983 here; p̂(1 - p̂)/n gives 0.922


def test_average_sampling_variance_weights_benchmarks_equally() -> None:
    a, b = [(4, 2)], [(4, 1), (4, 3)]
    assert math.isclose(average_sampling_variance([a, b]), (0.25 / 3 + 0.03125) / 4, rel_tol=1e-12)
    assert math.isnan(average_sampling_variance([]))


def test_power_report_splits_sampling_from_training(tmp_path) -> None:
    from rlbench_cli.compare.loader import load_runs
    from rlbench_cli.compare.seeds import power_report, render_power

    # per-run sampling variance (points²; one benchmark of 4 problems, k = 4): 50 -> [4,4,0,0] 0; 56.25 -> one
    # problem at 1/4: 1e4·0.0625/16 = 39.0625; 62.5 and 37.5 -> one problem at 2/4: 1e4·(0.25/3)/16 = 52.0833; 25 -> 0
    _seed_folder(tmp_path, {"a": [50.0, 56.25, 62.5], "b": [25.0, 37.5, 37.5]})
    runs, _ = load_runs(tmp_path)
    rep = power_report(runs, 10.0)
    v = (39.0625 + 3 * 1e4 * (0.25 / 3) / 16) / 6
    assert math.isclose(rep["eval_sampling_sd"], math.sqrt(v), rel_tol=1e-9)
    assert math.isclose(rep["eval_share_seed_var"], v / rep["seed_sd"] ** 2, rel_tol=1e-9)
    assert math.isclose(rep["eval_share_paired_var"], 2 * v / 3.608439**2, rel_tol=1e-5)
    # here sampling explains more than the observed paired variance, so nothing is left for training
    assert rep["paired_sd_without_eval"] == 0.0 and rep["mde_3_seeds_paired_without_eval"] == 0.0
    text = "\n".join(render_power(rep))
    assert "Evaluation sampling alone" in text and "too few seeds" in text
    assert power_report(runs, 10.0, metric="pass@k")["eval_sampling_sd"] is None  # not a mean over samples


def test_compare_power_cli(tmp_path) -> None:
    from helpers import run_cli

    _seed_folder(tmp_path, {"a": [50.0, 56.25, 62.5], "b": [25.0, 37.5, 37.5]})
    code, out, _ = run_cli("compare", str(tmp_path), "--power", "10")
    assert code == 0 and "seeds needed (paired t)" in out and "3.61" in out
    code, out, err = run_cli("compare", str(tmp_path), "--power", "-1")
    assert code == 2 and "--power" in out + err


def test_compare_reports_holds_across_seeds(tmp_path) -> None:
    from rlbench_cli.compare import run_compare

    # a - b per seed: 25, 18.75, 25 -> paired t: mean 22.917, sd 3.608, t = 11.0, df 2, p = 0.00816
    _seed_folder(tmp_path, {"a": [50.0, 56.25, 62.5], "b": [25.0, 37.5, 37.5], "c": [25.0, 43.75, 31.25]})
    res = run_compare(tmp_path, fmt="json", baseline="b", output=tmp_path / "t.json")
    tests = {t["row"]: t for t in res["seed_tests"]}
    assert tests["a"]["test"] == "paired-t" and math.isclose(tests["a"]["diff"], 22.916667, rel_tol=1e-6)
    assert math.isclose(tests["a"]["p_value"], 0.00816, abs_tol=2e-4) and tests["a"]["holds_across_seeds"] == "yes"
    # c - b: 0, 6.25, -6.25 -> mean 0: does not hold
    assert tests["c"]["holds_across_seeds"] == "no" and math.isclose(tests["c"]["diff"], 0.0, abs_tol=1e-9)
    md = run_compare(tmp_path, fmt="markdown", baseline="b", output=tmp_path / "t.md")
    assert md["seed_tests"] and "holds across seeds: yes" in (tmp_path / "t.md").read_text()
