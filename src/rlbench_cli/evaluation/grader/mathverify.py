"""Math-Verify calls: parsing one answer, `verify` gold-first, and the `math_verify` grader, which is plain
Math-Verify exactly as the reference paper's code calls it (Minimal-RL, verl/utils/reward_score/math_verify.py):

    math_metric(gold_extraction_target=(LatexExtractionConfig(),),
                pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()),
                )(["\\boxed{" + gold + "}"], [completion])

Math-Verify's own timeouts use `signal.alarm`, which fails outside the main thread, so they are off here; the
process pool in `pool` enforces the per-answer limit instead (a timeout is a wrong answer, as in the paper).

Parses and verdicts are memoised per process (pure functions of their strings): a gold is parsed once per worker,
not once per sample, and an answer that several samples share is compared once. Math-Verify's own caches hold
only its last 20 strings.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

_CACHE_SIZE = 4096


def quiet_math_verify() -> None:
    """We disable Math-Verify's signal timeouts on purpose; silence its one-time warning about it. Also makes its
    LaTeX parser try fast SLL prediction first (same parses, see `sll`)."""
    import math_verify.grader as mvg
    import math_verify.parser as mvp

    from rlbench_cli.evaluation.grader import sll

    mvp.TIMEOUT_WARNING_SHOWN = True
    mvg.TIMEOUT_WARNING_SHOWN = True
    sll.install()


def mv_parse(latex: str) -> list[Any]:
    """One answer (no surrounding text) parsed by Math-Verify: as inline math, else as a box."""
    return list(_mv_parse_cached(latex))  # a fresh list: callers may not share the cached one


@lru_cache(maxsize=_CACHE_SIZE)
def _mv_parse_cached(latex: str) -> tuple[Any, ...]:
    from math_verify import parse

    quiet_math_verify()
    parsed = parse(f"${latex}$", parsing_timeout=None)
    if not parsed:
        parsed = parse(f"\\boxed{{{latex}}}", parsing_timeout=None)
    return tuple(parsed)


def mv_verify(gold: list[Any], pred: list[Any]) -> bool:
    """`verify`, after a shortcut for answers that are surely unequal numbers (see `numeric`)."""
    from math_verify import verify

    from rlbench_cli.evaluation.grader.numeric import surely_unequal

    if surely_unequal(gold, pred):
        return False
    return bool(verify(gold, pred, timeout_seconds=None))


@lru_cache(maxsize=_CACHE_SIZE)
def mv_equal(gold: str, pred: str, tolerance: float | None = None) -> bool:
    """Math-Verify's verdict on two answers, gold first (verify is asymmetric)."""
    g, p = mv_parse(gold), mv_parse(pred)
    if not g or not p:
        return False
    if tolerance is not None:
        gv, pv = numeric_value(g[0]), numeric_value(p[0])
        if gv is not None and pv is not None:
            return abs(gv - pv) <= tolerance
    return mv_verify(g, p)


def numeric_value(expr: Any) -> float | None:
    try:
        import sympy

        if isinstance(expr, sympy.Basic) and expr.is_number:
            v = complex(expr.evalf())
            return v.real if abs(v.imag) < 1e-12 else None
    except (TypeError, ValueError, AttributeError):
        return None
    return None


def mv_extract_completion(text: str) -> str | None:
    """Math-Verify's extraction of the final answer of an unboxed completion (the paper's pred configs), as a
    string for rlbench's own normalisation: its first candidate, found without parsing (see `mv_candidate`)."""
    from rlbench_cli.evaluation.grader.mv_candidate import UNDECIDED, first_candidate
    from rlbench_cli.evaluation.grader.normalize import replace_constants

    quiet_math_verify()
    # Math-Verify's extraction stops at `\mathrm{e}` (test_mathrm_e_false_positives): read it as `e` first.
    text = replace_constants(text)
    candidate = first_candidate(text)
    if candidate is not UNDECIDED:
        return candidate  # type: ignore[return-value]
    return full_extraction(text)


def full_extraction(text: str) -> str | None:
    """The fallback string of Math-Verify's full extraction (parsing each candidate until one parses)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse(text, (ExprExtractionConfig(), LatexExtractionConfig()), parsing_timeout=None)
    if len(parsed) >= 2 and isinstance(parsed[1], str):
        return parsed[1]
    if parsed:
        return str(parsed[0])
    return None


@lru_cache(maxsize=_CACHE_SIZE)
def mv_extract_gold(gold: str) -> str | None:
    """The answer in a gold that holds boxes (a full reference solution, or one box per part), by Math-Verify's
    gold extraction: it decides which boxes belong together. Parts come back comma-separated."""
    from math_verify import LatexExtractionConfig, parse

    quiet_math_verify()
    parsed = parse(gold, (LatexExtractionConfig(),), parsing_timeout=None)
    if len(parsed) >= 2 and isinstance(parsed[1], str):
        return parsed[1].replace(" and ", ", ")
    return None


def paper_math_verify(completion: str, gold: str) -> tuple[bool, dict[str, Any]]:
    """The `math_verify` grader: (correct, what each side parsed to)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    quiet_math_verify()
    g = list(_paper_gold(gold))
    p = parse(completion, (ExprExtractionConfig(), LatexExtractionConfig()), parsing_timeout=None)
    info = {"gold_parsed": [str(x) for x in g], "pred_parsed": [str(x) for x in p]}
    if not g:  # math_metric raises on an empty gold; the paper's wrapper turns that into score 0
        return False, {**info, "rule": "math-verify: gold did not parse"}
    from math_verify import verify

    ok = bool(verify(g, p, 6, timeout_seconds=None))
    return ok, {**info, "rule": "math-verify verify (paper's call)"}


@lru_cache(maxsize=_CACHE_SIZE)
def _paper_gold(gold: str) -> tuple[Any, ...]:
    """The paper's parse of a gold answer (once per process, not once per sample)."""
    from math_verify import LatexExtractionConfig, parse

    return tuple(parse("\\boxed{" + gold + "}", (LatexExtractionConfig(),), parsing_timeout=None))
