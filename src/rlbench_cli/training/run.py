"""`rlbench train`: resolve a recipe into a plan, create the run folder, dispatch to the algorithm's runner.

A run folder `results/<run-name>/` holds recipe.yaml (resolved), manifest.json (versions, git commit, hardware,
seeds, data and model hashes, times, status), metrics.jsonl (one line per optimizer step), model/ (final weights,
Hugging Face format), train.log, and checkpoints/ when checkpointing is on.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlbench_cli import __version__
from rlbench_cli.config import RL_ALGORITHMS, Recipe, recipe_to_yaml
from rlbench_cli.errors import UserError
from rlbench_cli.records import (
    atomic_write_json,
    atomic_write_text,
    git_commit,
    now_iso,
    package_versions,
    read_jsonl,
    sha256_dir,
)

METRIC_KEYS = (
    "step", "samples", "gen_tokens", "wall_time", "reward_mean", "accuracy", "entropy", "kl", "clip_frac",
    "response_len", "frac_all_correct", "frac_all_wrong", "kept_frac", "loss", "lr", "grad_norm", "tokens_per_s",
)

LABELS = {
    "sft": "SFT", "raft": "RAFT", "raft_pp": "RAFT++", "reinforce": "Reinforce", "reinforce_rej": "Reinforce-Rej",
    "grpo": "GRPO", "dr_grpo": "Dr. GRPO", "dapo": "DAPO", "gspo": "GSPO", "rloo": "RLOO", "gpg": "GPG",
    "ppo": "PPO", "dpo": "Iterative DPO",
}


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
    """Batch arithmetic, per device, exactly as the runner will configure TRL."""
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
        "trl_steps_per_generation": grad_accum * steps_per_rollout,
    }
    if n_prompts is not None:
        rollouts_per_epoch = max(1, n_prompts // r.prompts_per_batch)
        out["train_prompts"] = n_prompts
        out["max_steps"] = o.max_steps or max(1, int(rollouts_per_epoch * o.epochs) * steps_per_rollout)
    else:
        out["max_steps"] = o.max_steps
    return out


def count_rows(recipe: Recipe) -> int | None:
    """Training rows the run will see, without loading a model (None for hub data: unknown until downloaded)."""
    d = recipe.data
    if d.source == "testbed":
        from rlbench_cli.testbed.task import generate_split

        n = len(generate_split(d.split))
    elif d.source == "jsonl" and d.path and Path(d.path).is_file():
        with open(d.path, "rb") as f:
            n = sum(1 for line in f if line.strip())
    else:
        return None
    return min(n, d.max_prompts) if d.max_prompts else n


def plan_for(recipe: Recipe, num_processes: int = 1, n_rows: int | None = None) -> dict[str, Any]:
    """The batch arithmetic of whichever runner the algorithm uses (RL runners share `plan`)."""
    if recipe.algorithm.name == "sft":
        from rlbench_cli.training.sft import sft_batching

        return {"algorithm": "sft", **sft_batching(recipe, n_rows or 1, num_processes),
                **({"train_rows": n_rows} if n_rows else {})}
    if recipe.algorithm.name == "dpo":
        from rlbench_cli.training.dpo import dpo_batching, dpo_plan

        if n_rows:
            return dpo_plan(recipe, n_rows, num_processes)
        return {"algorithm": "dpo", **dpo_batching(recipe, num_processes)}
    return plan(recipe, num_processes, n_prompts=n_rows)


def trainer_args(recipe: Recipe, run: RunContext, max_steps: int, *, seed: int | None = None,
                 checkpoints: bool = True) -> dict[str, Any]:
    """TrainingArguments fields every runner shares (GRPOConfig, SFTConfig and DPOConfig all accept them)."""
    import torch

    opt = recipe.optim
    on_cpu = not torch.cuda.is_available()
    seed = recipe.seed if seed is None else seed
    args: dict[str, Any] = dict(
        output_dir=str(run.checkpoint_dir), seed=seed, data_seed=seed, use_cpu=on_cpu,
        # TRL defaults to bf16 even on CPU: slower there and different numbers (REFERENCE.md §4).
        bf16=not on_cpu and recipe.model.dtype in ("auto", "bfloat16"),
        fp16=not on_cpu and recipe.model.dtype == "float16",
        report_to="none", disable_tqdm=True, logging_steps=1, max_steps=max_steps,
        learning_rate=opt.lr, weight_decay=opt.weight_decay, lr_scheduler_type=opt.lr_scheduler,
        warmup_steps=opt.warmup_steps, max_grad_norm=opt.max_grad_norm,
        per_device_train_batch_size=opt.micro_batch_size, dataloader_num_workers=0,
        save_strategy="steps" if checkpoints and recipe.output.checkpoint_every else "no",
        save_steps=recipe.output.checkpoint_every or 500, save_total_limit=recipe.output.keep_checkpoints,
    )
    if recipe.model.gradient_checkpointing:  # passing False explicitly triggers a deprecation warning
        args["gradient_checkpointing"] = True
    return args


def resolve_model_path(recipe: Recipe, console: Any = None) -> str:
    """'testbed' → the locally built tiny model (built on first use); a folder → itself; else a hub id."""
    path = recipe.model.path
    if path == "testbed":
        from rlbench_cli.testbed.model import build_base_model

        return str(build_base_model(progress=console is not None))
    from rlbench_cli.models import resolve_named_model

    if (named := resolve_named_model(path, console)) is not None:  # e.g. smollm2-135m
        return named
    if Path(path).exists():
        if not (Path(path) / "config.json").exists():
            raise UserError("model folder has no config.json", where=f"model.path={path}",
                            fix="point model.path at a Hugging Face model folder")
        return str(Path(path).resolve())
    if path.count("/") == 1 and not path.startswith((".", "/")):
        return path  # hub id, loaded by transformers
    raise UserError("model folder not found and not a hub id (org/name)", where=f"model.path={path}")


@dataclass
class RunContext:
    """One run folder and its manifest; every write is atomic."""

    recipe: Recipe
    dir: Path
    command: str
    manifest: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoints"

    def write_manifest(self) -> None:
        atomic_write_json(self.dir / "manifest.json", self.manifest)

    def update(self, **fields: Any) -> None:
        self.manifest.update(fields)
        self.write_manifest()

    def start(self, data_record: dict[str, Any], model_path: str, resumed: bool) -> None:
        import torch

        from rlbench_cli.records import hardware_info

        r = self.recipe
        model_hash = sha256_dir(model_path) if Path(model_path).is_dir() else f"hub:{model_path}"
        previous = self.manifest if resumed else {}
        self.manifest = {
            "kind": "train",
            "name": self.dir.name,
            "recipe_name": r.name,
            "label": r.label or LABELS[r.algorithm.name],
            "algorithm": r.algorithm.name,
            "seed": r.seed,
            "status": "running",
            "command": self.command,
            "rlbench_version": __version__,
            "git_commit": git_commit(),
            "versions": package_versions(),
            "hardware": hardware_info(),
            "torch_threads": torch.get_num_threads(),
            "seeds": {"recipe": r.seed, "trainer": r.seed, "data_shuffle": r.seed},
            "data": data_record,
            "model": {"path": model_path, "sha256": model_hash},
            "started_at": previous.get("started_at", now_iso()),
            "resumed_at": [*previous.get("resumed_at", []), now_iso()] if resumed else [],
            "ended_at": None,
            "wall_time_s": previous.get("wall_time_s", 0.0),
        }
        if r.model.trust_remote_code:
            self.manifest["trust_remote_code"] = True
        self.write_manifest()

    def finish(self, status: str, error: str | None = None, **extra: Any) -> None:
        elapsed = time.time() - self.started
        self.update(status=status, ended_at=now_iso(), error=error,
                    wall_time_s=round(self.manifest.get("wall_time_s", 0.0) + elapsed, 2), **extra)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".rlbench-write-test-{os.getpid()}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL byte
        reason = getattr(e, "strerror", None) or str(e)
        raise UserError(f"results folder is not writable ({reason})", where=repr(str(folder))[1:-1],
                        fix="choose another --output folder or fix its permissions / free disk space") from None
    free = shutil.disk_usage(folder).free
    if free < 100 * 2**20:
        raise UserError(f"only {free // 2**20} MiB free on the results disk", where=str(folder),
                        fix="free some space or choose another --output folder")


def _attach_log(run_dir: Path, name: str = "train.log") -> logging.Handler:
    handler = logging.FileHandler(run_dir / name, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("rlbench", "transformers", "trl"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("rlbench").setLevel(logging.INFO)
    return handler


def _runner(algorithm: str) -> Callable[..., Path]:
    """The runner function of an algorithm, imported lazily (torch and TRL are heavy)."""
    if algorithm in RL_ALGORITHMS:
        from rlbench_cli.training.rl import train_rl

        return train_rl
    if algorithm == "sft":
        from rlbench_cli.training.sft import train_sft

        return train_sft
    if algorithm == "ppo":
        from rlbench_cli.training.ppo import train_ppo

        return train_ppo
    from rlbench_cli.training.dpo import train_dpo

    return train_dpo


def _check_same_recipe(ctx: RunContext) -> None:
    """--resume must continue the same experiment: refuse if any resolved setting changed."""
    import yaml

    stored_path = ctx.dir / "recipe.yaml"
    try:
        stored = yaml.safe_load(stored_path.read_text())
    except (OSError, yaml.YAMLError):
        return  # nothing trustworthy to compare against; the checkpoint decides
    current = yaml.safe_load(yaml.safe_dump(ctx.recipe.model_dump(mode="json")))

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in (d or {}).items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(stored), flat(current)
    # Training longer is a legitimate resume; anything else would silently mix two experiments.
    extendable = {"optim.max_steps", "optim.epochs"}
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in extendable)
    if changed:
        details = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:5])
        raise UserError(f"the recipe changed since this run started ({details})", where=str(stored_path),
                        fix="resume with the same recipe and overrides (e.g. rlbench train "
                            f"{stored_path} --resume), or start a new run with another output.run_name")


def _prepare_run_folder(ctx: RunContext, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless --resume / --overwrite says what to do with it."""
    import json

    manifest_path = ctx.dir / "manifest.json"
    if not manifest_path.exists():
        if resume:
            raise UserError("no run to resume", where=str(ctx.dir), fix="drop --resume to start a new run")
        return
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        old = {}
    status = old.get("status")
    if resume:
        if status == "completed":
            raise UserError("this run already completed; nothing to resume", where=str(ctx.dir),
                            fix="use --overwrite to train it again, or another output.run_name")
        _check_same_recipe(ctx)
        ctx.manifest = old
    elif not overwrite:
        raise UserError(
            f"run folder already exists (status: {status})", where=str(ctx.dir),
            fix="add --resume to continue it, --overwrite to start again, or set output.run_name=NAME",
        )
    else:
        shutil.rmtree(ctx.dir)


def run_training(recipe: Recipe, *, command: str, resume: bool = False, overwrite: bool = False,
                 console: Any = None) -> Path:
    """Train one recipe into its run folder; returns the run folder."""
    results = Path(recipe.output.dir)
    run_dir = results / recipe.run_name
    ctx = RunContext(recipe, run_dir, command)
    # Under accelerate/torchrun only rank 0 owns the run folder (checks, manifest, recipe); others only train.
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        _check_writable(results)
        _prepare_run_folder(ctx, resume=resume, overwrite=overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _attach_log(run_dir, "train.log" if is_main else f"train.rank{os.environ.get('RANK')}.log")
    log = logging.getLogger("rlbench")
    try:
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
        log.info("run %s: %s on %d prompts from %s", run_dir.name, recipe.algorithm.name, len(rows),
                 data_record["source"])
        runner = _runner(recipe.algorithm.name)
        final_model = runner(recipe, ctx, console, rows=rows, model_path=model_path, resume=resume)
        if not is_main:
            return run_dir
        steps = len(read_jsonl(ctx.metrics_path))
        ctx.finish("completed", steps=steps,
                   final_model_sha256=sha256_dir(final_model) if Path(final_model).is_dir() else None)
        log.info("run %s completed", run_dir.name)
        return run_dir
    except KeyboardInterrupt:
        if ctx.manifest:
            ctx.finish("interrupted", error="interrupted by the user (Ctrl-C)")
        if console is not None:
            console.print(f"[yellow]Interrupted. Resume with: rlbench train {run_dir / 'recipe.yaml'} --resume[/]",
                          soft_wrap=True)
        raise
    except UserError as e:
        if ctx.manifest:
            ctx.finish("failed", error=str(e))
        raise
    except BaseException as e:
        if ctx.manifest:
            ctx.finish("failed", error=f"{type(e).__name__}: {e}")
        log.exception("run failed")
        raise
    finally:
        for name in ("rlbench", "transformers", "trl"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()
        sys.stdout.flush()
