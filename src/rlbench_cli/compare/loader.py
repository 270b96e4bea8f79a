"""Read a results folder for `rlbench compare`: run manifests, eval summaries and training metrics.

Layout: `<results_dir>/<run>/manifest.json`, `<run>/metrics.jsonl`, `<run>/eval/<benchmark>/summary.json`.
A folder that is itself a run (has manifest.json) is accepted too.

Nothing here raises on a bad run: incomplete, failed or corrupt run folders are skipped and one warning line
per problem is returned, so compare can always show what is usable. A corrupt or unfinished eval summary only
drops that one benchmark of the run (its cell shows "–").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlbench_cli.evaluation.grader.version import grader_name_of
from rlbench_cli.records import read_jsonl

# Settings that change what a score means; runs differing in any of them must not share a table column.
SETTING_KEYS: tuple[str, ...] = ("k", "temperature", "top_p", "max_new_tokens", "prompt_template")
CANONICAL_BENCHMARKS: tuple[str, ...] = (
    "math500",
    "minerva_math",
    "olympiadbench",
    "testbed_easy",
    "testbed_medium",
    "testbed_hard",
    "testbed_ops6",
)


@dataclass
class EvalResult:
    """One run's summary for one benchmark."""

    benchmark: str
    display_name: str
    signature: tuple[tuple[str, Any], ...]  # the settings that must match to share a column
    metrics: dict[str, Any]
    per_problem: list[dict[str, Any]]
    path: Path

    def problem_scores(self, metric: str) -> dict[str, float] | None:
        """Per-problem score by problem id for `metric`, or None if per-problem data cannot give it."""
        out: dict[str, float] = {}
        for i, p in enumerate(self.per_problem):
            pid = str(p.get("id", i))
            n, c = p.get("n"), p.get("n_correct")
            if metric in ("mean@k", "pass@1"):
                if not n or c is None:
                    return None
                out[pid] = c / n
            elif metric == "pass@k":
                if c is None:
                    return None
                out[pid] = 1.0 if c > 0 else 0.0
            elif metric == "maj@k":
                if p.get("maj_correct") is None:
                    return None
                out[pid] = 1.0 if p["maj_correct"] else 0.0
            else:
                return None
        return out or None


@dataclass
class Run:
    """One completed run folder (training run or base model)."""

    path: Path
    name: str
    kind: str
    recipe_name: str
    label: str
    algorithm: str | None
    seed: int | None
    wall_time_s: float | None
    manifest: dict[str, Any]
    evals: dict[str, EvalResult] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)


def benchmark_sort_key(benchmark: str) -> tuple[int, str]:
    """Canonical benchmarks first in paper order, unknown ones after, alphabetically."""
    if benchmark in CANONICAL_BENCHMARKS:
        return (CANONICAL_BENCHMARKS.index(benchmark), "")
    return (len(CANONICAL_BENCHMARKS), benchmark)


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"unreadable ({type(e).__name__}: {e})"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    return obj, None


def read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None), or (None, why) when the file is missing, unreadable or not a JSON object."""
    return _read_json(path)


def _signature(summary: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    settings = summary.get("settings") or {}
    data = summary.get("data") or {}
    grader = summary.get("grader") or {}
    sig = [(k, settings.get(k)) for k in SETTING_KEYS]
    sig.append(("data", data.get("sha256")))
    sig.append(("grader", grader.get("version")))
    sig.append(("grader_name", grader_name_of(grader)))  # two graders never share a column
    return tuple(sig)


def load_eval(path: Path, metric: str) -> tuple[EvalResult | None, str | None]:
    """Parse one summary.json; returns (result, None) or (None, reason)."""
    summary, err = _read_json(path)
    if summary is None:
        return None, f"summary.json {err}"
    status = summary.get("status", "completed")
    if status != "completed":
        return None, f"eval status is {status!r}, not 'completed'"
    metrics = summary.get("metrics")
    value = metrics.get(metric) if isinstance(metrics, dict) else None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None, f"summary.json has no finite numeric metrics[{metric!r}]"
    per_problem = summary.get("per_problem") or []
    if not isinstance(per_problem, list) or not all(isinstance(p, dict) for p in per_problem):
        return None, "summary.json per_problem is not a list of objects"
    for i, p in enumerate(per_problem):
        for key in ("n", "n_correct"):  # counts feed the paired bootstrap: a string there is a corrupt file
            v = p.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                return None, f"summary.json per_problem[{i}].{key} is {v!r}, not a count"
    bench = str(summary.get("benchmark") or path.parent.name)
    return EvalResult(
        benchmark=bench,
        display_name=str(summary.get("display_name") or bench),
        signature=_signature(summary),
        metrics=metrics,
        per_problem=per_problem,
        path=path,
    ), None


def load_run(run_dir: Path, metric: str, warnings: list[str]) -> Run | None:
    """Load one run folder, appending one warning per skipped run or benchmark."""
    manifest, err = _read_json(run_dir / "manifest.json")
    if manifest is None:
        warnings.append(f"skipped {run_dir}: manifest.json {err}")
        return None
    status = manifest.get("status")
    if status != "completed":
        warnings.append(f"skipped {run_dir}: status is {status!r}, not 'completed'")
        return None
    kind = str(manifest.get("kind") or "train")
    name = str(manifest.get("name") or run_dir.name)
    recipe = str(manifest.get("recipe_name") or name)
    label = str(manifest.get("label") or ("Base" if kind == "base" else recipe))
    seed = manifest.get("seed")
    wall = manifest.get("wall_time_s")
    run = Run(
        path=run_dir,
        name=name,
        kind=kind,
        recipe_name=recipe,
        label=label,
        algorithm=manifest.get("algorithm"),
        seed=seed if isinstance(seed, int) else None,
        wall_time_s=float(wall) if isinstance(wall, int | float) else None,
        manifest=manifest,
    )
    eval_dir = run_dir / "eval"
    if eval_dir.is_dir():
        for bench_dir in sorted(p for p in eval_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            result, why = load_eval(bench_dir / "summary.json", metric)
            if result is None:
                warnings.append(f"{run_dir.name}: ignored eval/{bench_dir.name}: {why}")
            elif result.benchmark in run.evals:
                kept = run.evals[result.benchmark].path.parent.name
                warnings.append(
                    f"{run_dir.name}: ignored eval/{bench_dir.name}: benchmark {result.benchmark!r} "
                    f"already read from eval/{kept}"
                )
            else:
                run.evals[result.benchmark] = result
    metrics_path = run_dir / "metrics.jsonl"
    try:
        run.metrics = [r for r in read_jsonl(metrics_path) if isinstance(r, dict)]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        warnings.append(f"{run_dir.name}: ignored metrics.jsonl ({type(e).__name__}: {e})")
    return run


def load_runs(results_dir: Path, metric: str = "mean@k") -> tuple[list[Run], list[str]]:
    """All completed runs under `results_dir` (sorted by folder name) and warnings for what was skipped."""
    results_dir = Path(results_dir)
    warnings: list[str] = []
    if (results_dir / "manifest.json").exists():
        candidates = [results_dir]
    elif results_dir.is_dir():
        candidates = sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    else:
        return [], warnings
    runs: list[Run] = []
    for d in candidates:
        # Folders that do not look like runs at all (e.g. a plots folder) are ignored silently.
        if (
            not (d / "manifest.json").exists()
            and not (d / "eval").is_dir()
            and not (d / "metrics.jsonl").exists()
        ):
            continue
        run = load_run(d, metric, warnings)
        if run is not None:
            runs.append(run)
    return runs, warnings
