"""grader/sll.py: latex2sympy parsing SLL-first gives exactly the parses (and the errors) of its own LL parsing,
on valid, ambiguous and broken LaTeX, including answers taken from real SmolLM2 completions."""

from __future__ import annotations

import pytest

from rlbench_cli.evaluation.grader import sll

LATEX = [
    "42", "-\\frac{5}{12}", "3\\sqrt{13}", "\\left( 3, \\frac{\\pi}{2} \\right)", "(1,2)", "[0, 1)",
    "(-\\infty, 2] \\cup [3, \\infty)", "\\{1, 2, 3\\}", "\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "x=5",
    "1 < x < 2", "333,333", "3,333", "a,b=2", "f(x) = x^2", "\\sin 2atan(2)= 3", "2x(3)", "ab(c+d)",
    "\\sum_{j = 1}^\\infty \\frac{1}{(j + k^3)^2}", "\\binom{z(c)}{17}", "(r,\\dot{z}^{1,circ})",
    "5290594888662 + 5^2546129", "|p-f(f)(Z)| = |(M)| = 1 adenous(f), 1 [= (NEG)|Z]", "a_{n}+1_{square}",
    "f(-2) + f(1) = (f(2) + f(1)) + f(2) = (f(2) + f(1)) + f", "\\frac{11 - \\alpha}{11} + 10 = \\lim_{x \\to 0}{1}1",
    "b_u = \\mathcal{PS} \\circ \\krm{pn}\\circ u", "\\textwill{polinomialthat} = k^n", "x*l*l=(ll)(1l^2)",
    # broken: unbalanced, stray operators, lexer errors
    "\\frac{1}{", "(1,2", "1 + + ", "=", "\\sqrt{", "x^", "}{", "@#", "", "2 \\cdot", "\\left( 1",
]


def _parse(latex: str) -> str:
    from latex2sympy2_extended.latex2sympy2 import latex2sympy

    try:
        return "ok " + __import__("sympy").srepr(latex2sympy(latex, normalization_config=None))
    except Exception as e:  # noqa: BLE001 - the error is part of what must match
        return f"error {type(e).__name__}: {e}"


@pytest.mark.parametrize("latex", LATEX)
def test_sll_first_parses_like_ll(latex: str) -> None:
    sll.uninstall()
    try:
        ll = _parse(latex)
    finally:
        assert sll.install()
    assert _parse(latex) == ll


def test_installed_by_the_grader() -> None:
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    from rlbench_cli.evaluation.grader.mathverify import quiet_math_verify

    quiet_math_verify()
    assert hasattr(_Latex2Sympy.create_parser, "__wrapped__")
