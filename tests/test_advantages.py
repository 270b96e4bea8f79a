"""Advantage estimators: hand-computed values for every estimator and edge case, filters, stats, slicing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlbench_cli.algorithms.advantages import (
    ESTIMATORS,
    AdvantageResult,
    compute_advantages,
    local_slice,
    overlong_penalty,
)
from rlbench_cli.errors import UserError

NAN = float("nan")
S3 = 2 / math.sqrt(3)  # unbiased std of {1, -1, -1}

# (id, estimator, group_size, rewards, correct, kwargs, expected advantages, expected keep)
CASES = [
    ("grpo_pm1", "grpo", 4, [1, -1, -1, -1], [1, 0, 0, 0], {"std_eps": 0.0},
     [1.5, -0.5, -0.5, -0.5], [1, 1, 1, 1]),
    ("grpo_01_same_as_pm1", "grpo", 4, [1, 0, 0, 0], [1, 0, 0, 0], {"std_eps": 0.0},
     [1.5, -0.5, -0.5, -0.5], [1, 1, 1, 1]),
    ("grpo_default_eps", "grpo", 4, [1, 0, 0, 0], [1, 0, 0, 0], {},
     [0.75 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6)], [1, 1, 1, 1]),
    ("grpo_all_equal_zero", "grpo", 4, [1, 1, 1, 1], [1, 1, 1, 1], {}, [0, 0, 0, 0], [1, 1, 1, 1]),
    ("grpo_all_equal_eps0_no_nan", "grpo", 2, [0, 0, 1, 1], [0, 0, 1, 1], {"std_eps": 0.0}, [0, 0, 0, 0],
     [1, 1, 1, 1]),
    ("grpo_all_equal_drop", "grpo", 4, [1, 1, 1, 1], [1, 1, 1, 1], {"filter_mode": "drop"},
     [0, 0, 0, 0], [0, 0, 0, 0]),
    ("grpo_group_of_one", "grpo", 1, [1, -1], [1, 0], {}, [0, 0], [1, 1]),
    ("grpo_nan", "grpo", 4, [1, NAN, -1, -1], [1, 0, 0, 0], {"std_eps": 0.0},
     [(4 / 3) / S3, 0, (-2 / 3) / S3, (-2 / 3) / S3], [1, 0, 1, 1]),
    ("grpo_one_valid", "grpo", 4, [NAN, NAN, NAN, 1], [0, 0, 0, 1], {}, [0, 0, 0, 0], [0, 0, 0, 1]),
    ("dr_grpo_pm1", "dr_grpo", 4, [1, -1, -1, -1], [1, 0, 0, 0], {}, [1.5, -0.5, -0.5, -0.5], [1, 1, 1, 1]),
    ("dr_grpo_01", "dr_grpo", 4, [1, 0, 0, 0], [1, 0, 0, 0], {}, [0.75, -0.25, -0.25, -0.25], [1, 1, 1, 1]),
    ("rloo_pm1", "rloo", 4, [1, -1, -1, -1], [1, 0, 0, 0], {}, [2, -2 / 3, -2 / 3, -2 / 3], [1, 1, 1, 1]),
    ("rloo_group_of_one", "rloo", 1, [1, 0], [1, 0], {}, [0, 0], [1, 1]),
    ("rloo_nan", "rloo", 3, [1, NAN, 0], [1, 0, 0], {}, [1, 0, -1], [1, 0, 1]),
    ("reinforce_pm1", "reinforce", 4, [1, -1, -1, -1], [1, 0, 0, 0], {}, [1, -1, -1, -1], [1, 1, 1, 1]),
    ("reinforce_01", "reinforce", 4, [1, 0, 0, 0], [1, 0, 0, 0], {}, [1, 0, 0, 0], [1, 1, 1, 1]),
    ("reinforce_all_equal_kept", "reinforce", 2, [-1, -1], [0, 0], {"filter_mode": "drop"},
     [-1, -1], [1, 1]),
    ("reinforce_drop_all_wrong", "reinforce", 2, [1, -1, -1, -1], [1, 0, 0, 0], {"drop_all_wrong": True},
     [1, -1, 0, 0], [1, 1, 0, 0]),
    ("reinforce_drop_all_correct", "reinforce", 2, [1, 1, 1, -1], [1, 1, 1, 0], {"drop_all_correct": True},
     [0, 0, 1, -1], [0, 0, 1, 1]),
    ("reinforce_drop_all_wrong_nan", "reinforce", 2, [NAN, -1, 1, 1], [1, 0, 1, 1], {"drop_all_wrong": True},
     [0, 0, 1, 1], [0, 0, 1, 1]),
    ("reinforce_rej_zero", "reinforce_rej", 4, [1, -1, -1, -1, 1, 1, 1, 1], [1, 0, 0, 0, 1, 1, 1, 1], {},
     [1, -1, -1, -1, 0, 0, 0, 0], [1] * 8),
    ("reinforce_rej_drop", "reinforce_rej", 4, [1, -1, -1, -1, 1, 1, 1, 1], [1, 0, 0, 0, 1, 1, 1, 1],
     {"filter_mode": "drop"}, [1, -1, -1, -1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]),
    ("reinforce_rej_01_all_wrong", "reinforce_rej", 2, [0, 0, 1, 0], [0, 0, 1, 0], {}, [0, 0, 1, 0], [1] * 4),
    ("reinforce_rej_one_valid", "reinforce_rej", 2, [NAN, 1], [0, 1], {}, [0, 0], [0, 1]),
    ("raft_pm1_zero", "raft", 4, [1, -1, 1, -1], [1, 0, 1, 0], {}, [1, 0, 1, 0], [1, 1, 1, 1]),
    ("raft_01_drop", "raft", 4, [1, 0, 1, 0], [1, 0, 1, 0], {"filter_mode": "drop"},
     [1, 0, 1, 0], [1, 0, 1, 0]),
    ("raft_all_wrong", "raft", 2, [-1, -1], [0, 0], {}, [0, 0], [1, 1]),
    ("gpg_alpha_2", "gpg", 4, [1, 0, 0, 0, 1, 1, 1, 1], [1, 0, 0, 0, 1, 1, 1, 1], {},
     [1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0], [1] * 8),
    ("gpg_num_items", "gpg", 4, [1, 0, 0, 0], [1, 0, 0, 0], {"num_items": 16},
     [3.0, -1.0, -1.0, -1.0], [1] * 4),
    ("gpg_no_signal_alpha_1", "gpg", 2, [1, 1, 0, 0], [1, 1, 0, 0], {}, [0, 0, 0, 0], [1] * 4),
]


@pytest.mark.parametrize(("estimator", "group_size", "rewards", "correct", "kwargs", "expected", "keep"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_estimator_values(estimator, group_size, rewards, correct, kwargs, expected, keep):
    res = compute_advantages(torch.tensor(rewards, dtype=torch.float32),
                             torch.tensor(correct, dtype=torch.bool), group_size, estimator, **kwargs)
    assert isinstance(res, AdvantageResult)
    assert res.advantages.shape == (len(rewards),)
    want = torch.tensor(expected, dtype=torch.float32)
    assert torch.allclose(res.advantages, want, atol=1e-5), res.advantages
    assert res.keep.tolist() == [bool(k) for k in keep]
    assert not torch.isnan(res.advantages).any()
    assert (res.advantages[~res.keep] == 0).all()


def test_stats():
    rewards = torch.tensor([1, 1, 1, 1, -1, -1, -1, -1, 1, -1, NAN, -1])
    correct = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    res = compute_advantages(rewards, correct, 4, "reinforce_rej")
    assert res.stats["n_groups"] == 3
    assert res.stats["n_invalid"] == 1
    assert res.stats["frac_all_correct"] == pytest.approx(1 / 3)
    assert res.stats["frac_all_wrong"] == pytest.approx(1 / 3)
    assert res.stats["frac_all_equal"] == pytest.approx(2 / 3)
    assert res.stats["kept_frac"] == pytest.approx(11 / 12)
    dropped = compute_advantages(rewards, correct, 4, "reinforce_rej", filter_mode="drop")
    assert dropped.stats["kept_frac"] == pytest.approx(3 / 12)


def test_estimator_table_callable_directly():
    grouped = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    out = ESTIMATORS["dr_grpo"](grouped)
    assert out.shape == (2, 4)
    assert torch.allclose(out[0].float(), torch.tensor([0.75, -0.25, -0.25, -0.25]))
    assert (out[1] == 0).all()
    assert set(ESTIMATORS) >= {"raft", "reinforce", "reinforce_rej", "grpo", "dr_grpo", "rloo", "gpg"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([-1.0, 0.0, 1.0, 0.5]), min_size=8, max_size=8))
def test_baselines_sum_to_zero_per_group(values):
    rewards = torch.tensor(values)
    correct = rewards > 0
    for name in ("grpo", "dr_grpo", "rloo", "gpg"):
        adv = compute_advantages(rewards, correct, 4, name).advantages.reshape(2, 4)
        assert torch.allclose(adv.sum(dim=1), torch.zeros(2), atol=1e-4), (name, values)


@pytest.mark.parametrize(("kwargs", "exc"), [
    ({"estimator": "ppo_magic"}, UserError),
    ({"filter_mode": "skip"}, UserError),
    ({"group_size": 3}, ValueError),
    ({"group_size": 0}, ValueError),
])
def test_bad_arguments(kwargs, exc):
    args = {"group_size": 2, "estimator": "grpo", **kwargs}
    with pytest.raises(exc):
        compute_advantages(torch.zeros(4), torch.zeros(4, dtype=torch.bool), args.pop("group_size"),
                           args.pop("estimator"), **args)


def test_local_slice_contiguous_and_whole_groups():
    rewards = torch.tensor([1.0, -1, 1, 1, -1, -1, 1, -1])
    res = compute_advantages(rewards, rewards > 0, 2, "reinforce")
    parts = [local_slice(res, i, 2) for i in range(2)]
    assert torch.equal(torch.cat([p.advantages for p in parts]), res.advantages)
    assert torch.equal(parts[1].keep, res.keep[4:])
    assert parts[0].stats == res.stats
    four = [local_slice(res, i, 4) for i in range(4)]
    assert [p.advantages.tolist() for p in four] == [[1, -1], [1, 1], [-1, -1], [1, -1]]


@pytest.mark.parametrize(("group_size", "num_processes", "index"), [(4, 4, 0), (2, 3, 0), (2, 2, 2)])
def test_local_slice_rejects_split_groups(group_size, num_processes, index):
    res = compute_advantages(torch.ones(8), torch.ones(8, dtype=torch.bool), group_size, "reinforce")
    with pytest.raises(ValueError):
        local_slice(res, index, num_processes)


def test_local_slice_allow_split_groups():
    res = compute_advantages(torch.arange(8.0), torch.ones(8, dtype=torch.bool), 4, "reinforce")
    assert local_slice(res, 3, 4, allow_split_groups=True).advantages.tolist() == [6.0, 7.0]


@pytest.mark.parametrize(("factor", "expected"), [
    (1.0, [0, 0, -0.25, -0.5, -1, -1]),
    (0.5, [0, 0, -0.125, -0.25, -0.5, -0.5]),
])
def test_overlong_penalty(factor, expected):
    out = overlong_penalty(torch.tensor([0, 6, 7, 8, 10, 11]), max_len=10, cache_len=4, factor=factor)
    assert torch.allclose(out, torch.tensor(expected, dtype=torch.float32))


def test_overlong_penalty_bad_cache():
    with pytest.raises(ValueError):
        overlong_penalty(torch.tensor([1]), max_len=4, cache_len=0)
