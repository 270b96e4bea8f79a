"""Grading one prepared answer: rlbench's rules on top of Math-Verify, each decision named (for `--explain`).

Order: extraction (see `extract`), normalisation (see `normalize`), then an exact fast path that decides only
what Math-Verify agrees with, OlympiadBench multi-answer sets and tolerance, and Math-Verify for the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from rlbench_cli.evaluation.grader.extract import BOX_SEP, extract_boxed, match_braces, split_top_level
from rlbench_cli.evaluation.grader.mathverify import (
    mv_equal,
    mv_extract_completion,
    mv_extract_gold,
    mv_parse,
    paper_math_verify,
)
from rlbench_cli.evaluation.grader.normalize import compact, has_percent, normalize_with_unit, unit_prefix_conflict

GRADERS = ("rlbench", "math_verify")
MAX_SET_ELEMENTS = 64

# No exponent notation: in LaTeX Math-Verify reads `1e3` as 1*e*3, and the fast path must agree with it.
_NUMBER_RE = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)$")
_INT_RE = re.compile(r"^[-+]?\d+$")
_CHOICE_RE = re.compile(r"^\(?([A-Ea-e])\)?$")
_WORDS_RE = re.compile(r"^[A-Za-z][A-Za-z ]*[A-Za-z]$")
# A gold `name = value` whose left side is one symbol, maybe subscripted or applied: `I_{\\max}`, `n(\\nu)`.
_ASSIGN_RE = re.compile(
    r"^\s*((?:\\[A-Za-z]+|[A-Za-z])(?:\s*_\s*(?:\{[^{}=]*\}|\w))?(?:\s*\([^()=]*\))?)\s*=(?!=)\s*([^=<>]+)$"
)


@dataclass
class Verdict:
    pred: str | None
    correct: bool
    timed_out: bool = False
    error: str | None = None


@dataclass
class Trace:
    """How one verdict was reached (filled in by `grade_prepared`; printed by `rlbench grade --explain`)."""

    extracted_from: str = ""
    pred_raw: str | None = None
    pred_normalized: str | None = None
    gold_normalized: str | None = None
    rule: str = ""
    steps: list[str] = field(default_factory=list)


def _as_decimal(s: str) -> Decimal | None:
    c = compact(s)
    if not _NUMBER_RE.match(c):
        return None
    try:
        return Decimal(c)
    except InvalidOperation:
        return None


def fast_compare(gold: str, pred: str, tolerance: float | None) -> tuple[bool, str] | None:
    """(verdict, rule) when decided without Math-Verify, else None. Decides only cases where Math-Verify agrees."""
    g, p = compact(gold), compact(pred)
    if g == p:
        return True, "exact string"
    gd, pd = _as_decimal(gold), _as_decimal(pred)
    if gd is not None and pd is not None:
        if tolerance is not None:
            return abs(gd - pd) <= Decimal(str(tolerance)), f"decimal within tolerance {tolerance}"
        if gd == pd:
            return True, "equal decimals"
        if _INT_RE.match(g) and _INT_RE.match(p):
            return False, "different integers"
        return None
    gc, pc = _CHOICE_RE.match(g), _CHOICE_RE.match(p)
    if gc and pc and ("(" in g or "(" in p or g.isupper() or p.isupper()):
        return gc.group(1).lower() == pc.group(1).lower(), "choice letters"
    # Words compare case-insensitively; a mismatch is left to Math-Verify (`ab` and `ba` may be products).
    if _WORDS_RE.match(gold) and _WORDS_RE.match(pred) and gold.lower().split() == pred.lower().split():
        return True, "same words"
    return None


def equal(gold: str, pred: str, tolerance: float | None) -> tuple[bool, str]:
    fast = fast_compare(gold, pred, tolerance)
    if fast is not None:
        return fast
    ok = mv_equal(gold, pred, tolerance)
    return ok, "math-verify verify" + (f" (tolerance {tolerance})" if tolerance is not None else "")


def _strip_set_braces(s: str) -> str:
    """`\\{1,2\\}` or `{1,2}` -> `1,2` (only when the braces enclose the whole answer)."""
    s = s.strip()
    m = re.match(r"^\\\{(.*)\\\}$", s, re.S)
    if m:
        return m.group(1)
    if s.startswith("{") and s.endswith("}") and match_braces(s).get(0) == len(s) - 1:
        return s[1:-1]
    return s


def match_sets(gold_items: list[str], pred_items: list[str], tolerance: float | None) -> bool:
    """Each gold element must be matched by a distinct pred element (and no extra pred elements)."""
    if len(gold_items) != len(pred_items):
        return False
    rest_g, rest_p = list(gold_items), list(pred_items)
    for g in list(rest_g):  # exact matches first (cheap and safe), then bipartite matching on what is left
        for p in rest_p:
            if compact(g) == compact(p):
                rest_g.remove(g)
                rest_p.remove(p)
                break
    edges = [[j for j, p in enumerate(rest_p) if equal(g, p, tolerance)[0]] for g in rest_g]
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return all(augment(i, set()) for i in range(len(rest_g)))


def _compare_values(gold_raw: str, pred_raw: str, multiple_answer: bool, tolerance: float | None,
                    unit: str | None, tr: Trace) -> bool:
    g, g_unit = normalize_with_unit(gold_raw, unit)
    p, p_unit = normalize_with_unit(pred_raw, unit)
    tr.pred_normalized, tr.gold_normalized = p, g
    if not g:
        tr.rule = "empty gold answer"
        return False
    if not p:
        tr.rule = "empty answer"
        return False
    if unit_prefix_conflict(g_unit, p_unit):
        tr.rule = f"units differ by a prefix ({p_unit} vs {g_unit})"
        return False
    if multiple_answer:
        gold_items = split_top_level(_strip_set_braces(g))
        pred_items = split_top_level(_strip_set_braces(p))
        if len(gold_items) > 1 or len(pred_items) > 1:
            if len(pred_items) > MAX_SET_ELEMENTS:
                tr.rule = "too many answer elements"
                return False
            if len(gold_items) == len(pred_items):
                gi = [normalize_with_unit(x, unit)[0] for x in gold_items]
                pi = [normalize_with_unit(x, unit)[0] for x in pred_items]
                tr.rule = f"unordered set of {len(gi)} (each element: exact, decimal or math-verify)"
                return match_sets(gi, pi, tolerance)
            # Different counts can still be one set written two ways (e.g. with \pm): ask Math-Verify once.
            tr.rule = "math-verify verify (element counts differ)"
            return mv_equal(g, p, tolerance)
    ok, tr.rule = equal(g, p, tolerance)
    if not ok and "=" not in p and (m := _ASSIGN_RE.match(g)):
        # `I_{\max}=\frac{q_0}{\sqrt{2LC}}` against the bare right-hand side (Math-Verify does this for plain
        # symbols, not for subscripted ones like this OlympiadBench gold).
        ok, rule = equal(m.group(2), p, tolerance)
        if ok:
            tr.rule = f"right-hand side of the gold's `{m.group(1).strip()} =`: {rule}"
    if not ok and (has_percent(gold_raw) or has_percent(pred_raw)):
        # `50\%` against `\frac{1}{2}` (test_percent_vs_fraction): stripping % (above) handles `50`; Math-Verify
        # reads % as /100 for the fraction form.
        g_pct = normalize_with_unit(gold_raw.replace("\\%", "%"), unit, keep_percent=True)[0]
        p_pct = normalize_with_unit(pred_raw.replace("\\%", "%"), unit, keep_percent=True)[0]
        if mv_equal(g_pct, p_pct, tolerance):
            tr.rule = "math-verify verify with % as /100"
            return True
    return ok


def grade_prepared(pred_src: str, how: str, gold: str, multiple_answer: bool, tolerance: float | None,
                   unit: str | None, grader: str = "rlbench", explain: bool = False) -> tuple[Verdict, Trace]:
    tr = Trace(extracted_from=how)
    if grader != "math_verify" and "boxed" in gold:
        # A full reference solution as gold (MATH's `solution` field): its last box is the answer.
        gold = mv_extract_gold(gold) or extract_boxed(gold) or gold
    if grader == "math_verify":
        ok, info = paper_math_verify(pred_src, gold)
        tr.rule = info["rule"]
        tr.pred_raw = ", ".join(info["pred_parsed"]) or None
        tr.steps = [f"gold parsed: {info['gold_parsed']}", f"completion parsed: {info['pred_parsed']}"]
        pred = info["pred_parsed"][-1] if info["pred_parsed"] else None
        return Verdict(pred=pred, correct=ok), tr
    boxes: list[str] = []
    if how.startswith("boxes:"):
        boxes = pred_src.split(BOX_SEP)
        pred_raw: str | None = boxes[-1]
    elif how == "unboxed":
        pred_raw = mv_extract_completion(pred_src)
        tr.steps.append("no box: Math-Verify extraction of the completion's tail")
    else:
        pred_raw = pred_src
    tr.pred_raw = pred_raw
    if pred_raw is None or not pred_raw.strip():
        tr.rule = "no answer found"
        return Verdict(pred=pred_raw, correct=False), tr
    ok = _compare_values(gold, pred_raw, multiple_answer, tolerance, unit, tr)
    if not ok and len(boxes) > 1:
        # One box per part of a multi-part gold (test_several_boxes_multi_part): join the last n boxes.
        n = len(split_top_level(_strip_set_braces(normalize_with_unit(gold, unit)[0])))
        if 1 < n <= len(boxes) and len(split_top_level(boxes[-1])) == 1:
            joined = ", ".join(boxes[-n:])
            tr2 = Trace(extracted_from=f"last {n} boxes joined")
            if _compare_values(gold, joined, True, tolerance, unit, tr2):
                tr2.pred_raw = joined
                tr2.steps = tr.steps
                tr = tr2
                pred_raw, ok = joined, True
    if explain:
        tr.steps += [f"gold parsed by Math-Verify: {[str(x) for x in mv_parse(tr.gold_normalized or '')]}",
                     f"answer parsed by Math-Verify: {[str(x) for x in mv_parse(tr.pred_normalized or '')]}"]
    return Verdict(pred=pred_raw, correct=ok), tr


def error_verdict(pred_src: str, how: str, e: Exception) -> Verdict:
    pred = pred_src if how in ("box", "final-answer sentence") else None
    return Verdict(pred=pred, correct=False, error=f"{type(e).__name__}: {e}"[:300])


def trace_dict(tr: Trace) -> dict[str, Any]:
    return {"extracted_from": tr.extracted_from, "pred": tr.pred_raw, "pred_normalized": tr.pred_normalized,
            "gold_normalized": tr.gold_normalized, "rule": tr.rule, "steps": tr.steps}
