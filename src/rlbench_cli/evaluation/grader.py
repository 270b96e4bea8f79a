"""Answer checking: extract the final answer of a completion and decide whether it matches the gold answer.

Built on Math-Verify 0.9.0, with three additions it lacks: a normalisation + exact fast path (cheap, and it
must agree with Math-Verify), OlympiadBench multi-answer sets and numeric tolerance, and a process pool with a
hard per-answer wall-clock limit. Math-Verify's own timeouts use `signal.alarm`, which fails outside the main
thread, so they are switched off here and the pool kills a worker whose answer runs past the limit instead.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError

GRADER_VERSION = "rlbench-grader/1+math-verify-0.9.0"

# Only the end of an unboxed completion is searched: the answer sits there, and it bounds the work.
_UNBOXED_TAIL_CHARS = 4000
_MAX_SET_ELEMENTS = 64
_MAX_STARTUP_FAILURES = 3
_STARTUP_HELP = (
    "grader worker processes keep dying at startup; if this is a script, put its top-level code under "
    "`if __name__ == '__main__':` (multiprocessing needs it)"
)


@dataclass
class Verdict:
    pred: str | None
    correct: bool
    timed_out: bool = False
    error: str | None = None


@dataclass(frozen=True)
class GradeItem:
    completion: str
    gold: str
    multiple_answer: bool = False
    tolerance: float | None = None
    unit: str | None = None


# ---------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _match_braces(text: str) -> dict[int, int]:
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


def extract_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` / `\\fbox{...}` (brace-balanced), or None.

    `\\boxed 5` (no braces) yields the next token. An unclosed last box falls back to the previous one.
    """
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    braces: dict[int, int] | None = None
    for pos in reversed(starts):
        j = pos
        while j < len(text) and text[j] in " \t\n":
            j += 1
        if j < len(text) and text[j] == "{":
            if braces is None:
                braces = _match_braces(text)
            close = braces.get(j)
            if close is not None:
                return text[j + 1 : close].strip()
            continue
        if j > pos:  # `\boxed 5`: the token up to whitespace or `$`
            m = re.match(r"[^\s$]+", text[j : j + 1000])
            if m:
                return m.group(0)
    return None


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


# ---------------------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------------------

_TEXT_CMD = r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)"
_TRAILING_UNIT_RE = re.compile(
    r"^(?P<head>.*?\S)\s*(?:\\[,;!: ]|~|\s)*" + _TEXT_CMD + r"\s*\{[^{}]*\}\s*$", re.S
)
_WHOLE_TEXT_RE = re.compile(r"^" + _TEXT_CMD + r"\s*\{([^{}]*)\}$", re.S)
_TEXT_UNWRAP_RE = re.compile(r"\\(?:text|textbf|textrm|mbox)\s*\{([^{}]*)\}")
_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
# No exponent notation: in LaTeX Math-Verify reads `1e3` as 1*e*3, and the fast path must agree with it.
_NUMBER_RE = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)$")
_INT_RE = re.compile(r"^[-+]?\d+$")
_CHOICE_RE = re.compile(r"^\(?([A-Ea-e])\)?$")
_WORDS_RE = re.compile(r"^[A-Za-z][A-Za-z ]*[A-Za-z]$")


def _clean_unit(unit: str) -> str:
    u = unit.strip().strip("$").strip()
    u = _TEXT_UNWRAP_RE.sub(r"\1", u)
    return u.replace("\\mathrm", "").strip("{} ~")


def normalize_answer(s: str, unit: str | None = None) -> str:
    """Canonical string form of an answer, used for the exact fast path and before Math-Verify parsing."""
    s = s.strip().replace("$", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\left(?![A-Za-z])|\\right(?![A-Za-z])", "", s)
    s = s.replace("\\!", "")
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("{,}", ",")
    s = re.sub(r"(?<=\d)\\[,;: ](?=\d{3})", "", s)  # thin-space thousands separators
    if unit:
        u = _clean_unit(unit)
        if u and s.endswith(u) and len(s) > len(u):
            s = s[: -len(u)].rstrip(" ~\\,")
    for _ in range(3):  # a value may carry several trailing unit words
        m = _TRAILING_UNIT_RE.match(s)
        if not m or not re.search(r"[\d}\)]$", m.group("head").strip().rstrip("\\,~ ")):
            break
        s = m.group("head").strip().rstrip("\\,~ ").strip()
    m = _WHOLE_TEXT_RE.match(s.strip())
    if m:
        s = m.group(1)
    s = _TEXT_UNWRAP_RE.sub(r"\1", s)
    s = s.strip().rstrip(".").strip()
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    return re.sub(r"\s+", " ", s).strip()


def _compact(s: str) -> str:
    return re.sub(r"\s+|\\[,;: ]|~", "", s)


def _as_decimal(s: str) -> Decimal | None:
    c = _compact(s)
    if not _NUMBER_RE.match(c):
        return None
    try:
        return Decimal(c)
    except InvalidOperation:
        return None


def _fast_compare(gold: str, pred: str, tolerance: float | None) -> bool | None:
    """True/False when decided without Math-Verify, else None. Decides only cases where Math-Verify agrees."""
    g, p = _compact(gold), _compact(pred)
    if g == p:
        return True
    gd, pd = _as_decimal(gold), _as_decimal(pred)
    if gd is not None and pd is not None:
        if tolerance is not None:
            return abs(gd - pd) <= Decimal(str(tolerance))
        if gd == pd:
            return True
        if _INT_RE.match(g) and _INT_RE.match(p):
            return False
        return None
    gc, pc = _CHOICE_RE.match(g), _CHOICE_RE.match(p)
    if gc and pc and ("(" in g or "(" in p or g.isupper() or p.isupper()):
        return gc.group(1).lower() == pc.group(1).lower()
    # Words compare case-insensitively; a mismatch is left to Math-Verify (`ab` and `ba` may be products).
    if _WORDS_RE.match(gold) and _WORDS_RE.match(pred) and gold.lower().split() == pred.lower().split():
        return True
    return None


# ---------------------------------------------------------------------------------------------------------
# Math-Verify
# ---------------------------------------------------------------------------------------------------------


def _quiet_math_verify() -> None:
    """We disable Math-Verify's signal timeouts on purpose; silence its one-time warning about it."""
    import math_verify.grader as mvg
    import math_verify.parser as mvp

    mvp.TIMEOUT_WARNING_SHOWN = True
    mvg.TIMEOUT_WARNING_SHOWN = True


def _mv_parse(latex: str) -> list[Any]:
    from math_verify import parse

    _quiet_math_verify()
    parsed = parse(f"${latex}$", parsing_timeout=None)
    if not parsed:
        parsed = parse(f"\\boxed{{{latex}}}", parsing_timeout=None)
    return parsed


def _mv_equal(gold: str, pred: str, tolerance: float | None = None) -> bool:
    """Math-Verify's verdict, gold first (verify is asymmetric)."""
    from math_verify import verify

    g, p = _mv_parse(gold), _mv_parse(pred)
    if not g or not p:
        return False
    if tolerance is not None:
        gv, pv = _numeric_value(g[0]), _numeric_value(p[0])
        if gv is not None and pv is not None:
            return abs(gv - pv) <= tolerance
    return bool(verify(g, p, timeout_seconds=None))


def _numeric_value(expr: Any) -> float | None:
    try:
        import sympy

        if isinstance(expr, sympy.Basic) and expr.is_number:
            v = complex(expr.evalf())
            return v.real if abs(v.imag) < 1e-12 else None
    except (TypeError, ValueError, AttributeError):
        return None
    return None


def _equal(gold: str, pred: str, tolerance: float | None) -> bool:
    fast = _fast_compare(gold, pred, tolerance)
    if fast is not None:
        return fast
    return _mv_equal(gold, pred, tolerance)


def _strip_set_braces(s: str) -> str:
    m = re.match(r"^\\\{(.*)\\\}$", s.strip(), re.S)
    return m.group(1) if m else s


def _match_sets(gold_items: list[str], pred_items: list[str], tolerance: float | None) -> bool:
    """Each gold element must be matched by a distinct pred element (and no extra pred elements)."""
    if len(gold_items) != len(pred_items):
        return False
    # Exact matches first (cheap and safe), then bipartite matching on what is left.
    rest_g, rest_p = list(gold_items), list(pred_items)
    for g in list(rest_g):
        for p in rest_p:
            if _compact(g) == _compact(p):
                rest_g.remove(g)
                rest_p.remove(p)
                break
    edges = [[j for j, p in enumerate(rest_p) if _equal(g, p, tolerance)] for g in rest_g]
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


# ---------------------------------------------------------------------------------------------------------
# Grading one answer
# ---------------------------------------------------------------------------------------------------------


def prepare_pred(completion: str) -> tuple[str, bool]:
    """(text to grade, came from a box). The dedup key of the pool; cheap, runs in the parent process."""
    boxed = extract_boxed(completion)
    if boxed is not None:
        return boxed, True
    return completion[-_UNBOXED_TAIL_CHARS:], False


def _grade_prepared(
    pred_src: str, from_box: bool, gold: str, multiple_answer: bool, tolerance: float | None, unit: str | None
) -> Verdict:
    if from_box:
        pred_raw: str | None = pred_src
    else:
        parsed = _mv_parse_completion(pred_src)
        pred_raw = parsed
    if pred_raw is None or not pred_raw.strip():
        return Verdict(pred=pred_raw, correct=False)
    pred = normalize_answer(pred_raw, unit)
    g = normalize_answer(gold, unit)
    if not g:
        return Verdict(pred=pred_raw, correct=False, error="empty gold answer")
    if multiple_answer:
        gold_items = split_top_level(_strip_set_braces(g))
        pred_items = split_top_level(_strip_set_braces(pred))
        if len(gold_items) > 1 or len(pred_items) > 1:
            if len(pred_items) > _MAX_SET_ELEMENTS:
                return Verdict(pred=pred_raw, correct=False, error="too many answer elements")
            if len(gold_items) == len(pred_items):
                gold_items = [normalize_answer(x, unit) for x in gold_items]
                pred_items = [normalize_answer(x, unit) for x in pred_items]
                return Verdict(pred=pred_raw, correct=_match_sets(gold_items, pred_items, tolerance))
            # Different counts can still be one set written two ways (e.g. with \pm): ask Math-Verify once.
            return Verdict(pred=pred_raw, correct=_mv_equal(g, pred, tolerance))
    return Verdict(pred=pred_raw, correct=_equal(g, pred, tolerance))


def _mv_parse_completion(text: str) -> str | None:
    """Math-Verify's own extraction of the last math expression of an unboxed completion, as a string."""
    from math_verify import parse

    _quiet_math_verify()
    parsed = parse(text, parsing_timeout=None)
    if len(parsed) >= 2 and isinstance(parsed[1], str):
        return parsed[1]
    if parsed:
        return str(parsed[0])
    return None


def grade_answer(
    completion: str,
    gold: str,
    *,
    multiple_answer: bool = False,
    tolerance: float | None = None,
    unit: str | None = None,
) -> Verdict:
    """Grade one completion in this process, with no time limit (use `Grader` for untrusted input)."""
    pred_src, from_box = prepare_pred(completion)
    try:
        return _grade_prepared(pred_src, from_box, gold, multiple_answer, tolerance, unit)
    except Exception as e:  # noqa: BLE001 - a grader crash on odd input is a wrong answer, not a failed run
        return _error_verdict(pred_src, from_box, e)


def _grade_key(key: tuple[str, bool, str, bool, float | None, str | None]) -> Verdict:
    pred_src, from_box, gold, multi, tol, unit = key
    try:
        return _grade_prepared(pred_src, from_box, gold, multi, tol, unit)
    except Exception as e:  # noqa: BLE001
        return _error_verdict(pred_src, from_box, e)


def _error_verdict(pred_src: str, from_box: bool, e: Exception) -> Verdict:
    return Verdict(pred=pred_src if from_box else None, correct=False, error=f"{type(e).__name__}: {e}"[:300])


# ---------------------------------------------------------------------------------------------------------
# Process pool with a hard per-answer limit
# ---------------------------------------------------------------------------------------------------------


def _worker_main(conn: Any) -> None:
    """Worker loop: grade keys on this process's main thread until told to stop (None) or the pipe closes."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _quiet_math_verify()
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        idx, key = msg
        conn.send((idx, asdict(_grade_key(key))))


class _Worker:
    def __init__(self, ctx: Any) -> None:
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.ready = False
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(timeout=5)
        finally:
            self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


def _context() -> Any:
    import multiprocessing as mp

    # forkserver: workers fork from a clean server (no threads, no torch state) and start fast after a kill.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # Takes effect only if the server is not running yet; then workers start with sympy already imported.
        ctx.set_forkserver_preload(["rlbench_cli.evaluation.grader", "math_verify"])
        return ctx
    return mp.get_context("spawn")


class Grader:
    """Grades many answers in worker processes, each answer under a wall-clock limit.

    `workers=0` grades in this process (debugging, tests); it then has no time limit.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 5.0) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.n_workers = workers
        self.timeout_s = timeout_s
        self._workers: list[_Worker] = []
        self._ctx: Any = None
        self._startup_failures = 0
        self.stats = {"graded": 0, "unique": 0, "timeouts": 0, "restarts": 0}

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers = []

    def _ensure_workers(self) -> None:
        if self._ctx is None:
            self._ctx = _context()
        while len(self._workers) < self.n_workers:
            self._workers.append(_Worker(self._ctx))

    def grade_many(self, items: list[GradeItem]) -> list[Verdict]:
        keys = []
        for it in items:
            pred_src, from_box = prepare_pred(it.completion)
            keys.append((pred_src, from_box, it.gold, bool(it.multiple_answer), it.tolerance, it.unit))
        unique = list(dict.fromkeys(keys))
        self.stats["graded"] += len(items)
        self.stats["unique"] += len(unique)
        if self.n_workers == 0:
            results = {k: _grade_key(k) for k in unique}
        else:
            results = dict(zip(unique, self._run_pool(unique), strict=True))
        # Copies, so callers can mutate one verdict without touching its duplicates.
        return [Verdict(**asdict(results[k])) for k in keys]

    def _run_pool(self, keys: list[tuple[Any, ...]]) -> list[Verdict]:
        from multiprocessing.connection import wait

        self._ensure_workers()
        out: list[Verdict | None] = [None] * len(keys)
        todo = list(range(len(keys) - 1, -1, -1))  # a stack; pop() takes the next index in order
        remaining = len(keys)
        while remaining:
            now = time.monotonic()
            for w in self._workers:
                if w.ready and w.task is None and todo:
                    i = todo.pop()
                    try:
                        w.conn.send((i, keys[i]))
                    except (OSError, ValueError):
                        todo.append(i)
                        self._replace(w)
                        continue
                    w.task, w.deadline = i, now + self.timeout_s
            busy = [w for w in self._workers if w.task is not None]
            timeout = max(0.0, min((w.deadline for w in busy), default=now + 1.0) - time.monotonic())
            ready = wait([w.conn for w in self._workers], timeout=timeout)
            for w in list(self._workers):
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):  # the worker died (e.g. out of memory): its answer is wrong
                        if w.task is not None:
                            out[w.task] = Verdict(pred=_pred_of(keys[w.task]), correct=False,
                                                  error="worker died")
                            remaining -= 1
                        elif not w.ready:
                            self._startup_failures += 1
                            if self._startup_failures >= _MAX_STARTUP_FAILURES:
                                raise RuntimeError(_STARTUP_HELP) from None
                        self._replace(w)
                        continue
                    tag, payload = msg
                    if tag == "ready":
                        w.ready = True
                        self._startup_failures = 0
                    elif w.task == tag:
                        out[tag] = Verdict(**payload)
                        w.task = None
                        remaining -= 1
            now = time.monotonic()
            for w in list(self._workers):
                if w.task is not None and now >= w.deadline:
                    out[w.task] = Verdict(pred=_pred_of(keys[w.task]), correct=False, timed_out=True)
                    self.stats["timeouts"] += 1
                    remaining -= 1
                    self._replace(w)
        return [v for v in out if v is not None]

    def _replace(self, w: _Worker) -> None:
        w.task = None
        w.kill()
        self._workers.remove(w)
        self._workers.append(_Worker(self._ctx))
        self.stats["restarts"] += 1


def _pred_of(key: tuple[Any, ...]) -> str | None:
    return key[0] if key[1] else None


# ---------------------------------------------------------------------------------------------------------
# `rlbench grade FILE.jsonl`
# ---------------------------------------------------------------------------------------------------------


def _read_grade_input(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise UserError("file not found", where=str(path),
                        fix="pass a JSONL file with `completion` and `gold` on every line")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"not valid JSON ({e.msg})", where=where,
                                fix="write one JSON object per line") from e
            if not isinstance(row, dict):
                raise UserError("line is not a JSON object", where=where, fix="one JSON object per line")
            for field in ("completion", "gold"):
                if not isinstance(row.get(field), str):
                    raise UserError(f"missing or non-string field {field!r}", where=where,
                                    fix="every line needs string fields `completion` and `gold`")
            tol = row.get("tolerance")
            if tol is not None and not isinstance(tol, int | float):
                raise UserError("`tolerance` must be a number or null", where=where)
            rows.append(row)
    return rows


def grade_file(
    input_path: str | Path, output_path: str | Path, workers: int = 2, timeout_s: float = 5.0
) -> dict[str, Any]:
    """Grade a JSONL of {completion, gold[, id, multiple_answer, tolerance, unit]}; write the lines back with
    `pred`, `correct`, `timed_out` added. Returns {n, correct, accuracy, timeouts, grader_version}."""
    from rlbench_cli.records import atomic_write_text

    rows = _read_grade_input(Path(input_path))
    items = [
        GradeItem(
            completion=r["completion"], gold=r["gold"], multiple_answer=bool(r.get("multiple_answer", False)),
            tolerance=float(r["tolerance"]) if r.get("tolerance") is not None else None, unit=r.get("unit"),
        )
        for r in rows
    ]
    with Grader(workers=workers, timeout_s=timeout_s) as grader:
        verdicts = grader.grade_many(items)
    lines = []
    for row, v in zip(rows, verdicts, strict=True):
        lines.append(json.dumps({**row, "pred": v.pred, "correct": v.correct, "timed_out": v.timed_out}))
    atomic_write_text(output_path, "".join(line + "\n" for line in lines))
    n = len(rows)
    n_correct = sum(v.correct for v in verdicts)
    return {
        "n": n,
        "correct": n_correct,
        "accuracy": n_correct / n if n else 0.0,
        "timeouts": sum(v.timed_out for v in verdicts),
        "grader_version": GRADER_VERSION,
    }
