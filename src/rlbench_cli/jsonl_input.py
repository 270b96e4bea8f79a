"""JSON-lines files that users hand to rlbench (benchmark data, completions to grade, `rlbench grade` input).

One UTF-8 read and one per-line parse, so every reader reports a bad file the same way: the file and line, what is
wrong, how to fix it (a UserError, exit code 2), never a traceback. Blank lines are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError

Row = tuple[int, dict[str, Any] | None, str | None]  # (line number, parsed object or None, what is wrong or None)


def read_user_text(path: Path, *, fix: str) -> str:
    """The file as UTF-8 text; a missing, unreadable or non-UTF-8 file is a UserError naming the file."""
    if not path.exists():
        raise UserError("file not found", where=str(path), fix=fix)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read the file ({e.strerror})", where=str(path)) from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text ({e.reason} at byte {e.start})", where=str(path),
                        fix="write the file as UTF-8 JSON lines") from e


def parse_lines(text: str) -> list[Row]:
    """Every non-blank line parsed; a line that is not a JSON object carries its error instead."""
    rows: list[Row] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            rows.append((lineno, None, f"not valid JSON ({e.msg}, column {e.colno})"))
            continue
        ok = isinstance(obj, dict)
        rows.append((lineno, obj, None) if ok else (lineno, None, f"not a JSON object (got {type(obj).__name__})"))
    return rows


def read_objects(path: Path, *, fix: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every line; the first bad line is a UserError at `path:line`."""
    out: list[tuple[int, dict[str, Any]]] = []
    for lineno, obj, err in parse_lines(read_user_text(path, fix=fix)):
        if err is not None or obj is None:
            raise UserError(err or "not a JSON object", where=f"{path}:{lineno}", fix="write one JSON object per line")
        out.append((lineno, obj))
    return out
