"""Multi-process launch through accelerate (optionally DeepSpeed ZeRO-2/3), vLLM seeds, paper checks.

`rlbench train RECIPE --launcher accelerate --num-processes N [--deepspeed zero2|zero3]` re-runs
`rlbench train` under `accelerate launch` with a config shipped in rlbench_cli/configs/:
- GPU, no DeepSpeed: accelerate_multi_gpu.yaml (DDP);
- GPU, DeepSpeed: deepspeed_zero{2,3}.yaml plus ds_zero{2,3}.json (passed as --deepspeed_config_file);
- CPU: accelerate's `--cpu` starts only one process (multi-CPU needs mpirun), so rlbench uses the torchrun
  launcher (`--multi_gpu`) with ACCELERATE_USE_CPU=true in the environment, which gives gloo on CPU.

vLLM: in colocate mode TRL 1.16 seeds each vLLM engine with `process_index // tensor_parallel_size`, ignoring
the run seed (docs/reference.md §4). `vllm_seed_override` derives it from the recipe seed instead (`vllm_seed`).
This module only imports torch / trl inside functions: `rlbench train --dry-run` stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEEPSPEED_STAGES = ("zero2", "zero3")


def config_files(deepspeed: str | None) -> tuple[Path, Path | None]:
    """(accelerate YAML, DeepSpeed JSON or None) shipped for a launch option."""
    if deepspeed is None:
        return CONFIGS / "accelerate_multi_gpu.yaml", None
    if deepspeed not in DEEPSPEED_STAGES:
        raise UserError(f"unknown DeepSpeed stage {deepspeed!r}", where="--deepspeed",
                        fix="use zero2 or zero3")
    return CONFIGS / f"deepspeed_{deepspeed}.yaml", CONFIGS / f"ds_{deepspeed}.json"


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def check_processes(recipe: Any, num_processes: int) -> None:
    """Refuse, before launching, what runs on one process only (README: How launching works)."""
    if num_processes <= 1:
        return
    if recipe.algorithm.name == "dpo":
        raise UserError("iterative DPO runs on one process (sampling is not sharded)", where="--num-processes",
                        fix="train it with --num-processes 1")
    if recipe.algorithm.dynamic_sampling:
        raise UserError("dynamic sampling runs on one process (the chosen groups would cross processes)",
                        where="--num-processes",
                        fix="train with --num-processes 1, or set algorithm.dynamic_sampling=false")


def launch_command(recipe_path: Path, overrides: list[str], *, num_processes: int, deepspeed: str | None,
                   resume: bool = False, overwrite: bool = False, cpu: bool | None = None,
                   main_process_port: int | None = None) -> list[str]:
    """The exact `accelerate launch` command line that runs `rlbench train` in `num_processes` processes.

    cpu=None detects it (no CUDA device → CPU). On CPU the command starts with `env ACCELERATE_USE_CPU=true`
    so that the printed command is the whole story.
    """
    if num_processes < 1:
        raise UserError(f"--num-processes must be >= 1 (got {num_processes})", where="--num-processes")
    if cpu is None:
        cpu = deepspeed is None and not cuda_available()
    if cpu and not deepspeed:
        cmd = ["env", "ACCELERATE_USE_CPU=true", sys.executable, "-m", "accelerate.commands.launch",
               "--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    else:
        # DeepSpeed commands are always the GPU command (--dry-run prints it; run_launch checks for CUDA).
        yaml_file, ds_json = config_files(deepspeed)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(yaml_file)]
        if ds_json is not None:
            cmd += ["--deepspeed_config_file", str(ds_json)]
    cmd += ["--num_processes", str(num_processes)]
    if main_process_port is not None:
        cmd += ["--main_process_port", str(main_process_port)]
    cmd += ["-m", "rlbench_cli.cli", "train", str(recipe_path), *overrides]
    if resume:
        cmd.append("--resume")
    if overwrite:
        cmd.append("--overwrite")
    return cmd


def format_command(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def check_launchable(cmd: list[str]) -> None:
    """Refuse commands that cannot run here (DeepSpeed without CUDA or without the deepspeed package)."""
    if "--deepspeed_config_file" not in cmd:
        return
    if not cuda_available():
        raise UserError("DeepSpeed ZeRO needs CUDA GPUs; this machine has none", where="--deepspeed",
                        fix="drop --deepspeed (plain multi-process data parallel runs on CPU)")
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError("the deepspeed package is not installed", where="--deepspeed",
                        fix="pip install 'rlbench[deepspeed]' (GPU machines), or drop --deepspeed")


def run_launch(cmd: list[str]) -> None:
    check_launchable(cmd)
    print("launching: " + format_command(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        raise UserError(f"the launched training exited with code {rc}", where="accelerate launch",
                        fix="see the run folder's train.log")


# ----------------------------------------------------------------------------------------------- vLLM seeds


def vllm_seed(recipe_seed: int, group_index: int) -> int:
    """Seed of the vLLM engine of tensor-parallel group `group_index` (process_index // tensor_parallel_size).

    Ranks of one TP group must share a seed (they sample together), different groups must differ (else they
    draw the same noise), and the seed must follow the recipe seed (TRL's choice, the group index, does not).
    A hash keeps (seed, group) pairs apart and the value inside vLLM's 31-bit range.
    """
    if recipe_seed < 0 or group_index < 0:
        raise ValueError("seeds and group indices are non-negative")
    digest = hashlib.sha256(f"rlbench-vllm:{recipe_seed}:{group_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@contextlib.contextmanager
def vllm_seed_override(recipe_seed: int, enabled: bool = True) -> Iterator[None]:
    """While active, TRL's colocated `LLM(seed=group_index, ...)` gets `vllm_seed(recipe_seed, group_index)`.

    TRL 1.16 builds the engine in `trl.generation.vllm_generation.VLLMGeneration._init_vllm` through the
    module global `LLM`; wrap the trainer's construction in this context. tests/test_launch.py fails if TRL
    changes that.
    """
    if not enabled:
        yield
        return
    from trl.generation import vllm_generation

    original = getattr(vllm_generation, "LLM", None)
    if original is None:  # vLLM not installed: TRL raises its own ImportError before constructing anything
        yield
        return
    vllm_generation.LLM = _seeded_llm(original, recipe_seed)
    try:
        yield
    finally:
        vllm_generation.LLM = original


def _seeded_llm(llm_cls: Callable[..., Any], recipe_seed: int) -> Callable[..., Any]:
    def build(*args: Any, **kwargs: Any) -> Any:
        kwargs["seed"] = vllm_seed(recipe_seed, int(kwargs.get("seed") or 0))
        return llm_cls(*args, **kwargs)

    return build


def vllm_server_command(recipe: Any) -> str:
    """The vLLM server command for `rollout.vllm_mode: server` (the server owns the sampling seed)."""
    model = recipe.model.path
    max_len = (recipe.rollout.max_prompt_tokens or 1024) + recipe.rollout.max_new_tokens
    return (f"CUDA_VISIBLE_DEVICES=<spare GPU> trl vllm-serve --model {shlex.quote(model)} "
            f"--max_model_len {max_len} --seed {recipe.seed}")


# ------------------------------------------------------------------------------------------- paper settings

PAPER = "paper §4"
SCRIPTS = "public scripts"
# docs/reference.md §1, training settings common to every algorithm of the paper.
PAPER_SETTINGS: dict[str, Any] = {
    "optim.lr": 1e-6, "optim.weight_decay": 0.01, "optim.lr_scheduler": "constant",
    "rollout.prompts_per_batch": 1024, "rollout.temperature": 1.0, "rollout.top_p": 1.0,
}
PPO_CLIP_ALGORITHMS = ("raft_pp", "reinforce", "reinforce_rej", "grpo", "ppo")
PAPER_RL = ("raft", "raft_pp", "reinforce", "reinforce_rej", "grpo", "ppo")


def expected_settings(algorithm: str) -> dict[str, tuple[tuple[Any, ...], str]]:
    """docs/reference.md §1 settings for an algorithm: dotted key → (accepted values, source of the values).

    Where the paper and its public code disagree both values are accepted; `reference_departures` names which.
    """
    out: dict[str, tuple[tuple[Any, ...], str]] = {
        "optim.lr": ((1e-6,), PAPER), "optim.weight_decay": ((0.01,), PAPER),
        "optim.lr_scheduler": (("constant",), PAPER),
        "eval.k": ((16,), PAPER), "eval.temperature": ((1.0,), PAPER), "eval.top_p": ((1.0,), PAPER),
        "eval.max_new_tokens": ((4096,), PAPER),
    }
    if algorithm not in PAPER_RL:
        return out
    out.update({
        "rollout.prompts_per_batch": ((1024,), PAPER),
        "rollout.n": (((1,) if algorithm == "ppo" else (4,)), PAPER),
        "optimizer_steps_per_rollout": ((2, 4), f"{PAPER}: mini-batch 512 → 2; {SCRIPTS}: 256 → 4"),
        "rollout.temperature": ((1.0,), PAPER), "rollout.top_p": ((1.0,), PAPER),
        "rollout.max_new_tokens": ((3072, 4096), f"{SCRIPTS}: 3072 response tokens; {PAPER}: 4096 generated"),
        "algorithm.kl_coef": (((0.0,) if algorithm == "ppo" else (0.001,)), SCRIPTS),
        "reward.correct": ((1.0,), PAPER),
        "reward.incorrect": ((-1.0, 0.0), f"{PAPER}: -1; {SCRIPTS}: 0"),
    })
    if algorithm != "ppo":
        out["algorithm.kl_type"] = (("low_var_kl",), SCRIPTS)
    if algorithm in PPO_CLIP_ALGORITHMS:
        out.update({"algorithm.ratio_level": (("token",), PAPER), "algorithm.clip_low": ((0.2,), PAPER),
                    "algorithm.clip_high": ((0.2,), PAPER), "algorithm.dual_clip_c": ((3.0,), SCRIPTS)})
    if algorithm == "raft":
        out["algorithm.ratio_level"] = (("none",), PAPER)
    if algorithm == "ppo":
        out["algorithm.critic_lr"] = ((1e-5,), PAPER)
    return out


def _value(recipe: Any, dotted: str) -> Any:
    if dotted == "optimizer_steps_per_rollout":
        return recipe.steps_per_rollout
    node = recipe
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def reference_departures(recipe: Any) -> list[str]:
    """Where a recipe departs from the paper's settings, and which side of a paper/code disagreement it takes.

    Printed by `rlbench train --dry-run`. Lines starting with 'note:' are choices, not departures.
    """
    algo = recipe.algorithm.name
    notes: list[str] = []
    for dotted, (accepted, source) in expected_settings(algo).items():
        value = _value(recipe, dotted)
        if not any(_same(value, a) for a in accepted):
            shown = " or ".join(str(a) for a in accepted)
            notes.append(f"{dotted} = {value} (reference: {shown}; {source})")
    if algo in PAPER_RL and recipe.reward.incorrect == 0.0 and recipe.reward.correct == 1.0:
        notes.append("note: reward {0, 1} as in the public code (the paper states {-1, 1}); with {0, 1} "
                     "Reinforce and Reinforce-Rej never push wrong answers down")
    if algo in ("raft", "raft_pp") and recipe.steps_per_rollout == 1:
        mini = recipe.optim.mini_batch_prompts or recipe.rollout.prompts_per_batch
        notes.append(f"one optimizer step per rollout (mini_batch_prompts = {mini}): RAFT and RAFT++ are "
                     "then identical; the paper takes 2-4 off-policy steps per rollout")
    if algo == "reinforce_rej":
        mode = recipe.algorithm.filter_mode
        how = ("public code: all-equal groups get zero advantage but stay in the token-mean denominator"
               if mode == "zero" else "paper text: all-equal groups are removed from the batch")
        notes.append(f"note: algorithm.filter_mode = {mode} ({how})")
    if algo in PAPER_RL:
        coef = recipe.algorithm.entropy_coef
        notes.append(f"note: algorithm.entropy_coef = {coef} (public code: 0.001 from its default config, which no "
                     "script overrides; the paper does not mention it)")
    if algo in ("dapo", "gpg") and not recipe.algorithm.dynamic_sampling:
        notes.append(f"algorithm.dynamic_sampling = false ({algo}'s reference code resamples prompts)")
    if algo == "dapo" and not recipe.algorithm.overlong_buffer_len:
        notes.append("algorithm.overlong_buffer_len = 0 (DAPO's recipe: soft overlong penalty on the last fifth)")
    if algo == "dpo":
        a = recipe.algorithm
        if (a.dpo_label_smoothing, a.dpo_epochs) != (0.1, 2):
            notes.append(f"algorithm.dpo_label_smoothing = {a.dpo_label_smoothing}, algorithm.dpo_epochs = "
                         f"{a.dpo_epochs} (Online-DPO-R1 scripts: 0.1 and 2)")
    if algo in PAPER_RL and recipe.rollout.max_prompt_tokens not in (None, 1024):
        notes.append(f"rollout.max_prompt_tokens = {recipe.rollout.max_prompt_tokens} (public scripts: 1024)")
    if recipe.model.lora.enabled:
        notes.append(f"model.lora.enabled (rank {recipe.model.lora.r}): the paper trains all weights")
    if recipe.data.prompt_template != "paper":
        notes.append(f"data.prompt_template = {recipe.data.prompt_template} "
                     "(paper: chat template + the paper's prompt)")
    missing = [b for b in ("math500", "minerva_math", "olympiadbench") if b not in recipe.eval.benchmarks]
    if missing:
        notes.append(f"eval.benchmarks lacks {', '.join(missing)} "
                     "(paper: math500, minerva_math, olympiadbench)")
    notes += vllm_notes(recipe)
    return notes


def vllm_notes(recipe: Any) -> list[str]:
    """How vLLM rollouts are seeded for this recipe (docs/reference.md §4)."""
    ro = recipe.rollout
    if not ro.use_vllm:
        return []
    if ro.vllm_mode == "colocate":
        return [f"note: vLLM colocate: TRL seeds each engine with its process index; rlbench overrides it "
                f"with vllm_seed(seed={recipe.seed}, group) so the seed follows the recipe. vLLM sampling is "
                "not batch-invariant, so GPU runs repeat statistically, not bit for bit"]
    return ["note: vLLM server mode: the server owns the sampling seed; start it with the recipe seed: "
            + vllm_server_command(recipe)]
