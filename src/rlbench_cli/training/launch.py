"""Multi-process launch through accelerate (optionally DeepSpeed ZeRO-2/3), and checks against the paper's settings.

`rlbench train RECIPE --launcher accelerate --num-processes N [--deepspeed zero2|zero3]` re-runs `rlbench train`
under `accelerate launch` with a DeepSpeed config shipped in rlbench_cli/configs/.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def launch_command(recipe_path: Path, overrides: list[str], *, num_processes: int, deepspeed: str | None,
                   resume: bool = False, overwrite: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if deepspeed:
        cfg = CONFIGS / f"deepspeed_{deepspeed}.yaml"
        cmd += ["--config_file", str(cfg)]
    else:
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if num_processes > 1:
            cmd += ["--multi_gpu"]
    cmd += ["-m", "rlbench_cli.cli", "train", str(recipe_path), *overrides]
    if resume:
        cmd.append("--resume")
    if overwrite:
        cmd.append("--overwrite")
    return cmd


def run_launch(cmd: list[str]) -> None:
    print("launching: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        raise UserError(f"the launched training exited with code {rc}", where="accelerate launch",
                        fix="see the run folder's train.log")


# REFERENCE.md §1, training settings of the paper (Qwen2.5-Math-7B).
PAPER_SETTINGS: dict[str, Any] = {
    "optim.lr": 1e-6, "optim.weight_decay": 0.01, "optim.lr_scheduler": "constant",
    "rollout.prompts_per_batch": 1024, "rollout.temperature": 1.0, "rollout.top_p": 1.0,
}


def reference_departures(recipe: Any) -> list[str]:
    """Where a recipe departs from the paper's settings (printed by --dry-run)."""
    notes: list[str] = []
    for dotted, expected in PAPER_SETTINGS.items():
        section, key = dotted.split(".")
        value = getattr(getattr(recipe, section), key)
        if value != expected:
            notes.append(f"{dotted} = {value} (paper: {expected})")
    n_expected = 1 if recipe.algorithm.name == "ppo" else 4
    if recipe.algorithm.name not in ("sft", "dpo") and recipe.rollout.n != n_expected:
        notes.append(f"rollout.n = {recipe.rollout.n} (paper: {n_expected})")
    mini = recipe.optim.mini_batch_prompts or recipe.rollout.prompts_per_batch
    if recipe.algorithm.name in ("raft", "raft_pp") and recipe.steps_per_rollout == 1:
        notes.append(f"one optimizer step per rollout (mini_batch_prompts = {mini}): RAFT and RAFT++ are then "
                     "identical; the paper takes 2-4 off-policy steps per rollout")
    return notes
