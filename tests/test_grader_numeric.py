"""The shortcut before Math-Verify's `verify` (grader/numeric.py): which pairs it decides (surely unequal
constants, one side a polynomial in a symbol the other lacks, after Math-Verify's unwrapping of equations), which
it must leave to Math-Verify, and that it never disagrees with Math-Verify. Rows: (gold, pred, decided here)."""

from __future__ import annotations

import time

import pytest

from rlbench_cli.evaluation.grader.mathverify import mv_parse, mv_verify
from rlbench_cli.evaluation.grader.numeric import surely_unequal

CASES: list[tuple[str, str, bool]] = [
    # decided: both symbol-free scalars, values far apart
    ("3\\sqrt{13}", "5290594888662 + 5^{2546129}", True),  # the real SmolLM2 answer verify took 0.5 s on
    ("3\\sqrt{13}", "5290594888662 + 5^2546129", True),
    ("5", "6", True),
    ("\\frac{14}{3}", "2.3", True),
    ("\\sin 1", "2", True),
    ("\\pi", "3", True),
    ("-125", "125", True),
    ("10^{100}", "10^{100} \\cdot 2", True),
    # decided: the gold is a polynomial (rational coefficients) in a symbol the answer lacks
    ("p - q", "\\sum_{j = 1}^\\infty \\frac{1}{(j + k^3)^2}", True),  # real: verify spent 0.2 s in simplify
    ("p - q", "1", True),
    ("3x+2", "5", True),
    ("x+1", "2", True),
    ("x^2+1", "2y", True),
    # decided: the answer is the polynomial (real SmolLM2 answers that verify spent 10-24 ms on each)
    ("\\frac{14}{3}", "(x-2)^2", True),
    ("23", "L is the original max for reusing", True),  # read as a product of letters
    ("3\\sqrt{13}", "to", True),
    ("1", "x^2 + 1", True),
    ("\\pi x", "3", True),  # a nonzero constant times x
    ("e \\pi x y", "2 x", True),
    ("0 x", "1", False),  # no symbol once evaluated
    # decided after Math-Verify's unwrapping: an equation answer to a plain gold, an assignment gold to a plain answer
    ("\\sqrt{51}", "D \\equiv 0.707", True),  # real: parsed as d = 0.707
    ("\\sqrt{51}", "d = 0.707", True),
    ("x = 5", "6", True),
    ("x=5", "a bit of a mental shortcut", True),
    ("x = 5", "2y", True),
    # not decided: equal, or too close to call without Math-Verify's own rules
    ("5", "5", False),
    ("\\frac{1}{2}", "0.5", False),
    ("2^{10}", "1024", False),
    ("\\pi", "3.14159", False),
    ("\\frac{1}{3}", "0.333", False),
    ("\\frac{1}{3}", "0.3333333", False),
    ("\\sqrt{2}", "\\frac{2}{\\sqrt{2}}", False),
    ("1000000", "1000000.4", False),
    # not decided: not two plain constants
    ("9\\%", "9", False),  # Math-Verify compares 9% with 9 without the /100
    ("9", "9\\%", False),
    ("x", "1", False),
    ("p - q", "p q", False),  # no symbol of the gold is missing from the answer
    ("x + 1", "x + 2", False),
    ("x^2 - x^2 + 1", "1", False),  # not a polynomial in x once expanded: Math-Verify says equal
    ("\\sqrt{2} x", "1", False),  # irrational coefficient
    ("\\sin x", "1", False),
    ("\\frac{1}{x}", "3", False),
    ("x", "y", False),  # bare symbols: Math-Verify compares them by name
    ("f(1)", "2", False),  # an undefined function does not evaluate
    ("\\infty", "5", False),
    ("3", "\\sqrt{2}^{\\sqrt{2}^{\\sqrt{2}}}", False),
    ("\\frac{1}{0}", "1", False),
    ("(1,2)", "3", False),
    ("\\{1, 2\\}", "3", False),
    ("5", "x = 5", False),  # unwrapped to 5 against 5: Math-Verify says equal
    ("x = 5", "x = 6", False),  # two equations: Math-Verify's relational comparison
    ("x = 5", "y = 5", False),
    ("2", "x - x + 2", False),  # constant once expanded
    ("y", "x + 1", False),  # a bare symbol gold is compared by name
    ("2x", "\\frac{4x}{2}", False),
    ("x \\le 3", "4", False),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "3", False),
]


@pytest.mark.parametrize(("gold", "pred", "decided"), CASES)
def test_surely_unequal_table(gold: str, pred: str, decided: bool) -> None:
    from math_verify import verify

    g, p = mv_parse(gold), mv_parse(pred)
    assert g and p, (gold, pred)
    assert surely_unequal(g, p) is decided, (gold, pred, g, p)
    if decided:  # never a verdict Math-Verify would not give (this is slow only for the 5^2546129 rows)
        assert not verify(g, p, timeout_seconds=None), (gold, pred)
    assert mv_verify(g, p) == bool(verify(g, p, timeout_seconds=None)), (gold, pred)


def test_equal_strings_are_left_to_math_verify() -> None:
    """A pair of equal (unparsed) strings matches in `verify`, whatever the expressions say."""
    assert not surely_unequal(["abc"], ["abc"])
    assert surely_unequal(["abc"], ["abd"])
    assert surely_unequal([mv_parse("5")[0]], ["5"])  # a string and an expression never match in `verify`


def test_huge_power_is_fast() -> None:
    g, p = mv_parse("3\\sqrt{13}"), mv_parse("5290594888662 + 5^{2546129}")
    t0 = time.process_time()
    assert mv_verify(g, p) is False
    assert time.process_time() - t0 < 0.1  # verify alone: ~0.5 s


def test_power_tower_is_left_to_math_verify_quickly() -> None:
    """evalf would not finish on a power tower (Math-Verify neither: the pool's limit ends it)."""
    g, p = mv_parse("1"), mv_parse("9^{9^{9^9}}")
    t0 = time.process_time()
    assert not surely_unequal(g, p)
    assert time.process_time() - t0 < 0.1
