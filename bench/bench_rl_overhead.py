"""Seconds per optimizer step: rlbench's GRPO runner vs TRL's GRPOTrainer on the same configuration.

Run: .venv/bin/python bench/bench_rl_overhead.py [--steps 12] [--model testbed|PATH]

Both trainers get the same model, prompts, reward function (the grader), GRPOConfig (from the recipe
recipes/tiny/grpo.yaml via `grpo_config`) and seed; bare TRL uses its own loss with the same KL coefficient, so both
compute reference log-probs. The first `--warmup` steps are excluded. Target: rlbench within 5% of bare TRL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--model", default="testbed")
    parser.add_argument("--repeats", type=int, default=2, help="alternate the two trainers this many times")
    args = parser.parse_args()

    import torch
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from rlbench_cli.config import load_recipe
    from rlbench_cli.training.context import RunContext, resolve_model_path
    from rlbench_cli.training.data import build_prompt_dataset, load_rows
    from rlbench_cli.training.policy import load_policy
    from rlbench_cli.training.rewards import GraderReward
    from rlbench_cli.training.rl import RLBenchGRPOTrainer, grpo_config

    repo = Path(__file__).resolve().parents[1]
    recipe = load_recipe(repo / "recipes" / "tiny" / "grpo.yaml",
                         [f"model.path={args.model}", f"optim.max_steps={args.steps}"])
    torch.set_num_threads(recipe.torch_threads or torch.get_num_threads())
    model_path = resolve_model_path(recipe)
    rows, _ = load_rows(recipe)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.last = time.perf_counter()

        def on_step_end(self, *a, **k) -> None:  # noqa: ANN002, ANN003
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

    def run(kind: str) -> list[float]:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = RunContext(recipe, Path(tmp), "bench")
            model, tok = load_policy(model_path, recipe)
            cfg = grpo_config(recipe, ctx, args.steps)
            reward = GraderReward(recipe)
            if kind == "trl":
                cfg.beta = recipe.algorithm.kl_coef or 0.0
                trainer = GRPOTrainer(model=model, args=cfg, train_dataset=build_prompt_dataset(rows, recipe, tok),
                                      processing_class=tok, reward_funcs=[reward])
            else:
                trainer = RLBenchGRPOTrainer(model=model, args=cfg,
                                             train_dataset=build_prompt_dataset(rows, recipe, tok),
                                             processing_class=tok, reward_funcs=[reward], rb_recipe=recipe)
            timer = StepTimer()
            trainer.add_callback(timer)
            timer.last = time.perf_counter()
            trainer.train()
            reward.close()
            return timer.times[args.warmup:]

    results: dict[str, list[float]] = {"trl": [], "rlbench": []}
    for _ in range(args.repeats):
        for kind in ("trl", "rlbench"):
            results[kind] += run(kind)
    # Steps alternate between rollout steps (generation) and off-policy steps, so the mean is the honest figure.
    trl_s = statistics.fmean(results["trl"])
    rb_s = statistics.fmean(results["rlbench"])
    print(f"model: {model_path}")
    print(f"config: {recipe.rollout.prompts_per_batch} prompts x {recipe.rollout.n} responses, "
          f"{recipe.rollout.max_new_tokens} max new tokens, {recipe.steps_per_rollout} optimizer steps per rollout, "
          f"{torch.get_num_threads()} torch threads, {len(results['trl'])} timed steps each")
    print(f"bare TRL GRPOTrainer : {trl_s:.3f} s/step (mean; median {statistics.median(results['trl']):.3f})")
    print(f"rlbench GRPO runner  : {rb_s:.3f} s/step (mean; median {statistics.median(results['rlbench']):.3f})")
    print(f"ratio rlbench/TRL    : {rb_s / trl_s:.3f}  (target <= 1.05)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
