"""The SFT runner: TRL's SFTTrainer on (prompt, reference solution) pairs, loss on the solution tokens only.

prompt = the recipe's rendered prompt (`build_prompt_dataset`, the same string the evaluation uses); completion =
" " + solution (leading whitespace of the solution collapsed to that one space); TRL appends EOS. One optimizer
step sees `optim.mini_batch_prompts or rollout.prompts_per_batch` examples (`optim.micro_batch_size` per forward
pass and device, the rest by gradient accumulation). Steps: `optim.max_steps`, else `optim.epochs` passes over the
rows. metrics.jsonl: loss, lr, grad_norm, wall_time, samples (examples seen); the other keys are null.

Run: `rlbench train recipes/tiny/sft.yaml`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from rlbench_cli.config import Recipe
from rlbench_cli.training.run import RunContext, gradient_accumulation


def sft_batching(recipe: Recipe, n_rows: int, num_processes: int = 1) -> dict[str, int]:
    """Examples per optimizer step, gradient accumulation and the number of optimizer steps (pure)."""
    o = recipe.optim
    per_step = o.mini_batch_prompts or recipe.rollout.prompts_per_batch
    return {"examples_per_step": per_step,
            "gradient_accumulation_steps": gradient_accumulation(recipe, per_step, "examples", num_processes),
            "max_steps": o.max_steps or max(1, math.floor(n_rows * o.epochs / per_step))}


def build_sft_dataset(rows: list[dict[str, str]], recipe: Recipe, tokenizer: Any):
    """A prompt-completion datasets.Dataset (columns `prompt`, `completion`) in row order."""
    from datasets import Dataset

    from rlbench_cli.training.data import build_prompt_dataset

    prompts = build_prompt_dataset(rows, recipe, tokenizer)["prompt"]
    return Dataset.from_list([
        {"prompt": p, "completion": " " + r["solution"].lstrip()} for p, r in zip(prompts, rows, strict=True)
    ])


def sft_config(recipe: Recipe, run: RunContext, batching: dict[str, int]):
    """Translate a recipe into TRL's SFTConfig."""
    from trl import SFTConfig

    from rlbench_cli.training.run import trainer_args

    return SFTConfig(
        **trainer_args(recipe, run, batching["max_steps"]),
        gradient_accumulation_steps=batching["gradient_accumulation_steps"],
        completion_only_loss=True,
        max_length=None,
        packing=False,
        shuffle_dataset=False,  # load_rows already shuffled with the seed; the sampler reshuffles per epoch
        dataset_num_proc=None,
    )


def train_sft(recipe: Recipe, run: RunContext, console: Any, *, rows: list[dict[str, str]], model_path: str,
              resume: bool = False) -> Path:
    from trl import SFTTrainer

    from rlbench_cli import signals
    from rlbench_cli.training.callbacks import MetricsCallback, RichProgress, quiet_trainer
    from rlbench_cli.training.rl import _last_checkpoint, _truncate_metrics, load_policy, peft_config, save_final_model

    model, tokenizer = load_policy(model_path, recipe)
    dataset = build_sft_dataset(rows, recipe, tokenizer)
    num_processes = int(os.environ.get("WORLD_SIZE", "1"))  # PartialState() reports 1 under accelerate on CPU
    batching = sft_batching(recipe, len(rows), num_processes)
    # The Trainer seeds at construction; nothing random may run between here and train().
    trainer = SFTTrainer(model=model, args=sft_config(recipe, run, batching), train_dataset=dataset,
                         processing_class=tokenizer, peft_config=peft_config(recipe))
    per_step = batching["examples_per_step"]
    with RichProgress(console, batching["max_steps"], f"sft {run.dir.name}") as progress:
        trainer.add_callback(MetricsCallback(
            run.metrics_path, lambda: {"samples": trainer.state.global_step * per_step}, progress))
        checkpoint = _last_checkpoint(run) if resume else None
        if resume:
            _truncate_metrics(run, checkpoint)
        quiet_trainer(trainer)
        trainer.add_callback(signals.preempt_callback())  # SIGTERM: checkpoint at the next step, then stop
        with signals.on_sigterm(deferred=bool(recipe.output.checkpoint_every)):
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return save_final_model(trainer, tokenizer, run, model_path)
