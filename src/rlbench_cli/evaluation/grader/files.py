"""`rlbench grade FILE.jsonl`: grade completions produced elsewhere, optionally explaining each verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError
from rlbench_cli.evaluation.grader.compare import grade_prepared, trace_dict
from rlbench_cli.evaluation.grader.pool import GradeItem, Grader, make_key
from rlbench_cli.evaluation.grader.version import grader_version
from rlbench_cli.jsonl_input import read_objects


def _read_grade_input(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    fix = "pass a JSONL file with `completion` and `gold` on every line"
    for lineno, row in read_objects(path, fix=fix):
        where = f"{path}:{lineno}"
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
    input_path: str | Path, output_path: str | Path, workers: int = 2, timeout_s: float = 5.0,
    grader: str = "rlbench",
) -> dict[str, Any]:
    """Grade a JSONL of {completion, gold[, id, multiple_answer, tolerance, unit]}; write the lines back with
    `pred`, `correct`, `timed_out` added. Returns {n, correct, accuracy, timeouts, grader_version}."""
    from rlbench_cli.records import atomic_write_text

    rows = _read_grade_input(Path(input_path))
    items = _items(rows)
    with Grader(workers=workers, timeout_s=timeout_s, grader=grader) as pool:
        verdicts = pool.grade_many(items)
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
        "grader": grader,
        "grader_version": grader_version(grader),
    }


def _items(rows: list[dict[str, Any]]) -> list[GradeItem]:
    return [
        GradeItem(
            completion=r["completion"], gold=r["gold"], multiple_answer=bool(r.get("multiple_answer", False)),
            tolerance=float(r["tolerance"]) if r.get("tolerance") is not None else None, unit=r.get("unit"),
        )
        for r in rows
    ]


def explain_file(input_path: str | Path, grader: str = "rlbench") -> list[dict[str, Any]]:
    """For each line: what was extracted from the completion and the gold, how each parsed, which rule decided.

    Runs in this process without a time limit: meant for a handful of lines someone wants to understand.
    """
    out = []
    for row, item in zip(rows := _read_grade_input(Path(input_path)), _items(rows), strict=True):
        pred_src, how, gold, multi, tol, unit, g = make_key(item, grader)
        try:
            verdict, tr = grade_prepared(pred_src, how, gold, multi, tol, unit, g, explain=True)
            info = {"correct": verdict.correct, **trace_dict(tr)}
        except Exception as e:  # noqa: BLE001 - explain what happened rather than fail the listing
            info = {"correct": False, "rule": f"grader error: {type(e).__name__}: {e}"[:300]}
        out.append({"id": row.get("id"), "gold": row["gold"], "grader": grader, **info})
    return out


def format_explanation(e: dict[str, Any]) -> str:
    def q(x: Any) -> str:
        return "-" if x is None else f"`{x}`"

    lines = [f"[{e.get('id') or '-'}] {'CORRECT' if e['correct'] else 'WRONG'}  (grader {e['grader']})",
             f"  gold:       {q(e['gold'])} -> normalised {q(e.get('gold_normalized'))}",
             f"  extracted:  {q(e.get('pred'))} (from {e.get('extracted_from') or '-'}) -> normalised "
             f"{q(e.get('pred_normalized'))}"]
    lines += [f"  {s}" for s in e.get("steps", [])]
    lines.append(f"  decided by: {e.get('rule')}")
    return "\n".join(lines)
