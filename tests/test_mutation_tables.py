"""Table-driven tests for the survivors `make mutants` found in algorithms/advantages.py and algorithms/losses.py
that change a value (hand-computed expectations). The README lists the survivors left alive and why."""

from __future__ import annotations

import math

import pytest
import torch

from rlbench_cli.algorithms.advantages import ESTIMATORS, compute_advantages, overlong_penalty, raft_advantage
from rlbench_cli.algorithms.losses import aggregate_loss, gae, kl_penalty, masked_whiten, policy_loss, value_loss

NAN = float("nan")
S3 = math.sqrt(4 / 3)


@pytest.mark.parametrize(("estimator", "rewards", "valid", "expected"), [
    # an explicit `valid` mask excludes a finite reward (the 4th); NaN rows are never valid
    ("raft", [1, -1, 1, -1], [1, 1, 1, 0], [1, 0, 1, 0]),
    ("reinforce", [1, -1, 1, -1], [1, 1, 1, 0], [1, -1, 1, 0]),
    ("reinforce_rej", [1, -1, 1, -1], [1, 1, 1, 0], [1, -1, 1, 0]),
    ("grpo", [1, -1, 1, -1], [1, 1, 1, 0], [(2 / 3) / S3, (-4 / 3) / S3, (2 / 3) / S3, 0]),
    ("dr_grpo", [1, -1, 1, -1], [1, 1, 1, 0], [2 / 3, -4 / 3, 2 / 3, 0]),
    ("rloo", [1, -1, 1, -1], [1, 1, 1, 0], [1, -2, 1, 0]),
    ("gpg", [1, -1, 1, -1], [1, 1, 1, 0], [2 / 3, -4 / 3, 2 / 3, 0]),  # alpha = 3 valid / 3 nonzero
    ("dr_grpo", [1, -1, NAN, 1], None, [2 / 3, -4 / 3, 0, 2 / 3]),
    ("rloo", [1, -1, NAN, 1], None, [1, -2, 0, 1]),
])
def test_estimators_honour_the_valid_rows(estimator, rewards, valid, expected):
    r = torch.tensor([rewards], dtype=torch.float64)
    kwargs = {"valid": torch.tensor([valid], dtype=torch.bool)} if valid is not None else {}
    if estimator == "raft":
        kwargs["correct"] = r == 1
    got = ESTIMATORS[estimator](r, **kwargs)
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float64), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("rewards", "kwargs", "expected"), [
    ([[1, -1]], {}, [1 / (math.sqrt(2) + 1e-6), -1 / (math.sqrt(2) + 1e-6)]),  # group of two: var / (k - 1)
    ([[1, -1, 1, -1], [1, 1, 1, -1]], {}, [1 / S3, -1 / S3, 1 / S3, -1 / S3, 0.5, 0.5, 0.5, -1.5]),  # per group
    ([[1, -1]], {"std_eps": 0.5}, [1 / (math.sqrt(2) + 0.5), -1 / (math.sqrt(2) + 0.5)]),
])
def test_grpo_std_per_group(rewards, kwargs, expected):
    got = ESTIMATORS["grpo"](torch.tensor(rewards, dtype=torch.float64), **kwargs).reshape(-1)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_raft_uses_the_verdict_and_falls_back_to_max_r_0():
    res = compute_advantages(torch.tensor([2.0, 0.5, 0.5, 2.0]), torch.tensor([True, False, False, True]), 4, "raft")
    assert res.advantages.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert raft_advantage(torch.tensor([[2.0, -1.0, 0.5]])).tolist() == [[2.0, 0.0, 0.5]]


@pytest.mark.parametrize(("rewards", "estimator", "kwargs", "keep"), [
    ([1, 1, NAN, 1, 1, -1, 1, -1], "grpo", {"filter_mode": "drop"}, [0, 0, 0, 0, 1, 1, 1, 1]),  # equal despite NaN
    ([1, 1, 1, 1, 1, -1, -1, -1], "raft", {"filter_mode": "drop", "drop_all_correct": True},
     [0, 0, 0, 0, 1, 0, 0, 0]),
])
def test_keep_mask_table(rewards, estimator, kwargs, keep):
    r = torch.tensor(rewards, dtype=torch.float64)
    assert compute_advantages(r, r == 1, 4, estimator, **kwargs).keep.tolist() == [bool(k) for k in keep]


def test_stats_of_a_single_group_and_a_single_row():
    assert compute_advantages(torch.ones(4), torch.ones(4, dtype=torch.bool), 4, "grpo").stats["frac_all_correct"] == 1
    assert compute_advantages(torch.ones(1), torch.ones(1, dtype=torch.bool), 1, "reinforce").stats["kept_frac"] == 1
    with pytest.raises(ValueError):
        compute_advantages(torch.zeros(4), torch.zeros(3, dtype=torch.bool), 4, "grpo")


@pytest.mark.parametrize(("lengths", "max_len", "cache", "expected"), [
    ([3, 5, 7, 9], 8, 4, [0, -0.25, -0.75, -1]),  # default factor 1
    ([7, 8, 9], 8, 1, [0, -1, -1]),  # a cache of one token is allowed
    ([0, 2, 4, 5], 4, 4, [0, -0.5, -1, -1]),  # cache = max_len is allowed
])
def test_overlong_penalty_table(lengths, max_len, cache, expected):
    assert overlong_penalty(torch.tensor(lengths), max_len, cache).tolist() == pytest.approx(expected)


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize(("x", "expected"), [
    ([2.0], [0.0]),  # one entry: biased var 0, no NaN
    ([1.0, 3.0], [-1 / math.sqrt(2), 1 / math.sqrt(2)]),  # two entries: unbiased var 2
    ([2.0, 2.0, 2.0], [0.0, 0.0, 0.0]),  # constant: var 0 + eps
])
def test_masked_whiten_table(x, expected):
    got = masked_whiten(torch.tensor([x]), torch.ones(1, len(x)))
    assert got[0].tolist() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("adv", "ratio", "kwargs", "loss", "clip_frac", "dual_frac"), [
    (0.0, 2.0, {}, 0.0, 0.0, 0.0),  # A = 0 is never counted as clipped
    (0.5, 0.5, {}, -0.25, 0.0, 0.0),  # A > 0, ratio low: PPO does not clip that side
    (0.5, 1.0, {"dual_clip_c": 3.0}, -0.5, 0.0, 0.0),  # dual clip only for A < 0
    (-1.0, 4.0, {"dual_clip_c": 1.5}, 1.5, 0.0, 1.0),  # c = 1.5 is valid; rho > 1 + eps with A < 0 is no clip
])
def test_policy_loss_clip_table(adv, ratio, kwargs, loss, clip_frac, dual_frac):
    logp = torch.tensor([[math.log(ratio)]])
    out, stats = policy_loss(logp, torch.zeros(1, 1), torch.tensor([adv]), torch.ones(1, 1), **kwargs)
    assert out.item() == pytest.approx(loss, rel=1e-5)
    assert stats["clip_frac"].item() == clip_frac and stats["dual_clip_frac"].item() == dual_frac


def test_gspo_log_ratio_is_capped_at_10():
    out, _ = policy_loss(torch.tensor([[10.5]]), torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1),
                         ratio_level="sequence", clip_high=1e9)
    assert out.item() == pytest.approx(-math.exp(10.0), rel=1e-5)


@pytest.mark.parametrize(("loss", "mask", "expected"), [
    ([[1.0, 2.0], [3.0, 0.0]], [[1, 1], [1, 0]], (1.5 + 3.0) / 2),  # a one-token row counts
    ([[4.0, 0.0]], [[1, 0]], 4.0),  # a single row of one token
])
def test_seq_mean_token_mean_table(loss, mask, expected):
    assert aggregate_loss(torch.tensor(loss), torch.tensor(mask), "seq_mean_token_mean").item() == expected


def test_low_var_kl_gradient_is_finite_both_ways():
    for diff in (-100.0, 100.0):
        logp = torch.tensor([diff], requires_grad=True)
        kl_penalty(logp, torch.zeros(1), "low_var_kl").sum().backward()
        assert torch.isfinite(logp.grad).all()


def test_gae_defaults_one_token_and_a_masked_middle_token():
    a, r = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]]), torch.ones(1, 3), whiten=False)
    assert a.tolist()[0] == pytest.approx([0.5, 0.4, 0.3])  # gamma = lam = 1 by default
    a1, _ = gae(torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.ones(1, 1), whiten=False)
    assert a1.item() == pytest.approx(0.5)
    a, r = gae(torch.tensor([[0.0, 9.0, 1.0]]), torch.tensor([[0.5, 3.0, 0.7]]), torch.tensor([[1, 0, 1]]),
               whiten=False)
    assert a.tolist()[0] == pytest.approx([0.5, 0.0, 0.3]) and r.tolist()[0] == pytest.approx([1.0, 0.0, 1.0])


@pytest.mark.parametrize(("v", "old", "ret", "kwargs", "loss"), [
    ([1.0], [0.0], [2.0], {}, 0.5 * 2.25),  # default clip 0.5
    ([-1.0], [0.0], [-2.0], {"clip": 0.5}, 0.5 * 2.25),  # clipped up to -0.5: further from -2
])
def test_value_loss_table(v, old, ret, kwargs, loss):
    out, _ = value_loss(torch.tensor([v]), torch.tensor([old]), torch.tensor([ret]), torch.ones(1, 1), **kwargs)
    assert out.item() == pytest.approx(loss)
