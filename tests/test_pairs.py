"""DPO pair selection: determinism, eligibility (never all-equal groups), selection modes."""

from __future__ import annotations

import numpy as np
import pytest

from rlbench_cli.algorithms.pairs import select_dpo_pairs
from rlbench_cli.errors import UserError

GROUPS = [
    ["a", "bb", "ccc", "dddd"],   # mixed
    ["x", "y"],                   # all correct: no pair
    ["p", "q", "r"],              # all wrong: no pair
    ["long answer", "s", "mid", "w"],  # mixed
    [],                           # empty: no pair
]
CORRECT = [
    [True, False, True, False],
    [True, True],
    [False, False, False],
    [True, True, False, True],
    [],
]


def test_only_mixed_groups_and_right_roles():
    pairs = select_dpo_pairs(GROUPS, CORRECT, seed=0)
    assert [g for g, _, _ in pairs] == [0, 3]
    for g, chosen, rejected in pairs:
        assert CORRECT[g][chosen] and not CORRECT[g][rejected]


def test_deterministic_per_seed_and_seed_matters():
    rng = np.random.default_rng(123)
    groups = [["r"] * 8 for _ in range(200)]
    correct = [list(rng.random(8) < 0.5) for _ in range(200)]
    a = select_dpo_pairs(groups, correct, seed=7)
    assert a == select_dpo_pairs(groups, correct, seed=7)
    assert a != select_dpo_pairs(groups, correct, seed=8)
    assert all(correct[g][c] and not correct[g][r] for g, c, r in a)
    expected_groups = [g for g, v in enumerate(correct) if any(v) and not all(v)]
    assert [g for g, _, _ in a] == expected_groups


def test_random_choice_is_roughly_uniform():
    groups = [["r"] * 4 for _ in range(2000)]
    correct = [[True, True, False, False]] * 2000
    pairs = select_dpo_pairs(groups, correct, seed=0)
    chosen = np.bincount([c for _, c, _ in pairs], minlength=4)
    rejected = np.bincount([r for _, _, r in pairs], minlength=4)
    assert chosen[2:].sum() == 0 and rejected[:2].sum() == 0
    assert 850 < chosen[0] < 1150 and 850 < rejected[2] < 1150


@pytest.mark.parametrize(("choose", "expected"), [
    ("max_min", [(0, 0, 1), (3, 0, 2)]),
    ("shortest", [(0, 0, None), (3, 1, 2)]),
])
def test_choose_modes(choose, expected):
    pairs = select_dpo_pairs(GROUPS, CORRECT, seed=0, choose=choose)
    assert len(pairs) == len(expected)
    for got, exp in zip(pairs, expected, strict=True):
        assert got[:2] == exp[:2]
        assert exp[2] is None or got[2] == exp[2]
        assert not CORRECT[got[0]][got[2]]


@pytest.mark.parametrize(("groups", "correct", "kwargs", "exc"), [
    (GROUPS, CORRECT[:-1], {}, ValueError),
    ([["a", "b"]], [[True]], {}, ValueError),
    (GROUPS, CORRECT, {"choose": "best"}, UserError),
])
def test_bad_input(groups, correct, kwargs, exc):
    with pytest.raises(exc):
        select_dpo_pairs(groups, correct, seed=0, **kwargs)
