"""Metrics: pass@k against the binomial definition and hand values, mean@k, maj@k, SE, summary."""

from __future__ import annotations

import math

import pytest

from rlbench_cli.evaluation.metrics import (
    maj_at_k,
    majority_answer,
    mean_at_k,
    pass_at_k,
    standard_error,
    summarize,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(4, 1, 2, 0.5), (4, 0, 2, 0.0), (4, 4, 1, 1.0), (4, 2, 1, 0.5), (16, 1, 1, 1 / 16), (5, 2, 2, 0.7),
     (4, 3, 2, 1.0)],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_binomial_definition() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_large_n_is_finite() -> None:
    v = pass_at_k(2000, 3, 100)
    assert 0 < v < 1 and v == pytest.approx(1 - math.comb(1997, 100) / math.comb(2000, 100))


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, 1, 5), (4, 1, 0), (-1, 0, 1)])
def test_pass_at_k_rejects_bad_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_at_k() -> None:
    assert mean_at_k([[True, False, False, False], [True, True]]) == pytest.approx((0.25 + 1.0) / 2)
    assert mean_at_k([]) == 0.0
    with pytest.raises(ValueError):
        mean_at_k([[]])


MAJ = [
    (["3", "4", "3", "4"], [True, False, True, False], 1.0, 0),   # tie 2-2: first seen ("3") wins
    (["4", "3", "3", "4"], [False, True, True, False], 0.0, 0),   # tie: "4" seen first, and wrong
    ([None, None, "5", None], [False, False, True, False], 1.0, 2),  # None never wins while an answer exists
    ([None, None], [False, False], 0.0, None),                   # all None: wrong
    # \dfrac12 and \frac12 vote together (2) and tie with "7" (2); the first seen wins.
    (["\\dfrac12", "\\frac{1}{2}", "7", "7", "\\frac12"], [True, True, False, False, True], 1.0, 0),
    (["1/2", "1/2", "7"], [True, True, False], 1.0, 0),
    (["", " ", "2"], [False, False, True], 1.0, 2),              # empty strings are no answer
]


@pytest.mark.parametrize(("preds", "correct", "expected", "winner"), MAJ)
def test_maj_at_k(preds: list[str | None], correct: list[bool], expected: float, winner: int | None) -> None:
    assert maj_at_k(preds, correct) == expected
    assert majority_answer(preds) == winner


def test_maj_normalises_equivalent_spellings() -> None:
    # \dfrac12 and \frac12 vote together (2 votes) against "7" (1 vote).
    assert majority_answer(["7", "\\dfrac12", "\\frac12"]) == 1


def test_maj_length_mismatch() -> None:
    with pytest.raises(ValueError):
        maj_at_k(["1"], [True, False])


def test_standard_error() -> None:
    assert standard_error([]) == 0.0 and standard_error([0.7]) == 0.0
    xs = [0.0, 0.5, 1.0, 0.25]
    mean = sum(xs) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / 3)
    assert standard_error(xs) == pytest.approx(sd / 2)


def test_summarize() -> None:
    rows = [
        {"id": "a", "n": 4, "n_correct": 1, "maj_correct": False},
        {"id": "b", "n": 4, "n_correct": 4, "maj_correct": True},
        {"id": "c", "n": 4, "n_correct": 0, "maj_correct": False},
    ]
    s = summarize(rows)
    assert s["k"] == 4 and s["n_problems"] == 3
    assert s["mean@k"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert s["pass@1"] == pytest.approx(s["mean@k"])  # pass@1 is the mean accuracy
    assert s["pass@k"] == pytest.approx((1 + 1 + 0) / 3)
    assert s["maj@k"] == pytest.approx(1 / 3)
    assert s["mean@k_se"] == pytest.approx(standard_error([0.25, 1.0, 0.0]))
    assert set(s) == {"mean@k", "mean@k_se", "pass@k", "pass@1", "maj@k", "k", "n_problems"}


def test_summarize_empty_and_bad() -> None:
    assert summarize([])["n_problems"] == 0
    with pytest.raises(ValueError):
        summarize([{"id": "a", "n": 2, "n_correct": 3, "maj_correct": True}])
