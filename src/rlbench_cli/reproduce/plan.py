"""The runs a set of findings needs, named by a hash of what determines them, so they are trained once and cached.

A run is (arm, seed): the resolved recipe (recipe file + overrides + seed) for a training arm, or the testbed
base model plus the eval settings for a `base` arm. Its folder is `<output>/runs/<name>-<hash>/`; a completed
folder is reused, so a rerun or a larger --seeds trains only what is missing. Two findings that share an arm
(e.g. tiny/grpo.yaml seed 0) share the run.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError
from rlbench_cli.records import sha256_text
from rlbench_cli.reproduce.spec import Arm, Finding

RECIPES_DIR = Path(__file__).resolve().parents[3] / "recipes"


@dataclass(frozen=True)
class RunSpec:
    """One training run (or one base-model evaluation) with its cache key."""

    key: str  # folder name under <output>/runs/
    recipe_path: str  # recipe file, or "base"
    overrides: tuple[str, ...]
    seed: int

    @property
    def is_base(self) -> bool:
        return self.recipe_path == "base"

    @property
    def arm(self) -> Arm:
        return Arm(recipe=self.recipe_path, overrides=list(self.overrides))


def _recipe_file(recipe: str) -> Path:
    path = Path(recipe)
    for candidate in (path, RECIPES_DIR / path):
        if candidate.is_file():
            return candidate
    raise UserError(f"recipe {recipe!r} not found", where="finding arms",
                    fix=f"give a path relative to {RECIPES_DIR} (e.g. tiny/grpo.yaml)")


_EXECUTION_KEYS = ("torch_threads",)  # overrides that change how a run executes, not what it trains


def arm_run_name(recipe_name: str, overrides: Sequence[str]) -> str:
    """'tiny-grpo' + ['algorithm.clip_high=0.28'] -> 'tiny-grpo.clip_high_0.28' (recipe-name characters only)."""
    parts = [re.sub(r"[^A-Za-z0-9_.\-]", "_", o.split("=", 1)[0].rsplit(".", 1)[-1] + "_" + o.split("=", 1)[-1])
             for o in overrides if o.split("=", 1)[0] not in _EXECUTION_KEYS and not o.startswith("output.")]
    return ".".join([recipe_name, *parts])


def load_arm_recipe(arm: Arm, seed: int, runs_dir: Path | None = None, key: str | None = None) -> Any:
    """The arm's Recipe at `seed` (output folder and run name set when given)."""
    from rlbench_cli.config import load_recipe

    extra = [*arm.overrides, f"seed={seed}"]
    recipe = load_recipe(_recipe_file(arm.recipe), extra)
    if arm_run_name(recipe.name, arm.overrides) != recipe.name:
        # an arm with overrides is its own row in `rlbench compare`, not extra seeds of the plain recipe
        extra.append(f"name={arm_run_name(recipe.name, arm.overrides)}")
    if runs_dir is not None and key is not None:
        extra += [f"output.dir={runs_dir}", f"output.run_name={key}"]
    return load_recipe(_recipe_file(arm.recipe), extra)


def _eval_section(recipe: Any) -> dict[str, Any]:
    e = recipe.eval
    return {"benchmarks": list(e.benchmarks), "k": e.k, "temperature": e.temperature, "top_p": e.top_p,
            "max_new_tokens": e.max_new_tokens, "limit": e.limit}


def run_spec(arm: Arm, seed: int, eval_like: Any | None = None) -> RunSpec:
    """Cache key: sha256 of the resolved recipe (minus where it is written) or of base + eval settings."""
    from rlbench_cli.testbed.model import config_hash, default_config

    if arm.recipe == "base":
        if eval_like is None:
            raise UserError("a 'base' arm needs a training arm to take eval settings from", where="finding arms")
        payload = {"base": config_hash(default_config()), "eval": _eval_section(eval_like), "seed": seed}
        name = "base"
    else:
        recipe = load_arm_recipe(arm, seed)
        data = recipe.model_dump(mode="json")
        data.pop("output", None)
        payload = {"recipe": data}
        name = recipe.name
    digest = sha256_text(json.dumps(payload, sort_keys=True))[:12]
    return RunSpec(f"{name}-s{seed}-{digest}", arm.recipe, tuple(arm.overrides), seed)


def plan_runs(findings: list[Finding], seeds: int | None) -> dict[str, dict[str, list[RunSpec]]]:
    """finding id -> arm name -> one RunSpec per seed (seeds 0..N-1; N = --seeds or the finding's own)."""
    out: dict[str, dict[str, list[RunSpec]]] = {}
    for f in findings:
        n = seeds or f.seeds
        train_arm = next((a for a in f.arms.values() if a.recipe != "base"), None)
        out[f.id] = {}
        for name, arm in f.arms.items():
            specs = []
            for s in range(n):
                like = load_arm_recipe(train_arm, s) if (arm.recipe == "base" and train_arm) else None
                specs.append(run_spec(arm, s, like))
            out[f.id][name] = specs
    return out


def is_done(runs_dir: Path, spec: RunSpec, needs_eval: bool) -> bool:
    folder = runs_dir / spec.key
    marker = folder / "reproduce.json"
    if not marker.exists():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(info.get("trained")) and (not needs_eval or bool(info.get("evaluated")))


def execute(runs_dir: Path, spec: RunSpec, needs_eval: bool, *, eval_like: Any | None, console: Any = None) -> dict:
    """Train (unless base) and evaluate (if needed) one run; resumable; records times in reproduce.json."""
    from rlbench_cli.records import atomic_write_json

    folder = runs_dir / spec.key
    marker = folder / "reproduce.json"
    info: dict[str, Any] = {}
    if marker.exists():
        try:
            info = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
    info.update({"key": spec.key, "recipe": spec.recipe_path, "overrides": list(spec.overrides), "seed": spec.seed})
    if spec.is_base:
        info["trained"] = True
        target, recipe = "testbed", eval_like
        folder.mkdir(parents=True, exist_ok=True)
    else:
        recipe = load_arm_recipe(spec.arm, spec.seed, runs_dir, spec.key)
        target = str(folder)
        manifest = folder / "manifest.json"
        if not info.get("trained") and manifest.exists():
            try:  # trained, but killed before the marker was written
                info["trained"] = json.loads(manifest.read_text()).get("status") == "completed"
            except (OSError, json.JSONDecodeError):
                pass
        if not info.get("trained"):
            from rlbench_cli.training.run import run_training

            t0, c0 = time.perf_counter(), time.process_time()
            resume = (folder / "manifest.json").exists()
            run_training(recipe, command=f"rlbench reproduce ({spec.key})", resume=resume, overwrite=False,
                         console=console)
            info["trained"], info["train_wall_s"] = True, round(time.perf_counter() - t0, 1)
            info["train_cpu_s"] = round(time.process_time() - c0, 1)  # all threads; wall on a busy machine lies
            atomic_write_json(marker, info)
    if needs_eval and not info.get("evaluated"):
        from rlbench_cli.evaluation.runner import run_eval

        e = recipe.eval
        t0 = time.perf_counter()
        results_dir = folder if spec.is_base else runs_dir
        run_eval(target, results_dir=results_dir, benchmarks=list(e.benchmarks), k=e.k, temperature=e.temperature,
                 top_p=e.top_p, max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, seed=spec.seed,
                 limit=e.limit, grader_workers=0, console=console)
        info["evaluated"], info["eval_wall_s"] = True, round(time.perf_counter() - t0, 1)
    atomic_write_json(marker, info)
    return info
