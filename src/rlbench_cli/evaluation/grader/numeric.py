"""Deciding, before Math-Verify's `verify`, pairs of answers that are surely unequal: numbers far apart, or one
side a polynomial in a symbol the other does not contain.

`verify` ends in `simplify(gold - pred)`, which on a wrong answer that is a constant can take seconds: a real
SmolLM2 completion on MATH500 answers `5290594888662 + 5^{2546129}` to the gold `3\\sqrt{13}`, and `verify` spends
0.5 s proving them different (sympy builds the 1.8-million-digit integer). Two symbol-free scalars whose values
are far apart fail every one of Math-Verify's tests, so that verdict (False) is given here in well under a
millisecond. Likewise one side a non-constant polynomial in a symbol (rational coefficients) and the other without
that symbol: `p - q` against the real answer `\\sum_{j=1}^\\infty \\frac{1}{(j+k^3)^2}` took `verify` 0.2 s in
simplify, and their difference depends on `p`, so it is not zero; the gold `23` against a sentence read as a
product of letters, 24 ms. Equations are first unwrapped as `sympy_expr_eq` does (with its own helpers).
Anything else (other symbolic answers, sets, tuples, relations, matrices, percentages, infinities, values that
are close) is left to Math-Verify, so no verdict changes (bench/grader_verdicts.py checks it on the bench answers;
tests/test_grader_numeric.py holds the table).
"""

from __future__ import annotations

from typing import Any

# Relative to the larger of 1, |gold| and |pred|. Far above Math-Verify's float rounding (6 places) and evalf's
# accuracy (30 digits here), so every test it makes fails: its structural and string equality (equal objects have
# equal values), its rounded comparison, `evalf(chop=True) == 0` and `simplify(gold - pred).is_zero`.
FAR_APART = 1e-3


def surely_unequal(gold: list[Any], pred: list[Any]) -> bool:
    """True only where `math_verify.verify(gold, pred)` is surely False (both are lists from `parse`).

    `verify` is True if any (gold, pred) pair matches: two strings by equality, a string and an expression
    never, two expressions by Math-Verify's rules. Each pair must be decided False here, else this says nothing.
    """
    import sympy

    for g in gold:
        for p in pred:
            if isinstance(g, str) and isinstance(p, str):
                if g.strip() and g.strip() == p.strip():
                    return False
            elif isinstance(g, sympy.Basic | sympy.MatrixBase) and isinstance(p, sympy.Basic | sympy.MatrixBase):
                g, p = unwrap_like_math_verify(g, p)
                if not (constants_far_apart(g, p) or polynomial_in_missing_symbol(g, p)
                        or polynomial_in_missing_symbol(p, g)):
                    return False
    return True


def unwrap_like_math_verify(gold: Any, pred: Any) -> tuple[Any, Any]:
    """The pair `sympy_expr_eq` goes on to compare, for the one unwrapping it does first (with its own helpers):
    an equation answer to a non-equation gold is read as its last right-hand side (`d = 0.707` against
    `\\sqrt{51}`), and an assignment gold (`x = 5`) against a non-equation answer as its right-hand side."""
    from math_verify.grader import is_assignment_relation, is_equation, take_last_relation

    if is_equation(pred) and not is_equation(gold):
        return gold, take_last_relation(pred).rhs
    if is_assignment_relation(gold) and not is_equation(pred):
        return take_last_relation(gold).rhs, pred
    return gold, pred


def constants_far_apart(a: Any, b: Any) -> bool:
    """Both are symbol-free scalar expressions whose values differ by more than `FAR_APART` relative to the
    larger of 1, |a| and |b|. False means "not known", never "equal"."""
    va, vb = constant_value(a), constant_value(b)
    if va is None or vb is None:
        return False
    return bool(abs(va - vb) > FAR_APART * max(1, abs(va), abs(vb)))


def constant_value(expr: Any) -> Any:
    """The value of a symbol-free scalar expression as an mpmath complex (a huge power does not overflow), or None.

    None for anything with a free symbol, an undefined function (`f(1)` does not evaluate), nan or an infinity,
    a power whose exponent is not a number, and for percentages (`X * UnevaluatedExpr(1/100)`): Math-Verify
    compares `9\\%` with `9` without the /100.
    """
    import mpmath
    import sympy

    if not isinstance(expr, sympy.Expr) or isinstance(expr, sympy.MatrixExpr) or expr.free_symbols:
        return None
    if expr.has(sympy.UnevaluatedExpr, sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return None
    if any(not p.exp.is_Number for p in expr.atoms(sympy.Pow)):
        return None  # a power tower (`9^{9^{9^9}}`): evalf would not finish; Math-Verify's own limit applies
    try:
        re, im = expr.evalf(30).as_real_imag()
        if not (isinstance(re, sympy.Number) and isinstance(im, sympy.Number)):
            return None
        v = mpmath.mpc(mpmath.mpmathify(re), mpmath.mpmathify(im))
    except (TypeError, ValueError, AttributeError, ArithmeticError):
        return None
    return v if mpmath.isfinite(v) else None


def polynomial_in_missing_symbol(poly_side: Any, other: Any) -> bool:
    """`poly_side` is a polynomial with rational coefficients in its free symbols, of degree >= 1 in a symbol that
    `other` (an expression, not a bare symbol) does not contain: their difference then varies with that symbol, so
    neither `simplify` nor `evalf` can make it zero. Either side may be the gold: `14/3` against the answer
    `(x-2)^2`, or the gold `p - q` against a sum over `j`. False means "not known"."""
    import sympy

    for e in (poly_side, other):
        if not isinstance(e, sympy.Expr) or isinstance(e, sympy.MatrixExpr | sympy.Symbol):
            return False  # Math-Verify compares a bare symbol by name (`\\text{answer}` against a*n*s*w*e*r)
    symbols = poly_side.free_symbols
    missing = symbols - other.free_symbols
    if not missing:
        return False
    if _is_monomial(poly_side):  # a sentence read as a product of letters (`E*a*b*c*...`) has too many symbols for Poly
        return True
    if len(symbols) > 8 or sympy.count_ops(poly_side) > 50:
        return False
    # Cheap pre-checks that keep Poly's domain rational: no functions, constants like pi or i, roots, infinities.
    if poly_side.atoms(sympy.Function) or poly_side.has(sympy.NumberSymbol, sympy.I, sympy.UnevaluatedExpr):
        return False
    if any(not isinstance(a, sympy.Rational) for a in poly_side.atoms(sympy.Number)):
        return False
    if any(not isinstance(x.exp, sympy.Integer) or x.exp < 0 for x in poly_side.atoms(sympy.Pow)):
        return False
    try:
        poly = sympy.Poly(poly_side, *sorted(symbols, key=str))
    except (sympy.PolynomialError, sympy.GeneratorsNeeded, TypeError, ValueError):
        return False
    if not (poly.domain.is_ZZ or poly.domain.is_QQ):
        return False
    return any(poly.degree(s) >= 1 for s in missing)


def _is_monomial(e: Any, depth: int = 0) -> bool:
    """Nonzero rationals, e and pi times symbols to positive integer powers (unevaluated products included): a
    nonzero constant times a product of symbols, so of degree >= 1 in each of them."""
    import sympy

    if depth > 50:
        return False
    if isinstance(e, sympy.Symbol):
        return True
    if isinstance(e, sympy.Rational):
        return e != 0
    if e is sympy.E or e is sympy.pi:
        return True
    if isinstance(e, sympy.Pow):
        return isinstance(e.exp, sympy.Integer) and e.exp > 0 and _is_monomial(e.base, depth + 1)
    if isinstance(e, sympy.Mul):
        return all(_is_monomial(a, depth + 1) for a in e.args)
    return False
