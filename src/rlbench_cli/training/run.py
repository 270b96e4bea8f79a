"""`rlbench train`, the top of training/: create the run folder, load data and model, dispatch to the runner.

Layers import downward only:
    run.py (this: dispatch)
      └ runners: rl.py (RAFT … GPG on TRL's GRPOTrainer), ppo.py (rl + critic), sft.py, dpo.py (iterative DPO)
          └ policy.py (load / LoRA / save), checkpoints.py (resume, `fit`), callbacks.py (metrics.jsonl, progress)
              └ context.py (RunContext, manifest, METRIC_KEYS, trainer_args), batching.py (pure batch arithmetic),
                resampling.py (dynamic sampling), data.py, rewards.py, launch.py
The math (advantages, losses, pairs) is pure functions in rlbench_cli.algorithms. Which runner trains an algorithm,
its label and its default settings are its entry in config.ALGORITHM_DEFAULTS; RUNNERS maps runner name -> function.
A new algorithm that is a set of settings on an existing runner needs only that entry (and its math in algorithms/).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlbench_cli.config import ALGORITHM_DEFAULTS, Recipe, recipe_to_yaml
from rlbench_cli.records import atomic_write_text, read_jsonl, sha256_dir
from rlbench_cli.training.context import (
    RunContext,
    check_writable,
    is_main_process,
    prepare_run_folder,
    resolve_model_path,
)
from rlbench_cli.training.dpo import train_dpo
from rlbench_cli.training.guard import train_guard
from rlbench_cli.training.ppo import train_ppo
from rlbench_cli.training.rl import train_rl
from rlbench_cli.training.sft import train_sft

# runner name (config.ALGORITHM_DEFAULTS[algorithm]["runner"]) -> function(recipe, run, console, *, rows,
# model_path, resume) -> final model folder.
RUNNERS: dict[str, Callable[..., Path]] = {"rl": train_rl, "ppo": train_ppo, "sft": train_sft, "dpo": train_dpo}


def runner_for(algorithm: str) -> Callable[..., Path]:
    """The runner function that trains `algorithm`."""
    return RUNNERS[ALGORITHM_DEFAULTS[algorithm]["runner"]]


def run_training(recipe: Recipe, *, command: str, resume: bool = False, overwrite: bool = False,
                 console: Any = None) -> Path:
    """Train one recipe into its run folder; returns the run folder."""
    results = Path(recipe.output.dir)
    run_dir = results / recipe.run_name
    ctx = RunContext(recipe, run_dir, command)
    is_main = is_main_process()
    if is_main:
        from rlbench_cli.tracking import check_available

        check_available(list(recipe.output.report_to))
        check_writable(results)
    tracker = None
    try:
        with train_guard(ctx, console=console,
                         prepare=lambda: prepare_run_folder(ctx, resume=resume, overwrite=overwrite)) as log:
            import torch

            if recipe.torch_threads:
                torch.set_num_threads(recipe.torch_threads)
            if is_main:
                atomic_write_text(run_dir / "recipe.yaml", recipe_to_yaml(recipe, command))
            from rlbench_cli.training.data import load_rows

            rows, data_record = load_rows(recipe)
            model_path = resolve_model_path(recipe, console)
            if recipe.model.trust_remote_code and console is not None:
                console.print("[yellow]model.trust_remote_code is on: code from the model repository will run[/]")
            if is_main:
                ctx.start(data_record, model_path, resumed=resume)
                from rlbench_cli import tracking

                tracker = tracking.open_for_training(recipe, run_dir, ctx.manifest, ctx.metrics_path)
                if tracker is not None:
                    ctx.write_manifest()  # now with manifest["tracking"] (the id a later eval logs to)
            log.info("run %s: %s on %d prompts from %s", run_dir.name, recipe.algorithm.name, len(rows),
                     data_record["source"])
            final_model = runner_for(recipe.algorithm.name)(recipe, ctx, console, rows=rows, model_path=model_path,
                                                            resume=resume)
            if not is_main:
                return run_dir
            steps = len(read_jsonl(ctx.metrics_path))
            ctx.finish("completed", steps=steps,
                       final_model_sha256=sha256_dir(final_model) if Path(final_model).is_dir() else None)
            log.info("run %s completed", run_dir.name)
            return run_dir
    finally:
        if tracker is not None:
            from rlbench_cli import tracking

            tracking.close_training(tracker, ctx.metrics_path, ctx.manifest)
        sys.stdout.flush()

