"""One test per failure class of issue 12 (each failed on the grader before the fix), plus the bugs the
false-positive probe set found (wrong unit prefix). Rows: (completion, gold, options, expected verdict)."""

from __future__ import annotations

from typing import Any

import pytest

from rlbench_cli.evaluation.grader import grade_answer

Case = tuple[str, str, dict[str, Any], bool]


def _check(case: Case) -> None:
    completion, gold, opts, expected = case
    v = grade_answer(completion, gold, **opts)
    assert v.correct is expected, (completion, gold, v)


SCIENTIFIC: list[Case] = [  # Minerva Math golds in Python float notation
    ("\\boxed{4.5 \\times 10^{33}}", "4.5e33", {}, True),
    ("\\boxed{7.5\\times10^{7}}", "7.5e7", {}, True),
    ("\\boxed{10^{-5}}", "1e-5", {}, True),
    ("\\boxed{4.5e33}", "4.5e33", {}, True),
    ("\\boxed{4.5 \\times 10^{32}}", "4.5e33", {}, False),
    ("\\boxed{45}", "4.5e33", {}, False),
]
CURRENCY: list[Case] = [
    ("\\boxed{18.90}", "\\$18.90", {}, True),
    ("\\boxed{\\$18.9}", "\\$18.90", {}, True),
    ("\\boxed{18.80}", "\\$18.90", {}, False),
]
THIN_SPACE_THOUSANDS: list[Case] = [
    ("\\boxed{11111111100}", "11,\\! 111,\\! 111,\\! 100", {}, True),
    ("\\boxed{11,111,111,100}", "11,\\! 111,\\! 111,\\! 100", {}, True),
    ("\\boxed{11111111101}", "11,\\! 111,\\! 111,\\! 100", {}, False),
]
UNITS_IN_BOX: list[Case] = [
    ("\\boxed{166 \\text{ cm}^2}", "166", {}, True),
    ("\\boxed{166 \\mathrm{~cm}^{2}}", "166", {}, True),
    ("\\boxed{166 \\text{ cm}^2}", "166", {"unit": "cm^2"}, True),
    ("\\boxed{167 \\text{ cm}^2}", "166", {}, False),
]
PERCENT_VS_FRACTION: list[Case] = [
    ("\\boxed{\\frac{1}{4}}", "25\\%", {}, True),
    ("\\boxed{0.25}", "25\\%", {}, True),
    ("\\boxed{25\\%}", "0.25", {}, True),
    ("\\boxed{25}", "25\\%", {}, True),
    ("\\boxed{\\frac{1}{3}}", "25\\%", {}, False),
    ("\\boxed{25}", "0.25", {}, False),
]
PYTHON_FLOAT_GOLD: list[Case] = [
    ("\\boxed{-\\frac{1}{3}}", "-1./3", {}, True),
    ("\\boxed{-1/3}", "-1./3", {}, True),
    ("\\boxed{\\frac{1}{3}}", "-1./3", {}, False),
]
SEVERAL_BOXES: list[Case] = [
    ("The roots are \\boxed{2} and \\boxed{3}.", "2, 3", {}, True),
    ("x = \\boxed{1} and y = \\boxed{2}", "1,2", {"multiple_answer": True}, True),
    ("\\boxed{3} or \\boxed{2}", "2,3", {"multiple_answer": True}, True),
    ("\\boxed{2} and \\boxed{4}", "2, 3", {}, False),
    ("First \\boxed{2}, then \\boxed{3}", "3", {}, True),  # a single gold: the last box still decides
    ("First \\boxed{3}, then \\boxed{2}", "3", {}, False),
]
FINAL_ANSWER_SENTENCE: list[Case] = [
    ("One root is \\boxed{3}, discarded. The final answer is $7$.", "7", {}, True),
    ("\\boxed{7}\nFinal Answer: The final answer is $7$. I hope it is correct.", "7", {}, True),
    ("Final Answer: The final answer is $4.5 \\times 10^{33}$. I hope it is correct.", "4.5e33", {}, True),
    ("So \\boxed{7} is tempting. The final answer is $3$.", "7", {}, False),
]
MATHRM_E: list[Case] = [  # Math-Verify's parse stops at \mathrm{e}; the old grader inherited it (false positives)
    ("\\boxed{1}", "1 - \\frac{1}{\\mathrm{e}}", {}, False),
    ("\\boxed{2}", "2\\mathrm{e}", {}, False),
    ("\\boxed{\\frac{1}{\\mathrm{e}^2}}", "\\frac{1}{\\mathrm{e}}", {}, False),
    ("\\boxed{1 + \\frac{1}{\\mathrm{e}}}", "1 - \\frac{1}{\\mathrm{e}}", {}, False),
    ("So it is $1$.", "1 - \\frac{1}{\\mathrm{e}}", {}, False),
    ("\\boxed{1 - e^{-1}}", "1 - \\frac{1}{\\mathrm{e}}", {}, True),
    ("\\boxed{2e}", "2\\mathrm{e}", {}, True),
]
UNIT_PREFIX: list[Case] = [  # found by the probe set: units were stripped from both sides, then 5 km == 5 m
    ("\\boxed{5 \\text{ m}}", "5 \\text{ km}", {}, False),
    ("\\boxed{3\\text{ g}}", "3\\text{ mg}", {}, False),
    ("\\boxed{12 \\text{ kHz}}", "12 \\text{ MHz}", {}, False),
    ("\\boxed{5 \\text{ km}}", "5 \\text{ km}", {}, True),
    ("\\boxed{5}", "5 \\text{ km}", {}, True),
]


@pytest.mark.parametrize("case", SCIENTIFIC)
def test_scientific_notation_gold(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("case", CURRENCY)
def test_currency_gold(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("case", THIN_SPACE_THOUSANDS)
def test_thin_space_thousands(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("case", UNITS_IN_BOX)
def test_units_inside_the_box(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("case", PERCENT_VS_FRACTION)
def test_percent_vs_fraction(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("case", PYTHON_FLOAT_GOLD)
def test_python_float_literal_gold(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("case", SEVERAL_BOXES)
def test_several_boxes_multi_part(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("case", FINAL_ANSWER_SENTENCE)
def test_final_answer_sentence_after_box(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("case", MATHRM_E)
def test_mathrm_e_false_positives(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("case", UNIT_PREFIX)
def test_unit_prefix_false_positive(case: Case) -> None:
    _check(case)


ALL_CLASSES = {"scientific": SCIENTIFIC, "currency": CURRENCY, "thin_space": THIN_SPACE_THOUSANDS,
               "units_in_box": UNITS_IN_BOX, "percent": PERCENT_VS_FRACTION, "python_float": PYTHON_FLOAT_GOLD,
               "several_boxes": SEVERAL_BOXES, "final_sentence": FINAL_ANSWER_SENTENCE, "mathrm_e": MATHRM_E,
               "unit_prefix": UNIT_PREFIX}
