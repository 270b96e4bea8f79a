"""The answer Math-Verify's extraction finds in an unboxed completion, found with its regexes but without parsing.

rlbench grades an unboxed completion by the string Math-Verify's extraction returns as its fallback: the first
candidate it tries, in its own order (priority group, then rightmost match). That string does not depend on
whether any candidate parses: `parse` returns `[parsed, fallbacks[0]]` or `[fallbacks[0]]`, and `fallbacks[0]` is
the first tried match with a non-empty string. Running the extraction in full parsed candidates with ANTLR only
to throw the parse away (rlbench parses the normalised answer itself): on the 320 real SmolLM2 completions of
bench/ that was most of the grader's CPU time.

`first_candidate` walks Math-Verify's regexes in the order `math_verify.parser.extract_target_from_pred` does and
builds each match's string as `extract_latex` / `extract_expr` do (`normalize_latex`, number clean-up). When the
first tried match has an empty string, or several latex groups (joined only if all of them parse), the string
depends on parses, so it answers "undecided" and the caller runs the full extraction (13 of the 987 texts of
tests/test_grader_candidate.py, which checks it against the full extraction on every real completion and corpus
case in the repository). It relies on Math-Verify's internals (regex group names), so math-verify is pinned
exactly in pyproject.toml.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from itertools import groupby
from typing import Any

UNDECIDED = object()  # the full extraction must decide


@cache
def _priority_groups() -> tuple[tuple[tuple[Any, Any], ...], ...]:
    """Math-Verify's (pattern, target) pairs for the paper's pred configs, grouped by priority, in the order
    `extract_target_from_pred` tries them. Built once per process: it is the same for every completion."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    from math_verify.parser import get_extraction_regexes

    configs = (ExprExtractionConfig(), LatexExtractionConfig())
    patterns = sorted(((pattern, target, priority) for target_patterns, target in get_extraction_regexes(configs)
                       for pattern, priority in target_patterns), key=lambda x: x[2])
    return tuple(tuple((pattern, target) for pattern, target, _ in group)
                 for _, group in groupby(patterns, key=lambda x: x[2]))


def _latex_string(match: Any, config: Any) -> str:
    """`extract_latex`'s string for a single latex group: normalised (a boxed group with `boxed="last"`). Several
    groups are joined by " and " only when all of them parse, so for those it returns "" (undecided)."""
    from latex2sympy2_extended.latex2sympy2 import normalize_latex

    groups = match.groupdict()
    found = [next(((v, n) for n, v in groups.items() if n.startswith(prefix) and v), None)
             for prefix in ["first_latex"] + [f"next{i}_latex" for i in range(1, 6)]]
    found = [x for x in found if x is not None]
    if len(found) != 1:
        return ""  # several groups are joined only if every one parses: undecided
    latex, name = found[0]
    norm = config.normalization_config
    if name.split("_")[1:2] == ["latexBoxed"]:
        norm = replace(norm, boxed="last")
    return normalize_latex(latex, config=norm)


def _expr_string(match: Any) -> str:
    """`extract_expr`'s string: a number without thousands separators or leading zeros, else the expression."""
    groups = match.groupdict()
    integer = next((v for n, v in groups.items() if n.startswith("integer") and v), "")
    decimal = next((v for n, v in groups.items() if n.startswith("decimal") and v), "")
    if integer or decimal:
        integer = integer.translate(str.maketrans("", "", ", ")).lstrip("0") or "0"
        return f"{integer}{decimal.replace(',', '.')}"
    return groups.get("expr") or ""


def first_candidate(text: str) -> str | None | object:
    """Math-Verify's fallback string for `text` under the paper's pred configs (Expr, Latex): None when nothing
    matches, `UNDECIDED` when only parsing can tell."""
    from math_verify import LatexExtractionConfig

    for group in _priority_groups():
        matches = [(m, target) for pattern, target in group for m in pattern.finditer(text)]
        if matches:
            # the first one Math-Verify tries: rightmost end, then leftmost start (its sort, reversed and stable)
            m, target = max(matches, key=lambda x: (x[0].end(), -x[0].start()))
            s = _latex_string(m, target) if isinstance(target, LatexExtractionConfig) else _expr_string(m)
            return s if s else UNDECIDED
    return None
