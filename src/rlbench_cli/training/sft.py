"""The SFT runner: TRL's SFTTrainer on (prompt, reference solution) pairs, loss on the solution tokens only.

prompt = the recipe's rendered prompt (`build_prompt_dataset`, the same string the evaluation uses); completion =
" " + solution (leading whitespace of the solution collapsed to that one space); TRL appends EOS. One optimizer
step sees `optim.mini_batch_prompts or rollout.prompts_per_batch` examples (`optim.micro_batch_size` per forward
pass and device, the rest by gradient accumulation). Steps: `optim.max_steps`, else `optim.epochs` passes over the
rows. metrics.jsonl: loss, lr, grad_norm, wall_time, samples (examples seen); the other keys are null.

Run: `rlbench train recipes/tiny/sft.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlbench_cli.config import Recipe
from rlbench_cli.training.batching import sft_batching
from rlbench_cli.training.checkpoints import fit
from rlbench_cli.training.context import RunContext, trainer_args, world_size
from rlbench_cli.training.policy import load_policy, peft_config, save_final_model


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

    model, tokenizer = load_policy(model_path, recipe)
    dataset = build_sft_dataset(rows, recipe, tokenizer)
    batching = sft_batching(recipe, len(rows), world_size())
    # The Trainer seeds at construction; nothing random may run between here and train().
    trainer = SFTTrainer(model=model, args=sft_config(recipe, run, batching), train_dataset=dataset,
                         processing_class=tokenizer, peft_config=peft_config(recipe))
    per_step = batching["examples_per_step"]
    fit(trainer, run, console, batching["max_steps"], resume=resume,
        rollout_stats=lambda: {"samples": trainer.state.global_step * per_step})
    return save_final_model(trainer, tokenizer, run, model_path)
