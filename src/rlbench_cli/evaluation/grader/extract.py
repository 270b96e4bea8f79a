"""Answer extraction: which part of a completion is its final answer.

The last complete `\\boxed{}` wins, with two exceptions that models produce often: a closing "The final answer is X"
sentence after the last box (it overrides the box), and a multi-part gold answered with one box per part (the
last n boxes are joined). Unboxed completions go to Math-Verify's own extraction in `compare`.
"""

from __future__ import annotations

import re

# Only the end of an unboxed completion is searched: the answer sits there, and it bounds the work.
UNBOXED_TAIL_CHARS = 4000
_MAX_BOXES = 16
BOX_SEP = "\u241e"  # joins several boxes in one dedup key (a character no answer contains)

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_FINAL_RE = re.compile(r"final answer is\s*:?\s*", re.I)


def match_braces(text: str) -> dict[int, int]:
    """Map each '{' index to its matching '}' in one linear pass; escaped braces (\\{ \\}) do not group."""
    stack: list[int] = []
    match: dict[int, int] = {}
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            match[stack.pop()] = i
        i += 1
    return match


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete `\\boxed{...}` / `\\fbox{...}`, in order.

    `\\boxed 5` (no braces) yields the next token; unclosed boxes are skipped.
    """
    starts = [(m.start(), m.end()) for m in _BOX_RE.finditer(text)]
    if not starts:
        return []
    braces: dict[int, int] | None = None
    out: list[tuple[int, int, str]] = []
    for begin, pos in starts:
        j = pos
        while j < len(text) and text[j] in " \t\n":
            j += 1
        if j < len(text) and text[j] == "{":
            if braces is None:
                braces = match_braces(text)
            close = braces.get(j)
            if close is not None:
                out.append((begin, close + 1, text[j + 1 : close].strip()))
            continue
        if j > pos:  # `\boxed 5`: the token up to whitespace or `$`
            m = re.match(r"[^\s$]+", text[j : j + 1000])
            if m:
                out.append((begin, j + m.end(), m.group(0)))
    # A box nested in another box is part of the outer one; `\boxed{\boxed{5}}` is `5`.
    outer = [s for s in out if not any(o[0] < s[0] and s[1] <= o[1] for o in out)]
    return [(b, e, _unwrap_box(c)) for b, e, c in outer]


def _unwrap_box(content: str) -> str:
    for _ in range(4):
        m = re.fullmatch(r"\\(?:boxed|fbox)\s*\{(.*)\}", content, re.S)
        if not m or match_braces(content).get(content.index("{")) != len(content) - 1:
            break
        content = m.group(1).strip()
    return content


def extract_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` / `\\fbox{...}` (brace-balanced), or None."""
    spans = boxed_spans(text)
    return spans[-1][2] if spans else None


def final_answer_sentence(tail: str) -> str | None:
    """X in a closing "The final answer is X" (Minerva's format): the rest of that sentence, up to a full stop or
    line end outside `$...$`, without quotes around it."""
    matches = list(_FINAL_RE.finditer(tail))
    if not matches:
        return None
    rest = tail[matches[-1].end() : matches[-1].end() + 2000]
    in_math, end = False, len(rest)
    for i, ch in enumerate(rest):
        if ch == "$" and (i == 0 or rest[i - 1] != "\\"):
            in_math = not in_math
        elif ch == "\n" or (ch == "." and not in_math and (i + 1 == len(rest) or rest[i + 1].isspace())):
            end = i
            break
    ans = rest[:end].strip().replace('\\"', '"').strip("\"'` ").strip()
    return ans or None


def split_top_level(s: str, seps: str = ",") -> list[str]:
    """Split at separators that are not inside (), [], {} (escaped \\{ \\} count as brackets too)."""
    parts: list[str] = []
    depth = 0
    start = 0
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch == "\\" and i + 1 < n and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch in seps and depth == 0:
            parts.append(s[start:i])
            start = i + 1
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts if p.strip()]


def prepare_pred(completion: str) -> tuple[str, str]:
    """(text to grade, how it was found). The dedup key of the pool; cheap, runs in the parent process.

    how: "box" (last box), "final-answer sentence" (after the last box, or in an unboxed tail), "boxes:N"
    (all N boxes, joined with commas: the grader uses them only for a multi-part gold), or "unboxed" (the tail,
    for Math-Verify's extraction).
    """
    spans = boxed_spans(completion)
    if spans:
        after = completion[spans[-1][1] :]
        final = final_answer_sentence(after[-UNBOXED_TAIL_CHARS:])
        if final is not None:
            return final, "final-answer sentence"
        if len(spans) > 1:
            return BOX_SEP.join(s[2] for s in spans[-_MAX_BOXES:]), f"boxes:{min(len(spans), _MAX_BOXES)}"
        return spans[-1][2], "box"
    tail = completion[-UNBOXED_TAIL_CHARS:]
    final = final_answer_sentence(tail)
    if final is not None:
        return final, "final-answer sentence"
    return tail, "unboxed"

