"""Wave-2 advantage estimators against values computed by hand from each paper's formula (docs/algorithms.md)."""

from __future__ import annotations

import math

import pytest
import torch

from rlbench_cli.algorithms.baselines import (
    gfpo_keep,
    kl_shaped_rewards,
    lite_ppo_advantage,
    opo_advantage,
    opo_batch_advantage,
    reinforce_pp_advantage,
    remax_advantage,
    riskpo_advantage,
)

NAN = float("nan")


def t(x):  # noqa: ANN001, ANN201
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize(("rewards", "lengths", "expected"), [
    ([[1, 0, 1]], [[2, 4, 6]], [[1 / 3, -2 / 3, 1 / 3]]),      # b = (2 + 6) / 12
    ([[1, 1]], [[3, 7]], [[0, 0]]),                            # all equal
    ([[1]], [[5]], [[0]]),                                     # group of one: b = r (LMOps)
    ([[1, NAN, 0]], [[1, 5, 3]], [[0.75, 0, -0.25]]),          # missing reward: out of the baseline
    ([[1, 0]], [[0, 0]], [[0, 0]]),                            # no tokens at all
])
def test_opo(rewards, lengths, expected) -> None:  # noqa: ANN001
    assert torch.allclose(opo_advantage(t(rewards), t(lengths)), t(expected), atol=1e-12)


@pytest.mark.parametrize(("rewards", "lengths", "expected"), [
    ([[1, 0], [1, 1]], [[2, 4], [1, 3]], [[1 - 6 / 10, -6 / 10], [1 - 6 / 10, 1 - 6 / 10]]),  # b = (2+1+3)/10
    ([[1, 1], [1, 1]], [[2, 4], [1, 3]], [[0, 0], [0, 0]]),                                  # all equal
    ([[1]], [[5]], [[0]]),                                                                   # one response
    ([[1, NAN], [0, 1]], [[1, 9], [3, 4]], [[1 - 5 / 8, 0], [-5 / 8, 1 - 5 / 8]]),           # NaN: out of b
    ([[1, 0]], [[0, 0]], [[0, 0]]),                                                          # no tokens at all
])
def test_opo_batch(rewards, lengths, expected) -> None:  # noqa: ANN001
    assert torch.allclose(opo_batch_advantage(t(rewards), t(lengths)), t(expected), atol=1e-12)


@pytest.mark.parametrize(("rewards", "expected"), [
    ([[1, 0], [1, 1]], [[1, -1], [0, 0]]),   # group means .5, 1; batch std of [1,0,1,1] (unbiased) = .5
    ([[1, 1], [1, 1]], [[0, 0], [0, 0]]),    # all equal: std 0, numerator 0
    ([[1], [0]], [[0], [0]]),                # groups of one
    ([[1, NAN], [0, 1]], [[0, 0], [-0.5 / math.sqrt(1 / 3), 0.5 / math.sqrt(1 / 3)]]),  # std of [1, 0, 1]
])
def test_lite_ppo(rewards, expected) -> None:  # noqa: ANN001
    assert torch.allclose(lite_ppo_advantage(t(rewards), std_eps=0.0 if expected[0] != [0, 0] else 1e-6),
                          t(expected), atol=1e-6)


def test_remax() -> None:
    assert torch.equal(remax_advantage(t([[1, 0], [0, 0]]), t([1, 0])), t([[0, -1], [0, 0]]))
    assert torch.equal(remax_advantage(t([[1, -1]]), t([NAN])), t([[1, -1]]))  # no greedy reward: baseline 0
    assert torch.equal(remax_advantage(t([[NAN, 1]]), t([0])), t([[0, 1]]))


@pytest.mark.parametrize(("rewards", "lengths", "k", "metric", "expected"), [
    ([[1, 1, 0, 1]], [[5, 3, 3, 9]], 2, "length", [[False, True, True, False]]),
    ([[1, 1, 0, 1]], [[5, 3, 3, 9]], 2, "reward_per_token", [[True, True, False, False]]),  # .2 .33 0 .11
    ([[1, 1, 0, 1]], [[5, 3, 3, 9]], 9, "length", [[True, True, True, True]]),
    ([[1, 1]], [[4, 4]], 1, "length", [[True, False]]),                   # tie: the earlier one
    ([[NAN, 1, 1]], [[1, 3, 2]], 1, "length", [[False, False, True]]),    # no reward: never kept
])
def test_gfpo_keep(rewards, lengths, k, metric, expected) -> None:  # noqa: ANN001
    assert gfpo_keep(t(rewards), t(lengths), k, metric).tolist() == expected


def test_gfpo_keep_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        gfpo_keep(t([[1.0]]), t([[1.0]]), 0)
    with pytest.raises(ValueError):
        gfpo_keep(t([[1.0]]), t([[1.0]]), 1, "entropy")


def test_kl_in_reward_k1_sum() -> None:
    logp, ref = t([[-1.0, -2.0]]), t([[-1.5, -1.0]])
    # k1 per token = [0.5, -1.0] (negative k1 kept, not clamped): r - 0.1 * (-0.5)
    assert torch.allclose(kl_shaped_rewards(t([1.0]), logp, ref, t([[1, 1]]), 0.1), t([1.05]))
    assert torch.allclose(kl_shaped_rewards(t([1.0]), logp, ref, t([[1, 0]]), 0.1), t([0.95]))  # mask
    assert torch.isnan(kl_shaped_rewards(t([NAN]), logp, ref, t([[1, 1]]), 0.1)).all()


def test_reinforce_pp_global_whitening() -> None:
    mask = t([[1, 1, 0], [1, 0, 0]])
    # returns: row 0 [1, 1], row 1 [-1]; mean 1/3, biased var 8/9
    a = reinforce_pp_advantage(t([1.0, -1.0]), mask, 2, baseline=False)
    s = math.sqrt(8 / 9)
    assert torch.allclose(a, t([[(2 / 3) / s, (2 / 3) / s, 0], [(-4 / 3) / s, 0, 0]]), atol=1e-9)
    # baseline: [1, 0] - 0.5 -> [0.5, -0.5]; the same shape after whitening
    b = reinforce_pp_advantage(t([1.0, 0.0]), mask, 2, baseline=True)
    assert torch.allclose(b, a, atol=1e-9)
    # two groups: the group baseline is no longer absorbed by the whitening
    one = t([[1], [1], [1], [1]])
    plain = reinforce_pp_advantage(t([1.0, 0.0, 1.0, 1.0]), one, 2, baseline=False)  # mean .75, var .1875
    assert torch.allclose(plain.flatten(), t([0.25, -0.75, 0.25, 0.25]) / math.sqrt(0.1875), atol=1e-9)
    based = reinforce_pp_advantage(t([1.0, 0.0, 1.0, 1.0]), one, 2, baseline=True)  # [.5, -.5, 0, 0]
    assert torch.allclose(based.flatten(), t([0.5, -0.5, 0.0, 0.0]) / math.sqrt(0.125), atol=1e-9)


def test_reinforce_pp_kl_enters_as_reward_to_go() -> None:
    # token rewards [-0.1*0.5, 1 - 0.1*1.0] = [-0.05, 0.9]; returns [0.85, 0.9]; whitened -> [-1, 1]
    a = reinforce_pp_advantage(t([1.0]), t([[1, 1]]), 1, baseline=False, token_kl=t([[0.5, 1.0]]), kl_coef=0.1)
    assert torch.allclose(a, t([[-1.0, 1.0]]), atol=1e-6)
    # k1 is clamped to +-10 (OpenRLHF compute_approx_kl): 50 acts as 10
    big = reinforce_pp_advantage(t([1.0, 0.0]), t([[1, 1], [1, 1]]), 2, baseline=False,
                                 token_kl=t([[50.0, 0.0], [0.0, 0.0]]), kl_coef=0.1)
    ten = reinforce_pp_advantage(t([1.0, 0.0]), t([[1, 1], [1, 1]]), 2, baseline=False,
                                 token_kl=t([[10.0, 0.0], [0.0, 0.0]]), kl_coef=0.1)
    assert torch.allclose(big, ten)


def test_reinforce_pp_degenerate_batches() -> None:
    # all-equal rewards: variance 0 -> clamped at 1e-8, numerator 0
    assert torch.equal(reinforce_pp_advantage(t([1.0, 1.0]), t([[1, 1], [1, 1]]), 2, baseline=False),
                       torch.zeros(2, 2, dtype=torch.float64))
    # a group of one with the group baseline has nothing to learn from
    assert torch.equal(reinforce_pp_advantage(t([1.0]), t([[1, 1]]), 1, baseline=True),
                       torch.zeros(1, 2, dtype=torch.float64))
    # an empty row stays zero and does not enter the moments
    a = reinforce_pp_advantage(t([1.0, -1.0, 5.0]), t([[1, 0], [1, 0], [0, 0]]), 1, baseline=False)
    assert torch.allclose(a, t([[1.0, 0], [-1.0, 0], [0, 0]]), atol=1e-6)


# RiskPO: one bundle of two prompts, four papers. S = [2, 1, 1, 0]; torch.quantile (linear) at .25 / .75 gives
# q_a = .75, q_b = 1.25; natural-baseline RVaR / (beta - alpha) = [0, -.5, -.5, -1]; std(S) = sqrt(2/3).
_RISK = [[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
_SD = math.sqrt(2 / 3)


@pytest.mark.parametrize(("kw", "per_paper", "scale"), [
    ({"credit": "uniform", "mix_weight": 0.0}, [0, -0.5, -0.5, -1.0], [1.0, 1.0]),
    ({"credit": "std", "mix_weight": 0.0}, [0, -0.5, -0.5, -1.0], [1 / math.sqrt(1 / 3)] * 2),  # prompt std
    ({"credit": "sum_mean", "mix_weight": 0.0}, [0, -0.5, -0.5, -1.0], [0.5, 0.5]),  # every share is 1/2 here
    ({"credit": "uniform", "mix_weight": 1.5}, [0, -0.2, -0.2, -2.2], [1.0, 1.0]),  # CVaR: -(q_a - S)+ / alpha
    ({"credit": "uniform", "mix_weight": 0.0, "natural_baseline": False}, [1.0, 0.5, 0.5, 0], [1.0, 1.0]),
])
def test_riskpo_bundle_advantage(kw, per_paper, scale) -> None:  # noqa: ANN001
    a = riskpo_advantage(t(_RISK), bundle=2, alpha=0.25, beta=0.75, **kw)
    expected = t([[p / _SD * s for p in per_paper] for s in scale])
    assert torch.allclose(a, expected, atol=1e-4), a


def test_riskpo_score_credit() -> None:
    # RiskPO core_algos credit_assign_mode "score": 0.5 x the paper's advantage for a response scoring > 0, else 1.5
    a = riskpo_advantage(t(_RISK), bundle=2, alpha=0.25, beta=0.75, mix_weight=0.0, credit="score")
    per_paper = [0, -0.5, -0.5, -1.0]
    expected = t([[p / _SD * (0.5 if r > 0 else 1.5) for p, r in zip(per_paper, row, strict=True)] for row in _RISK])
    assert torch.allclose(a, expected, atol=1e-4), a
    # with rlbench's {-1, 1} rewards, "> 0" is still "correct"
    b = riskpo_advantage(t(_RISK) * 2 - 1, bundle=2, alpha=0.25, beta=0.75, mix_weight=0.0, credit="score")
    assert torch.allclose(b, expected, atol=1e-4), b  # S and q scale by 2 and shift, std(S) scales by 2: same A


def test_riskpo_edge_cases() -> None:
    assert torch.equal(riskpo_advantage(t([[1.0, 1.0], [1.0, 1.0]]), bundle=2), torch.zeros(2, 2, dtype=torch.float64))
    assert torch.equal(riskpo_advantage(t([[1.0]]), bundle=5), torch.zeros(1, 1, dtype=torch.float64))  # one paper
    # a last, smaller bundle: prompt 3 alone, S = [1, 0] -> q_a .25, q_b .75 -> [0, -1] / std(.7071)
    a = riskpo_advantage(t(_RISK + [[1.0, 0.0, 1.0, 0.0]])[:, :2], bundle=2, alpha=0.25, beta=0.75, mix_weight=0.0,
                         credit="uniform")
    assert torch.allclose(a[2], t([0.0, -1.0 / math.sqrt(0.5)]), atol=1e-4)
    with pytest.raises(ValueError):
        riskpo_advantage(t(_RISK), alpha=0.9, beta=0.2)
