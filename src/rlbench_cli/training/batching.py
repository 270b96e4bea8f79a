"""Batch arithmetic of every runner, pure and light (no torch): what `rlbench train --dry-run` prints and what each
runner configures TRL with.

RL runners (rl, ppo) share `plan`; SFT has `sft_batching`; iterative DPO `dpo_batching` / `dpo_plan` with its
iteration chunks. `plan_for` picks by the algorithm's runner (config.ALGORITHM_DEFAULTS).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlbench_cli.config import ALGORITHM_DEFAULTS, Recipe
from rlbench_cli.errors import UserError


def gradient_accumulation(recipe: Recipe, items_per_step: int, what: str, num_processes: int = 1) -> int:
    """Micro-batches per optimizer step, so one step sees `items_per_step` items (responses, examples or pairs)."""
    micro = recipe.optim.micro_batch_size
    if items_per_step % (micro * num_processes):
        raise UserError(
            f"{what} per optimizer step ({items_per_step}) is not divisible by micro_batch_size × processes "
            f"({micro} × {num_processes})", where="optim.micro_batch_size",
            fix="change optim.micro_batch_size, optim.mini_batch_prompts or the number of processes",
        )
    return items_per_step // (micro * num_processes)


def plan(recipe: Recipe, num_processes: int = 1, n_prompts: int | None = None) -> dict[str, Any]:
    """RL batch arithmetic, per device, exactly as the RL runners configure TRL."""
    r, o = recipe.rollout, recipe.optim
    mini_prompts = o.mini_batch_prompts or r.prompts_per_batch
    grad_accum = gradient_accumulation(recipe, mini_prompts * r.n, "responses", num_processes)
    steps_per_rollout = recipe.steps_per_rollout
    out: dict[str, Any] = {
        "algorithm": recipe.algorithm.name,
        "prompts_per_rollout": r.prompts_per_batch,
        "responses_per_prompt": r.n,
        "responses_per_rollout": r.prompts_per_batch * r.n,
        "mini_batch_prompts": mini_prompts,
        "optimizer_steps_per_rollout": steps_per_rollout,
        "off_policy": steps_per_rollout > 1,
        "num_processes": num_processes,
        "micro_batch_size_per_device": o.micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "ppo_epochs": o.ppo_epochs,
        "trl_steps_per_generation": grad_accum * recipe.mini_batches_per_rollout,
    }
    if n_prompts is not None:
        rollouts_per_epoch = max(1, n_prompts // r.prompts_per_batch)
        out["train_prompts"] = n_prompts
        out["max_steps"] = o.max_steps or max(1, int(rollouts_per_epoch * o.epochs) * steps_per_rollout)
    else:
        out["max_steps"] = o.max_steps
    return out


def sft_batching(recipe: Recipe, n_rows: int, num_processes: int = 1) -> dict[str, int]:
    """SFT: examples per optimizer step, gradient accumulation and the number of optimizer steps."""
    o = recipe.optim
    per_step = o.mini_batch_prompts or recipe.rollout.prompts_per_batch
    return {"examples_per_step": per_step,
            "gradient_accumulation_steps": gradient_accumulation(recipe, per_step, "examples", num_processes),
            "max_steps": o.max_steps or max(1, math.floor(n_rows * o.epochs / per_step))}


def iteration_chunks(n_rows: int, iterations: int) -> list[range]:
    """Iterative DPO: row indices of each iteration, `iterations` consecutive chunks of n_rows // iterations."""
    size = n_rows // iterations
    if size < 1:
        raise UserError(f"{n_rows} training prompts cannot feed {iterations} DPO iterations",
                        where="algorithm.dpo_iterations",
                        fix="lower algorithm.dpo_iterations or use more prompts (data.max_prompts)")
    return [range(k * size, (k + 1) * size) for k in range(iterations)]


def steps_for_pairs(n_pairs: int, pairs_per_step: int) -> int:
    """Optimizer steps of one pass over n_pairs (the last step may be partial)."""
    return math.ceil(n_pairs / pairs_per_step)


def dpo_batching(recipe: Recipe, num_processes: int = 1) -> dict[str, int]:
    """Iterative DPO: pairs per optimizer step and gradient accumulation."""
    per_step = recipe.optim.mini_batch_prompts or recipe.rollout.prompts_per_batch
    return {"pairs_per_step": per_step,
            "gradient_accumulation_steps": gradient_accumulation(recipe, per_step, "pairs", num_processes)}


def dpo_plan(recipe: Recipe, n_prompts: int, num_processes: int = 1) -> dict[str, Any]:
    """Batch arithmetic of an iterative DPO run, for `rlbench train --dry-run`."""
    b = dpo_batching(recipe, num_processes)
    chunks = iteration_chunks(n_prompts, recipe.algorithm.dpo_iterations)
    bound = sum(steps_for_pairs(len(c), b["pairs_per_step"]) for c in chunks) * recipe.algorithm.dpo_epochs
    return {
        "algorithm": "dpo",
        "iterations": len(chunks),
        "epochs_per_iteration": recipe.algorithm.dpo_epochs,
        "prompts_per_iteration": len(chunks[0]),
        "responses_per_prompt": recipe.rollout.n,
        "responses_per_iteration": len(chunks[0]) * recipe.rollout.n,
        "pairs_per_optimizer_step": b["pairs_per_step"],
        "micro_batch_pairs_per_device": recipe.optim.micro_batch_size,
        "gradient_accumulation_steps": b["gradient_accumulation_steps"],
        "max_steps": min(bound, recipe.optim.max_steps) if recipe.optim.max_steps else bound,
        "max_steps_note": "upper bound: every prompt yields a pair",
    }


def count_rows(recipe: Recipe) -> int | None:
    """Training rows the run will see, without loading a model (None for hub data: unknown until downloaded)."""
    d = recipe.data
    if d.source == "testbed":
        from rlbench_cli.testbed.versions import generate_split

        n = len(generate_split(d.split))
    elif d.source == "jsonl" and d.path and Path(d.path).is_file():
        with open(d.path, "rb") as f:
            n = sum(1 for line in f if line.strip())
    else:
        return None
    return min(n, d.max_prompts) if d.max_prompts else n


def plan_for(recipe: Recipe, num_processes: int = 1, n_rows: int | None = None) -> dict[str, Any]:
    """The batch arithmetic of whichever runner the algorithm uses."""
    runner = ALGORITHM_DEFAULTS[recipe.algorithm.name]["runner"]
    if runner == "sft":
        return {"algorithm": "sft", **sft_batching(recipe, n_rows or 1, num_processes),
                **({"train_rows": n_rows} if n_rows else {})}
    if runner == "dpo":
        if n_rows:
            return dpo_plan(recipe, n_rows, num_processes)
        return {"algorithm": "dpo", **dpo_batching(recipe, num_processes)}
    return plan(recipe, num_processes, n_prompts=n_rows)
