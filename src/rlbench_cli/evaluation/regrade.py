"""`rlbench eval RUN --regrade [--grader NAME]`: grade the stored samples again, without generating anything.

For each benchmark folder of the run (`<root>/eval/<benchmark>/`): load the benchmark (its sha256 must match
the one the samples were made on), grade every stored completion with the chosen grader, and rewrite
`samples*.jsonl`, `settings.json` (grader name and version) and `summary.json` (per-problem counts, metrics,
grader), each atomically. Reports how many verdicts changed per benchmark. A grader fix then costs seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError
from rlbench_cli.records import atomic_write_json, atomic_write_text, read_jsonl

_SAMPLE_PREFIX = "samples"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read ({e})", where=str(path), fix="restore the file or rerun the eval") from e


def _load_problems(name: str, settings: dict[str, Any], n_problems: int | None, data_dir: Path | None,
                   where: Path) -> dict[str, Any]:
    from rlbench_cli.evaluation.benchmarks import load_benchmark

    bench = load_benchmark(name, data_dir=data_dir, limit=n_problems)
    want = settings.get("data_sha256")
    if want and bench.sha256 != want:
        raise UserError(
            f"benchmark data differ from the data these samples were made on (sha256 {bench.sha256} != {want})",
            where=str(where), fix="pass --data-dir with the original benchmark files",
        )
    return {str(p.id): p for p in bench.problems}


def _update_summary(path: Path, rows: list[dict[str, Any]], problems: dict[str, Any], grader: str,
                    timeout_s: float) -> dict[str, Any] | None:
    """Recompute the summary's per-problem counts, metrics and grader block from the regraded rows."""
    from rlbench_cli.evaluation.grader import grader_version
    from rlbench_cli.evaluation.metrics import maj_at_k, summarize

    if not path.is_file():
        return None
    summary = _read_json(path)
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_problem.setdefault(str(r["problem_id"]), []).append(r)
    per_problem = []
    for old in summary.get("per_problem", []):
        pid = str(old["id"])
        got = sorted(by_problem.get(pid, []), key=lambda r: int(r["sample_idx"]))[: int(old["n"])]
        if len(got) < int(old["n"]) or pid not in problems:
            raise UserError(f"summary lists {old['n']} samples of problem {pid} but fewer are stored", where=str(path),
                            fix="rerun `rlbench eval` to finish the samples, then --regrade")
        per_problem.append({"id": pid, "n": int(old["n"]), "n_correct": sum(bool(r["correct"]) for r in got),
                            "maj_correct": bool(maj_at_k([r.get("pred") for r in got],
                                                         [bool(r["correct"]) for r in got]))})
    summary["per_problem"] = per_problem
    summary["metrics"] = summarize(per_problem)
    summary["grader"] = {**summary.get("grader", {}), "name": grader, "version": grader_version(grader),
                         "timeouts": sum(bool(r.get("timed_out")) for r in rows), "timeout_s": timeout_s,
                         "regraded": True}
    atomic_write_json(path, summary)
    return summary


def regrade_benchmark(out: Path, grader: Any, grader_name: str, data_dir: Path | None,
                      timeout_s: float) -> dict[str, Any]:
    """Regrade one benchmark folder; returns {benchmark, samples, changed, became_correct, became_wrong, ...}."""
    from rlbench_cli.evaluation.grader import grader_version

    settings_path = out / "settings.json"
    if not settings_path.is_file():
        raise UserError("no settings.json: not an eval folder", where=str(out), fix="run `rlbench eval` first")
    settings = _read_json(settings_path)
    name = settings.get("benchmark") or out.name
    summary_path = out / "summary.json"
    files = sorted(p for p in out.iterdir() if p.name.startswith(_SAMPLE_PREFIX) and p.suffix == ".jsonl")
    per_file = {p: read_jsonl(p) for p in files}
    all_rows = [r for rows in per_file.values() for r in rows]
    if not all_rows:  # an eval that never produced a sample: nothing to regrade
        return {"benchmark": name, "samples": 0, "changed": 0, "became_correct": 0, "became_wrong": 0,
                "mean@k": None}
    # `--limit N` evals cover the first N problems: the summary says N, else the samples' problems do.
    n_problems = (_read_json(summary_path).get("data") or {}).get("n_problems") if summary_path.is_file() else None
    problems = _load_problems(name, settings, n_problems or len({str(r["problem_id"]) for r in all_rows}),
                              data_dir, out)
    unknown = sorted({str(r["problem_id"]) for r in all_rows} - set(problems))
    if unknown:
        raise UserError(f"samples of problems the benchmark does not have: {unknown[:5]}", where=str(out),
                        fix="pass --data-dir with the original benchmark files")
    from rlbench_cli.evaluation.grader import GradeItem

    items = [GradeItem.for_problem(problems[str(r["problem_id"])], r["completion"]) for r in all_rows]
    verdicts = grader.grade_many(items)
    to_right = to_wrong = 0
    for r, v in zip(all_rows, verdicts, strict=True):
        to_right += v.correct and not r.get("correct")
        to_wrong += (not v.correct) and bool(r.get("correct"))
        r.update(pred=v.pred, correct=bool(v.correct), timed_out=bool(v.timed_out))
    for path, rows in per_file.items():  # rows were updated in place
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(settings_path, {**settings, "grader": grader_name, "grader_version": grader_version(grader_name)})
    summary = _update_summary(summary_path, all_rows, problems, grader_name, timeout_s)
    return {"benchmark": name, "samples": len(all_rows), "changed": to_right + to_wrong,
            "became_correct": to_right, "became_wrong": to_wrong,
            "mean@k": (summary or {}).get("metrics", {}).get("mean@k")}


def regrade_run(target: str | None, *, results_dir: Path = Path("results"), grader: str = "rlbench",
                workers: int = 2, timeout_s: float = 5.0, data_dir: Path | None = None,
                label: str | None = None) -> list[dict[str, Any]]:
    """Regrade every benchmark folder of one run (or base-model results); returns one report per benchmark."""
    from rlbench_cli.evaluation.grader import GRADERS, Grader
    from rlbench_cli.evaluation.runner import resolve_target

    if grader not in GRADERS:
        raise UserError(f"unknown grader {grader!r}", where="--grader", fix=f"use one of {', '.join(GRADERS)}")
    tgt = resolve_target(target, Path(results_dir), label, verify_model=False)
    folders = sorted(p for p in (tgt.root / "eval").glob("*") if (p / "settings.json").is_file())
    if not folders:
        raise UserError("no evaluated benchmarks to regrade", where=str(tgt.root / "eval"),
                        fix="run `rlbench eval` on it first")
    from rlbench_cli.runlock import RunLock

    reports = []
    # Regrading rewrites samples and summaries: one writer per run folder, as for eval.
    with RunLock(tgt.root, "eval --regrade"), Grader(workers=workers, timeout_s=timeout_s, grader=grader) as pool:
        for out in folders:
            t0 = time.perf_counter()
            rep = regrade_benchmark(out, pool, grader, data_dir, timeout_s)
            reports.append({**rep, "seconds": round(time.perf_counter() - t0, 2)})
    return reports


def print_regrade(console: Any, reports: list[dict[str, Any]], grader: str) -> None:
    from rich.table import Table

    table = Table(title=f"rlbench eval --regrade (grader {grader})")
    for col in ("benchmark", "samples", "changed", "→ correct", "→ wrong", "mean@k", "seconds"):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for r in reports:
        mean = "-" if r["mean@k"] is None else f"{100 * float(r['mean@k']):.1f}"
        table.add_row(r["benchmark"], str(r["samples"]), str(r["changed"]), str(r["became_correct"]),
                      str(r["became_wrong"]), mean, f"{r['seconds']:.1f}")
    console.print(table)
