"""Seconds per optimizer step: rlbench's GRPO runner vs TRL's GRPOTrainer on the same configuration.

Run: .venv/bin/python bench/bench_rl_overhead.py [--steps 12] [--model testbed|smollm2-135m|PATH]
     [--recipe recipes/tiny/grpo.yaml] [--set KEY=VALUE ...] [--json]

Both trainers get the same model, prompts, reward function (the grader), GRPOConfig (from the recipe via
`grpo_config`) and seed; bare TRL uses its own loss with the same KL coefficient, so both compute reference
log-probs. The first `--warmup` steps are excluded. Each trainer runs in its own child process (alternating,
`--repeats` times), so each peak RSS (and, on a GPU, peak CUDA memory) is that trainer's alone.
Target: rlbench within 5% of bare TRL. E.g. SmolLM2 on CPU:
  python bench/bench_rl_overhead.py --model smollm2-135m --recipe recipes/smol/grpo.yaml --steps 4 --warmup 1 \
      --repeats 1 --set rollout.max_new_tokens=32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _child(args: argparse.Namespace) -> None:
    """Time one trainer; print one JSON line with its step times and peaks."""
    import resource

    import torch
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from rlbench_cli.config import load_recipe
    from rlbench_cli.training.context import RunContext, resolve_model_path
    from rlbench_cli.training.data import build_prompt_dataset, load_rows
    from rlbench_cli.training.policy import load_policy
    from rlbench_cli.training.rewards import GraderReward
    from rlbench_cli.training.rl import RLBenchGRPOTrainer, grpo_config

    recipe = load_recipe(args.recipe, [f"model.path={args.model}", f"optim.max_steps={args.steps}", *args.set])
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

    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(recipe, Path(tmp), "bench")
        model, tok = load_policy(model_path, recipe)
        cfg = grpo_config(recipe, ctx, args.steps)
        reward = GraderReward(recipe)
        dataset = build_prompt_dataset(rows, recipe, tok)
        if args.only == "trl":
            cfg.beta = recipe.algorithm.kl_coef or 0.0
            trainer = GRPOTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tok,
                                  reward_funcs=[reward])
        else:
            trainer = RLBenchGRPOTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=tok,
                                         reward_funcs=[reward], rb_recipe=recipe)
        timer = StepTimer()
        trainer.add_callback(timer)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        timer.last = time.perf_counter()
        trainer.train()
        reward.close()
    print(json.dumps({
        "kind": args.only, "times": timer.times[args.warmup:], "model": model_path,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "bf16": bool(cfg.bf16), "threads": torch.get_num_threads(),
        "config": f"{recipe.rollout.prompts_per_batch} prompts x {recipe.rollout.n} responses, "
                  f"{recipe.rollout.max_new_tokens} max new tokens, {recipe.steps_per_rollout} optimizer steps "
                  "per rollout",
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--model", default="testbed")
    parser.add_argument("--recipe", default=str(Path(__file__).resolve().parents[1] / "recipes/tiny/grpo.yaml"))
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE recipe override (repeatable)")
    parser.add_argument("--repeats", type=int, default=2, help="alternate the two trainers this many times")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line (for gpu_check.sh)")
    parser.add_argument("--only", choices=("trl", "rlbench"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        _child(args)
        return

    results: dict[str, list[dict]] = {"trl": [], "rlbench": []}
    for _ in range(args.repeats):
        for kind in ("trl", "rlbench"):
            cmd = [sys.executable, __file__, "--only", kind, "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--model", args.model, "--recipe", args.recipe,
                   *[x for kv in args.set for x in ("--set", kv)]]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode:
                sys.exit(f"{kind} run failed:\n{out.stderr[-3000:]}")
            results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    times = {k: [t for r in v for t in r["times"]] for k, v in results.items()}
    # Steps alternate between rollout steps (generation) and off-policy steps, so the mean is the honest figure.
    trl_s, rb_s = statistics.fmean(times["trl"]), statistics.fmean(times["rlbench"])
    peak = {k: max(r["peak_rss_gib"] for r in v) for k, v in results.items()}
    cuda = {k: max((r["peak_cuda_gib"] or 0.0) for r in v) for k, v in results.items()}
    first = results["trl"][0]
    if args.json:
        print(json.dumps({"trl_s_per_step": trl_s, "rlbench_s_per_step": rb_s, "ratio": rb_s / trl_s,
                          "peak_rss_gib": peak, "peak_cuda_gib": cuda, "bf16": first["bf16"],
                          "model": first["model"], "config": first["config"]}))
        return
    print(f"model: {first['model']}")
    print(f"config: {first['config']}, {first['threads']} torch threads, bf16 {first['bf16']}, "
          f"{len(times['trl'])} timed steps each")
    print(f"bare TRL GRPOTrainer : {trl_s:.3f} s/step (mean; median {statistics.median(times['trl']):.3f}), "
          f"peak RSS {peak['trl']:.2f} GiB")
    print(f"rlbench GRPO runner  : {rb_s:.3f} s/step (mean; median {statistics.median(times['rlbench']):.3f}), "
          f"peak RSS {peak['rlbench']:.2f} GiB")
    if any(cuda.values()):
        print(f"peak CUDA memory     : TRL {cuda['trl']:.2f} GiB, rlbench {cuda['rlbench']:.2f} GiB")
    print(f"ratio rlbench/TRL    : {rb_s / trl_s:.3f}  (target <= 1.05)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
