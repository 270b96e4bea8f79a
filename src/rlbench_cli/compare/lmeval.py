"""`rlbench compare --format lm-eval`: the comparison in lm-evaluation-harness's results JSON shape.

lm-eval writes one results file per model (`<output_path>/<model_name_sanitized>/results_<date>.json`) with
`results` ({task: {"alias", "<metric>,<filter>", "<metric>_stderr,<filter>"}}), `group_subtasks`, `configs`,
`versions`, `n-shot`, `higher_is_better`, `n-samples` ({"original", "effective"}) and `config` (the run's
settings), plus model and time fields. Here every table row (recipe, seeds pooled) is one such document and
every table column one task; the filter is "none". Values are fractions, as lm-eval's. A row with several
seeds reports the mean over seeds and, as stderr, the standard error across seeds; one seed reports the
summary's standard error over problems where the summary has one ("N/A" otherwise, as lm-eval writes).
rlbench-only facts (runs, seeds, grader, data hash) sit under an extra `rlbench` key that lm-eval readers skip.

With --output DIR the documents are written in lm-eval's layout under DIR; with --output FILE.json, or without
--output, they are one JSON list.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from rlbench_cli.compare.model import Column, Comparison, Row
from rlbench_cli.compare.stats import standard_error

METRICS = ("mean@k", "pass@k", "maj@k", "pass@1")
FILTER = "none"


def sanitize_model_name(name: str) -> str:
    """lm-eval's folder name for a model (its utils.sanitize_model_name)."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def _task_name(col: Column) -> str:
    return col.key if col.key == col.benchmark else re.sub(r"[^A-Za-z0-9_.@=-]+", "_", col.key).strip("_")


def _runs_in(row: Row, col: Column) -> list[Any]:
    return [r for r in row.runs if col.benchmark in r.evals and dict(r.evals[col.benchmark].signature) == col.settings]


def _task(row: Row, col: Column) -> tuple[dict[str, Any], dict[str, Any], int] | None:
    runs = _runs_in(row, col)
    if not runs:
        return None
    bench = col.benchmark or ""
    task = _task_name(col)
    entry: dict[str, Any] = {"alias": task}
    for metric in METRICS:
        values = [r.evals[bench].metrics.get(metric) for r in runs]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            continue
        entry[f"{metric},{FILTER}"] = sum(values) / len(values)
        se = runs[0].evals[bench].metrics.get(f"{metric}_se") if len(runs) == 1 else standard_error(values)
        entry[f"{metric}_stderr,{FILTER}"] = se if isinstance(se, int | float) else "N/A"
    first = runs[0].evals[bench]
    summary_path = first.path
    settings = col.settings
    n_problems = len(first.per_problem) or None
    config = {
        "task": task,
        "dataset_path": bench,
        "dataset_sha256": settings.get("data"),
        "output_type": "generate_until",
        "repeats": settings.get("k"),
        "num_fewshot": 0,
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in METRICS],
        "generation_kwargs": {"temperature": settings.get("temperature"), "top_p": settings.get("top_p"),
                              "max_gen_toks": settings.get("max_new_tokens"),
                              "do_sample": bool(settings.get("temperature") or 0)},
        "prompt_template": settings.get("prompt_template"),
        "metadata": {"grader": settings.get("grader"), "summary": str(summary_path)},
    }
    return entry, config, n_problems or 0


def _evaluated_model(run: Any) -> str:
    """What was evaluated: a trained run's model/ (its manifest's `model` is the starting point), a base model's
    path or hub id, or an external run's completions file."""
    if run.kind == "train":
        return str(run.path / "model")
    if run.kind == "external":
        return str((run.manifest.get("source") or {}).get("path") or run.name)
    model = run.manifest.get("model")
    return str(model.get("path") if isinstance(model, dict) else model or run.name)


def row_document(comp: Comparison, row: Row, date: str) -> dict[str, Any] | None:
    """One lm-eval results document for a table row (None for published reference rows: no runs)."""
    if not row.runs:
        return None
    results: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    n_samples: dict[str, Any] = {}
    for col in comp.columns:
        if col.benchmark is None:
            continue
        got = _task(row, col)
        if got is None:
            continue
        entry, config, n = got
        results[config["task"]] = entry
        configs[config["task"]] = config
        n_samples[config["task"]] = {"original": n, "effective": n}
    if not results:
        return None
    tasks = sorted(results)
    first = row.runs[0]
    seeds = [r.seed for r in row.runs]
    settings = next(iter(configs.values()))["generation_kwargs"]
    model_path = _evaluated_model(first)
    return {
        "results": {t: results[t] for t in tasks},
        "group_subtasks": {t: [] for t in tasks},
        "configs": {t: configs[t] for t in tasks},
        "versions": {t: configs[t]["metadata"]["grader"] for t in tasks},
        "n-shot": dict.fromkeys(tasks, 0),
        "higher_is_better": {t: dict.fromkeys(METRICS, True) for t in tasks},
        "n-samples": {t: n_samples[t] for t in tasks},
        "config": {
            "model": "rlbench", "model_args": f"pretrained={model_path}", "batch_size": None,
            "batch_sizes": [], "device": None, "use_cache": None, "limit": None, "bootstrap_iters": 0,
            "gen_kwargs": ",".join(f"{k}={v}" for k, v in settings.items() if v is not None),
            "random_seed": seeds[0] if len(seeds) == 1 else None, "numpy_seed": None, "torch_seed": None,
            "fewshot_seed": None,
        },
        "git_hash": first.manifest.get("git_commit"),
        "date": date,
        "task_hashes": {},
        "model_source": "rlbench",
        "model_name": row.label,
        "model_name_sanitized": sanitize_model_name(row.label),
        "rlbench": {"recipe_name": row.recipe_name, "kind": row.kind, "algorithm": row.algorithm,
                    "runs": [r.name for r in row.runs], "seeds": seeds, "metric": comp.metric},
    }


def lm_eval_documents(comp: Comparison) -> list[dict[str, Any]]:
    date = datetime.now().isoformat(timespec="seconds")
    docs = [d for d in (row_document(comp, row, date) for row in comp.rows) if d is not None]
    seen: dict[str, int] = {}
    for doc in docs:  # two labels may sanitize alike; their folders must not overwrite each other
        name = doc["model_name_sanitized"]
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            doc["model_name_sanitized"] = f"{name}__{seen[name]}"
    return docs


def write_lm_eval(docs: list[dict[str, Any]], output: Path) -> list[Path]:
    """lm-eval's layout: <output>/<model_name_sanitized>/results_<date>.json, one per document.

    An output ending in .json instead gets the list of documents as one file.
    """
    import json

    from rlbench_cli.records import atomic_write_text

    if Path(output).suffix == ".json":
        atomic_write_text(output, json.dumps(docs, indent=2, default=str, ensure_ascii=False) + "\n")
        return [Path(output)]
    output_dir = Path(output)
    stamp = datetime.now().isoformat().replace(":", "-")
    paths = []
    for doc in docs:
        path = Path(output_dir) / doc["model_name_sanitized"] / f"results_{stamp}.json"
        atomic_write_text(path, json.dumps(doc, indent=2, default=str, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths
