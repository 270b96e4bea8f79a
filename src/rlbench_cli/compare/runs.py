"""`rlbench runs [DIR]`: one line per run folder (training run, base model or external results), any status.

Per run: name, algorithm, seed, status, steps done / planned, the benchmarks with a completed eval summary, and
their Average (mean@k over the benchmarks listed on that line). Filters: status and recipe name (shell
wildcards allowed). `--json` prints the same as a list of objects. Unlike `rlbench compare`, unfinished and
broken runs are listed too, with what is wrong, since finding them is the point.

    rlbench runs results/ --status running,interrupted
    rlbench runs results/ --recipe 'tiny-*' --json
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlbench_cli.compare.loader import benchmark_sort_key, load_eval, read_json
from rlbench_cli.errors import UserError
from rlbench_cli.records import read_jsonl

STATUSES = ("completed", "running", "interrupted", "failed", "broken")


@dataclass
class RunLine:
    name: str
    path: str
    kind: str  # train | base | external | unknown
    recipe_name: str | None
    algorithm: str | None
    seed: int | None
    status: str
    steps_done: int | None
    steps_planned: int | None
    benchmarks: list[str] = field(default_factory=list)
    average: float | None = None  # fraction; mean@k over `benchmarks`
    problem: str | None = None  # why a run is broken, or the error it ended with


def _steps_done(run_dir: Path, manifest: dict[str, Any]) -> int | None:
    if isinstance(manifest.get("steps"), int):
        return int(manifest["steps"])
    try:
        rows = read_jsonl(run_dir / "metrics.jsonl")
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    steps = [r["step"] for r in rows if isinstance(r, dict) and isinstance(r.get("step"), int)]
    return max(steps) if steps else (0 if manifest.get("kind", "train") == "train" else None)


def _steps_planned(run_dir: Path, manifest: dict[str, Any]) -> int | None:
    """The optimizer steps the run's resolved recipe plans (optim.max_steps, else epochs × its data)."""
    from rlbench_cli.config import load_recipe
    from rlbench_cli.training.batching import plan_for

    if not (run_dir / "recipe.yaml").is_file():
        return None
    try:
        recipe = load_recipe(run_dir / "recipe.yaml")
        rows = (manifest.get("data") or {}).get("rows")
        planned = plan_for(recipe, 1, rows if isinstance(rows, int) else None).get("max_steps")
    except (UserError, OSError, ValueError, TypeError):
        return None  # an older or edited recipe: the count is unknown, not an error of this listing
    return int(planned) if isinstance(planned, int) else None


def _evals(run_dir: Path) -> tuple[list[str], float | None]:
    values: dict[str, float] = {}
    eval_dir = run_dir / "eval"
    if eval_dir.is_dir():
        for bench_dir in sorted(p for p in eval_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            result, _why = load_eval(bench_dir / "summary.json", "mean@k")
            if result is not None and result.benchmark not in values:
                values[result.benchmark] = float(result.metrics["mean@k"])
    names = sorted(values, key=benchmark_sort_key)
    return names, (sum(values.values()) / len(values) if values else None)


def describe_run(run_dir: Path) -> RunLine:
    """One run folder as a RunLine; never raises on a broken folder (status 'broken', with the problem)."""
    manifest, err = read_json(run_dir / "manifest.json")
    benchmarks, average = _evals(run_dir)
    if manifest is None:
        return RunLine(run_dir.name, str(run_dir), "unknown", None, None, None, "broken", None, None, benchmarks,
                       average, f"manifest.json {err}")
    kind = str(manifest.get("kind") or "train")
    seed = manifest.get("seed")
    algorithm = manifest.get("algorithm") or (kind if kind in ("base", "external") else None)
    status = str(manifest.get("status") or "unknown")
    error = manifest.get("error")
    return RunLine(
        name=str(manifest.get("name") or run_dir.name), path=str(run_dir), kind=kind,
        recipe_name=str(manifest.get("recipe_name") or manifest.get("name") or run_dir.name),
        algorithm=str(algorithm) if algorithm else None, seed=seed if isinstance(seed, int) else None,
        status=status, steps_done=_steps_done(run_dir, manifest) if kind == "train" else None,
        steps_planned=_steps_planned(run_dir, manifest) if kind == "train" else None,
        benchmarks=benchmarks, average=average, problem=str(error) if error and status != "completed" else None,
    )


def list_runs(results_dir: Path, *, statuses: list[str] | None = None, recipe: str | None = None) -> list[RunLine]:
    """Every run folder under `results_dir` (or `results_dir` itself if it is one), sorted by name, filtered."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UserError("results folder not found", where=str(results_dir),
                        fix="pass the folder that `rlbench train` / `rlbench eval` wrote runs into")
    if (results_dir / "manifest.json").exists():
        folders = [results_dir]
    else:
        folders = sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and ((p / "manifest.json").exists() or (p / "eval").is_dir()))
    lines = [describe_run(p) for p in folders]
    known = list(STATUSES) + sorted({r.status for r in lines} - set(STATUSES))  # a status a newer rlbench wrote
    for s in statuses or []:
        if s not in known:
            raise UserError(f"unknown status {s!r}", where="--status", fix=f"use any of: {', '.join(known)}")
    if statuses:
        lines = [r for r in lines if r.status in statuses]
    if recipe:
        lines = [r for r in lines if fnmatch.fnmatchcase(r.recipe_name or "", recipe)
                 or fnmatch.fnmatchcase(r.name, recipe)]
    return lines


def _steps(r: RunLine) -> str:
    if r.steps_done is None and r.steps_planned is None:
        return "–"
    return f"{'?' if r.steps_done is None else r.steps_done}/{'?' if r.steps_planned is None else r.steps_planned}"


def render_lines(lines: list[RunLine]) -> str:
    """Aligned plain text, one line per run, never truncated or wrapped (wide cells widen their column)."""
    header = ("name", "algorithm", "seed", "status", "steps", "evaluated", "average")
    table = [header]
    for r in lines:
        avg = "–" if r.average is None or not math.isfinite(r.average) else f"{100 * r.average:.1f}"
        status = r.status + (f" ({r.problem})" if r.status == "broken" and r.problem else "")
        table.append((r.name, r.algorithm or "–", "–" if r.seed is None else str(r.seed), status, _steps(r),
                      ",".join(r.benchmarks) or "–", avg))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
           for row in table]
    return "\n".join(out) + "\n"


def to_json(lines: list[RunLine]) -> list[dict[str, Any]]:
    return [{**asdict(r), "average_metric": "mean@k"} for r in lines]
