"""Builders of small synthetic results folders for the compare tests (plus checks that the builders are sane).

`make_run` writes a run folder exactly in the layout `rlbench compare` reads: manifest.json, metrics.jsonl and
eval/<benchmark>/summary.json with per-problem counts; summary metrics are computed from those counts here so
the tests can derive expected numbers by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

DISPLAY = {
    "math500": "MATH500",
    "minerva_math": "Minerva Math",
    "olympiadbench": "OlympiadBench",
    "testbed_easy": "Testbed easy",
}


def summary_for(bench: str, n_correct: list[int], k: int = 4, **settings: Any) -> dict[str, Any]:
    """A summary.json dict for per-problem correct counts out of k (problem ids p0, p1, …)."""
    fr = [c / k for c in n_correct]
    n = len(fr)
    mean = sum(fr) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in fr) / (n - 1) / n) if n > 1 else 0.0
    data_sha = settings.pop("data_sha256", f"sha-{bench}")
    grader = settings.pop("grader_version", "rlbench-grader/1+math-verify-0.9.0")
    s = {
        "k": k,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_new_tokens": 4096,
        "prompt_template": "paper",
        "backend": "hf",
        "seed": 0,
    }
    s.update(settings)
    return {
        "benchmark": bench,
        "display_name": DISPLAY.get(bench, bench),
        "status": "completed",
        "settings": s,
        "data": {"source": f"/data/{bench}.jsonl", "sha256": data_sha, "n_problems": n},
        "grader": {"version": grader, "timeouts": 0},
        "metrics": {
            "mean@k": mean,
            "mean@k_se": se,
            "pass@k": sum(c > 0 for c in n_correct) / n,
            "pass@1": mean,
            "maj@k": sum(c * 2 > k for c in n_correct) / n,
            "k": k,
        },
        "per_problem": [
            {"id": f"p{i}", "n": k, "n_correct": c, "maj_correct": c * 2 > k} for i, c in enumerate(n_correct)
        ],
    }


def make_run(
    root: Path,
    name: str,
    *,
    recipe: str,
    label: str,
    algorithm: str | None = None,
    seed: int = 0,
    kind: str = "train",
    status: str = "completed",
    evals: dict[str, list[int]] | None = None,
    k: int = 4,
    metrics: list[dict[str, Any]] | None = None,
    wall_time_s: float | None = 100.0,
    settings: dict[str, dict[str, Any]] | None = None,
) -> Path:
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    manifest = {
        "kind": kind,
        "name": name,
        "recipe_name": recipe,
        "label": label,
        "algorithm": algorithm,
        "seed": seed,
        "status": status,
        "wall_time_s": wall_time_s,
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    for bench, counts in (evals or {}).items():
        d = run / "eval" / bench
        d.mkdir(parents=True, exist_ok=True)
        summ = summary_for(bench, counts, k=k, **dict((settings or {}).get(bench, {})))
        (d / "summary.json").write_text(json.dumps(summ))
    if metrics is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return run


def curve(n_steps: int, offset: float, *, samples_per_step: int = 32) -> list[dict[str, Any]]:
    """A training log whose values depend linearly on the step (offset separates seeds/recipes)."""
    return [
        {
            "step": s,
            "samples": s * samples_per_step,
            "gen_tokens": s * 1000,
            "reward_mean": 0.1 * s + offset,
            "accuracy": 0.05 * s + offset,
            "entropy": 1.0 - 0.1 * s + offset,
            "kl": 0.01 * s,
            "response_len": 50 + s,
            "kept_frac": 0.5,
            "loss": 1.0,
            "lr": 1e-6,
        }
        for s in range(1, n_steps + 1)
    ]


def standard_results(root: Path) -> Path:
    """Base (1 seed), GRPO (3 seeds), RAFT (1 seed, no minerva eval) on two benchmarks of 6 problems, k=4."""
    make_run(
        root,
        "base-tiny",
        recipe="base-tiny",
        label="Base",
        kind="base",
        wall_time_s=None,
        evals={"math500": [0, 1, 0, 2, 1, 0], "minerva_math": [0, 0, 1, 0, 1, 0]},
    )
    grpo = [
        ([4, 3, 2, 4, 3, 1], [2, 1, 3, 2, 2, 1]),
        ([4, 4, 2, 3, 3, 2], [2, 2, 3, 1, 2, 1]),
        ([3, 4, 3, 4, 2, 2], [1, 2, 3, 2, 2, 2]),
    ]
    for seed, (m, mm) in enumerate(grpo):
        make_run(
            root,
            f"tiny-grpo-s{seed}",
            recipe="tiny-grpo",
            label="GRPO",
            algorithm="grpo",
            seed=seed,
            evals={"math500": m, "minerva_math": mm},
            metrics=curve(5, 0.02 * seed),
            wall_time_s=100 + seed,
        )
    make_run(
        root,
        "tiny-raft-s0",
        recipe="tiny-raft",
        label="RAFT",
        algorithm="raft",
        evals={"math500": [4, 4, 4, 3, 0, 1]},
        metrics=curve(5, 0.1),
        wall_time_s=80,
    )
    return root


def test_summary_for_matches_hand_values() -> None:
    s = summary_for("math500", [0, 4, 2, 2], k=4)
    assert s["metrics"]["mean@k"] == 0.5
    # per-problem fractions 0, 1, .5, .5: sd = sqrt(0.5/3), se = sd / 2
    assert math.isclose(s["metrics"]["mean@k_se"], math.sqrt(0.5 / 3) / 2)
    assert s["metrics"]["pass@k"] == 0.75


def test_standard_results_layout(tmp_path: Path) -> None:
    root = standard_results(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == [
        "base-tiny",
        "tiny-grpo-s0",
        "tiny-grpo-s1",
        "tiny-grpo-s2",
        "tiny-raft-s0",
    ]
    assert (root / "tiny-grpo-s1" / "eval" / "minerva_math" / "summary.json").exists()
