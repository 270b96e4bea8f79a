"""The run folder, lowest layer of training: RunContext (paths + manifest), the metrics schema, run-folder guards,
the TrainingArguments every runner shares, and the starting model's location.

A run folder `results/<run-name>/` holds recipe.yaml (resolved), manifest.json (versions, git commit, hardware,
seeds, data and model hashes, times, status), metrics.jsonl (one line per optimizer step, keys METRIC_KEYS),
model/ (final weights, Hugging Face format), train.log, and checkpoints/ when checkpointing is on.
Imports nothing from the rest of training/ (layers: context < callbacks < checkpoints, policy < runners < run).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlbench_cli import __version__
from rlbench_cli.config import ALGORITHM_DEFAULTS, Recipe
from rlbench_cli.errors import UserError
from rlbench_cli.records import atomic_write_json, git_commit, now_iso, package_versions, sha256_dir

METRIC_KEYS = (
    "step", "samples", "gen_tokens", "wall_time", "reward_mean", "accuracy", "entropy", "kl", "clip_frac",
    "response_len", "incorrect_len", "frac_all_correct", "frac_all_wrong", "kept_frac", "loss", "lr", "grad_norm",
    "tokens_per_s", "rollout_rounds", "padded_groups",
)
LOGGERS = ("rlbench", "transformers", "trl")


def world_size() -> int:
    """Processes of this run, from WORLD_SIZE (set by accelerate/torchrun/deepspeed). Not PartialState(): on CPU a
    bare PartialState() ignores ACCELERATE_USE_CPU, reports 1 process and would double the per-process batch."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Under accelerate/torchrun only rank 0 owns the run folder (checks, manifest, recipe); the others only train."""
    return int(os.environ.get("RANK", "0")) == 0


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
            "label": r.label or ALGORITHM_DEFAULTS[r.algorithm.name]["label"],
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


def trainer_args(recipe: Recipe, run: RunContext, max_steps: int, *, seed: int | None = None,
                 checkpoints: bool = True) -> dict[str, Any]:
    """TrainingArguments fields every runner shares (GRPOConfig, SFTConfig and DPOConfig all accept them)."""
    import torch

    opt = recipe.optim
    on_cpu = not torch.cuda.is_available()
    seed = recipe.seed if seed is None else seed
    args: dict[str, Any] = dict(
        output_dir=str(run.checkpoint_dir), seed=seed, data_seed=seed, use_cpu=on_cpu,
        # TRL defaults to bf16 even on CPU: slower there and different numbers (docs/reference.md §4).
        bf16=not on_cpu and recipe.model.dtype in ("auto", "bfloat16"),
        fp16=not on_cpu and recipe.model.dtype == "float16",
        report_to="none", disable_tqdm=True, logging_steps=1, max_steps=max_steps,
        learning_rate=opt.lr, weight_decay=opt.weight_decay, lr_scheduler_type=opt.lr_scheduler,
        warmup_steps=opt.warmup_steps, max_grad_norm=opt.max_grad_norm,
        per_device_train_batch_size=opt.micro_batch_size, dataloader_num_workers=0,
        save_strategy="steps" if checkpoints and recipe.output.checkpoint_every else "no",
        save_steps=recipe.output.checkpoint_every or 500, save_total_limit=recipe.output.keep_checkpoints,
    )
    # Always explicit: TRL's configs default `gradient_checkpointing=True`, so leaving it unset would checkpoint
    # every run while the recipe records False. `activation_checkpointing` is transformers' non-deprecated name.
    args["activation_checkpointing"] = recipe.model.gradient_checkpointing
    return args


def resolve_model_path(recipe: Recipe, console: Any = None) -> str:
    """'testbed' → the locally built tiny model (built on first use); a folder → itself; else a hub id."""
    path = recipe.model.path
    from rlbench_cli.testbed.versions import model_version

    if (version := model_version(path)) is not None:  # 'testbed' (v2) or 'testbed:v1'
        from rlbench_cli.testbed.model import build_base_model

        return str(build_base_model(progress=console is not None, version=version))
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


# ------------------------------------------------------------------------------------------ run-folder guards


def check_writable(folder: Path) -> None:
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


def attach_log(run_dir: Path, name: str = "train.log") -> logging.Handler:
    """Send the rlbench / transformers / trl loggers into the run folder; detach with `detach_log`."""
    handler = logging.FileHandler(run_dir / name, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for logger in LOGGERS:
        logging.getLogger(logger).addHandler(handler)
    logging.getLogger("rlbench").setLevel(logging.INFO)
    return handler


def detach_log(handler: logging.Handler) -> None:
    for logger in LOGGERS:
        logging.getLogger(logger).removeHandler(handler)
    handler.close()


def check_same_recipe(ctx: RunContext) -> None:
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


def prepare_run_folder(ctx: RunContext, *, resume: bool, overwrite: bool) -> None:
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
        check_same_recipe(ctx)
        ctx.manifest = old
    elif not overwrite:
        raise UserError(
            f"run folder already exists (status: {status})", where=str(ctx.dir),
            fix="add --resume to continue it, --overwrite to start again, or set output.run_name=NAME",
        )
    else:
        from rlbench_cli.runlock import clear_run_folder

        clear_run_folder(ctx.dir)  # keeps the run-folder lock this process holds
