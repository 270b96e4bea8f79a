"""Two-stage ANTLR parsing for Math-Verify's LaTeX parser: fast SLL prediction first, full LL only on failure.

Most of the grader's time on real completions is latex2sympy's ANTLR parser predicting alternatives
(`adaptivePredict`), and a fifth of that is full-context (LL) prediction. ANTLR documents the standard remedy:
parse with SLL prediction and a bail-out error strategy; "the parser will either return a correct parse tree
(i.e. the same parse tree that would be returned with the LL prediction mode), or it will report a syntax
error" (antlr4 PredictionMode.SLL). On any error in the SLL stage the input is parsed again exactly as latex2sympy
does (LL, its own error listeners), so every parse, every error and every verdict is unchanged; on
the 320 real SmolLM2 completions of bench/ it saves ~15% of the grader's CPU time.

`install()` wraps latex2sympy's `_Latex2Sympy.create_parser`; if that internal API is not there (another
latex2sympy2_extended version), it does nothing and parsing stays as it was.
"""

from __future__ import annotations

from typing import Any

_INSTALLED = False


def install() -> bool:
    """Make latex2sympy parse SLL-first in this process (idempotent). Returns whether it is active."""
    global _INSTALLED
    if _INSTALLED:
        return True
    try:
        from antlr4.atn.PredictionMode import PredictionMode
        from antlr4.error.ErrorStrategy import BailErrorStrategy
        from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy
    except ImportError:
        return False
    original = getattr(_Latex2Sympy, "create_parser", None)
    if original is None:
        return False

    def create_parser(self: Any, latex_str: str) -> Any:
        parser = original(self, latex_str)
        if not (hasattr(parser, "_interp") and hasattr(parser, "_errHandler") and hasattr(parser, "math")):
            return parser
        ll_math = parser.math

        def math() -> Any:
            parser._interp.predictionMode = PredictionMode.SLL
            parser._errHandler = BailErrorStrategy()
            parser.removeErrorListeners()
            try:
                return ll_math()
            except Exception:  # noqa: BLE001 - an SLL bail-out, or a lexer error: parse again as latex2sympy does,
                return original(self, latex_str).math()  # so even the error raised (and its message) is its own

        parser.math = math
        return parser

    create_parser.__wrapped__ = original  # type: ignore[attr-defined]
    _Latex2Sympy.create_parser = create_parser
    _INSTALLED = True
    return True


def uninstall() -> None:
    """Back to latex2sympy's own LL parsing (tests compare the two)."""
    global _INSTALLED
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    original = getattr(_Latex2Sympy.create_parser, "__wrapped__", None)
    if original is not None:
        _Latex2Sympy.create_parser = original
    _INSTALLED = False
