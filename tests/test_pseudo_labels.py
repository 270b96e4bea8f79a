"""TTRL majority-vote pseudo-labels: ties, empty answers, groups, the training subset."""

from __future__ import annotations

import pytest

from rlbench_cli.algorithms.pseudo_labels import (
    majority_answer,
    majority_labels,
    train_subset,
    ttrl_answer,
    ttrl_vote_key,
)


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


@pytest.mark.parametrize(("text", "expected"), [   # TTRL qwen_math_parser.extract_answer, by hand
    (r"so \boxed{\frac{1}{2}} ok", r"\frac{1}{2}"),       # the last box, brace-matched
    (r"\boxed{3} then \boxed{4}", "4"),
    (r"\boxed 5$ done", "5"),                                # unbraced box: up to `$`
    ("The answer is 42", "42"),                              # no box: "he answer is"
    ("so the final answer is 7.", "7"),                      # trailing full stop dropped
    ("The final answer is $5$. I hope it is correct.", "5"),  # Minerva's sentence
    ("we get 3 then 12 apples", "12"),                       # else the last number
    ("x = 1,000", "1000"),                                   # commas removed first
    ("The answer is: 9/", "9"),                              # leading ':' and trailing '/' dropped
    ("no digits here", ""),                                  # nothing to vote with
])
def test_ttrl_answer_extraction(text: str, expected: str) -> None:
    assert ttrl_answer(text) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    ("5.0", "5"), ("5.00", "5"), ("5", "5"), ("0.50", "0.50"),   # strip_string: trailing ".0..." only
    ("(1.0, 2)", "(1,2)"), ("x + 1", "x+1"), ("", ""),
])
def test_ttrl_vote_key(answer: str, expected: str) -> None:
    assert ttrl_vote_key(answer) == expected
