"""TTRL majority-vote pseudo-labels: ties, empty answers, groups, the training subset."""

from __future__ import annotations

import pytest

from rlbench_cli.algorithms.pseudo_labels import majority_answer, majority_labels, train_subset


@pytest.mark.parametrize(("answers", "expected"), [
    (["1", "2", "2"], ("2", 2 / 3)),
    (["a", "b"], ("a", 0.5)),          # tie: the first seen (Counter.most_common)
    (["b", "a", "a", "b"], ("b", 0.5)),
    (["", "", "3"], ("", 2 / 3)),      # an unparsed (empty) answer can win, as in TTRL's code
    (["7"], ("7", 1.0)),               # a group of one votes for itself
])
def test_majority_answer(answers, expected) -> None:  # noqa: ANN001
    assert majority_answer(answers) == expected


def test_majority_labels_per_group() -> None:
    labels, shares = majority_labels(["1", "1", "2", "3", "3", "3"], 3)
    assert labels == ["1", "1", "1", "3", "3", "3"]
    assert shares == [2 / 3] * 3 + [1.0] * 3
    with pytest.raises(ValueError):
        majority_labels(["1", "2", "3"], 2)
    with pytest.raises(ValueError):
        majority_answer([])


def test_train_subset_is_the_first_n() -> None:
    assert train_subset(4, 2) == [True, True, False, False]
    assert train_subset(2, 2) == [True, True]
    with pytest.raises(ValueError):
        train_subset(2, 3)
