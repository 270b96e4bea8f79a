"""Answer normalisation: the canonical string form used by the exact fast path and before Math-Verify parses it.

Each rule here exists because Math-Verify, called on the raw string, gets a real benchmark answer wrong; the
test that needs it is named beside it (tests/test_grader_classes.py unless said otherwise).
"""

from __future__ import annotations

import re

_TEXT_CMD = r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)"
# A trailing unit: \text{cm}, \mathrm{~m}^2, \text{ cm}^{3} ...
_TRAILING_UNIT_RE = re.compile(
    r"^(?P<head>.*?\S)\s*(?:\\[,;!: ]|~|\s)*(?P<unit>" + _TEXT_CMD
    + r"\s*\{[^{}]*\}(?:\s*\^\s*(?:\{[^{}]*\}|\d))?)\s*$",
    re.S,
)
_WHOLE_TEXT_RE = re.compile(r"^" + _TEXT_CMD + r"\s*\{([^{}]*)\}$", re.S)
_TEXT_UNWRAP_RE = re.compile(r"\\(?:text|textbf|textrm|mbox)\s*\{([^{}]*)\}")
_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
# Minerva golds such as `4.5e33`, `1e-5` (test_scientific_notation_gold): in LaTeX Math-Verify reads `e` as Euler's
# number, so a whole-answer float literal is rewritten to `a\times10^{b}`.
_SCI_RE = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+))\s*[eE]\s*([-+]?\d+)$")
# A Python float literal with a bare trailing point (`-1./3`, test_python_float_literal_gold).
_BARE_POINT_RE = re.compile(r"(?<=\d)\.(?![\d])")
# `\mathrm{e}` (and friends) is Euler's number; left as is, Math-Verify's parse stops early at it and the unit
# stripper would drop it as a unit (test_mathrm_e_false_positives).
_CONST_RE = re.compile(r"\\(?:mathrm|operatorname|text|mathit)\s*\{\s*(e|i|\\pi)\s*\}")
_SI_PREFIXES = set("kmcdnpuμMGT") | {"\\mu "}


def replace_constants(s: str) -> str:
    """`\\mathrm{e}` -> `e` (also `\\mathrm{i}`, `\\mathrm{\\pi}`): Euler's number, not a unit."""
    return _CONST_RE.sub(r"\1", s)


def _clean_unit(unit: str) -> str:
    u = unit.strip().strip("$").strip()
    u = _TEXT_UNWRAP_RE.sub(r"\1", u)
    u = re.sub(r"\\mathrm\s*\{([^{}]*)\}", r"\1", u).replace("\\mathrm", "")
    return re.sub(r"[\s{}~]|\\[,;!: ]", "", u)


def normalize_answer(s: str, unit: str | None = None) -> str:
    """Canonical string form of an answer."""
    return normalize_with_unit(s, unit)[0]


def normalize_with_unit(s: str, unit: str | None = None, keep_percent: bool = False) -> tuple[str, str | None]:
    """(canonical form, the trailing unit it carried, cleaned; None if none). `keep_percent` leaves `%` in."""
    s = s.strip()
    s = s.replace("\\$", "")  # currency `\$18.90` (test_currency_gold)
    s = s.replace("$", "")
    s = _CONST_RE.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\left(?![A-Za-z])|\\right(?![A-Za-z])", "", s)
    s = re.sub(r"(?<=\d),\\!\s*(?=\d{3})", ",", s)  # `11,\! 111,\! 100` (test_thin_space_thousands)
    s = s.replace("\\!", "")
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree", "", s)
    if keep_percent:
        s = s.replace("\\%", "%").replace("%", "\\%")
    else:
        s = s.replace("\\%", "").replace("%", "")
    s = s.replace("{,}", ",")
    s = re.sub(r"(?<=\d)\\[,;: ](?=\d{3})", "", s)  # thin-space thousands separators
    found_unit: str | None = None
    if unit:
        u = _clean_unit(unit)
        if u and _compact(s).endswith(u) and len(_compact(s)) > len(u):
            s = _strip_suffix_loose(s, u)
            found_unit = u
    for _ in range(3):  # a value may carry several trailing unit words
        m = _TRAILING_UNIT_RE.match(s)
        if not m or not re.search(r"[\d}\)]$", m.group("head").strip().rstrip("\\,~ ")):
            break
        found_unit = found_unit or _clean_unit(m.group("unit"))
        s = m.group("head").strip().rstrip("\\,~ ").strip()
    m = _WHOLE_TEXT_RE.match(s.strip())
    if m:
        s = m.group(1)
    s = _TEXT_UNWRAP_RE.sub(r"\1", s)
    s = s.strip().rstrip(".").strip()
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    s = re.sub(r"\s+", " ", s).strip()
    sci = _SCI_RE.match(s)
    if sci:
        s = f"{sci.group(1)}\\times10^{{{int(sci.group(2))}}}"
    elif re.fullmatch(r"[-+]?[\d.]+\s*/\s*[\d.]+", s):
        s = _BARE_POINT_RE.sub("", s)
    return s, found_unit


def _strip_suffix_loose(s: str, u: str) -> str:
    """Drop the unit `u` (compared without spaces/braces) from the end of `s`."""
    kept = len(s)
    seen = ""
    while kept > 0 and len(seen) < len(u):
        kept -= 1
        ch = s[kept]
        if not re.match(r"[\s{}~]", ch):
            seen = ch + seen
    return s[:kept].rstrip(" ~\\,")


def has_percent(s: str) -> bool:
    return "%" in s


def unit_prefix_conflict(gold_unit: str | None, pred_unit: str | None) -> bool:
    """Both answers carry units that differ only by an SI prefix (km vs m, mg vs g): a different value."""
    if not gold_unit or not pred_unit or gold_unit == pred_unit:
        return False
    a, b = sorted((gold_unit, pred_unit), key=len)
    if len(b) == len(a) + 1 and b[1:] == a and b[0] in _SI_PREFIXES:
        return True
    return len(a) == len(b) and len(a) > 1 and a[1:] == b[1:] and a[0] in _SI_PREFIXES and b[0] in _SI_PREFIXES


def _compact(s: str) -> str:
    return re.sub(r"\s+|\\[,;: ]|~|[{}]", "", s)


def compact(s: str) -> str:
    """`s` without spaces and thin spaces (the exact-match key)."""
    return re.sub(r"\s+|\\[,;: ]|~", "", s)
