"""Checkpoints and resume, shared by every runner that trains through one TRL trainer (rl, ppo, sft).

`fit` trains with metrics.jsonl and a progress bar; with `resume` it continues from the newest complete checkpoint
(incomplete ones, cut by a kill mid-save, are removed) and first cuts metrics.jsonl back to that step, so a
resumed run's log matches an uninterrupted one. Iterative DPO keeps its own per-iteration checkpoints (dpo.py) and
uses `truncate_metrics` from here.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlbench_cli.records import atomic_write_text
from rlbench_cli.training.callbacks import MetricsCallback, RichProgress
from rlbench_cli.training.context import RunContext

log = logging.getLogger("rlbench")
PREFIX = "checkpoint-"


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step of a TRL checkpoint folder `checkpoint-<step>` (None for any other name)."""
    name = path.name
    if not name.startswith(PREFIX) or not name[len(PREFIX):].isdigit():
        return None
    return int(name[len(PREFIX):])


def checkpoint_complete(path: Path) -> bool:
    """Trainer._save_checkpoint writes trainer_state.json last; without a parsable one the save was cut."""
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == checkpoint_step(path)


def last_checkpoint(run: RunContext) -> Path | None:
    """The newest complete checkpoint. Newer, incomplete ones (killed mid-save) are deleted so that TRL's
    rotation and the resumed run never see them."""
    if not run.checkpoint_dir.is_dir():
        return None
    found = sorted((step, p) for p in run.checkpoint_dir.iterdir()
                   if p.is_dir() and (step := checkpoint_step(p)) is not None)
    for _step, path in reversed(found):
        if checkpoint_complete(path):
            return path
        log.warning("removing incomplete checkpoint %s (the run was stopped while saving it)", path.name)
        shutil.rmtree(path, ignore_errors=True)
    return None


def truncate_metrics(run: RunContext, step: int) -> list[dict[str, Any]]:
    """Drop metric lines written after `step` (the step resumed from; 0 = start over), so the log matches an
    uninterrupted run. Returns the kept rows (their last row carries the cumulative counters to restore)."""
    rows: list[Any] = []
    if run.metrics_path.exists():
        # Appends are whole lines, so only a torn last line can come from a crash: keep every line that parses.
        for line in run.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    kept = [r for r in rows if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= step]
    atomic_write_text(run.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def restore_rollout_counters(trainer: Any, kept: list[dict[str, Any]]) -> None:
    """Cumulative samples / generated tokens live on the trainer, not in TRL's checkpoint: restore them from
    the last kept metrics line so a resumed run logs the same totals as an uninterrupted one."""
    last = kept[-1] if kept else {}
    trainer._rb_samples = int(last.get("samples") or 0)
    trainer._rb_gen_tokens = int(last.get("gen_tokens") or 0)


def fit(trainer: Any, run: RunContext, console: Any, max_steps: int, *, resume: bool,
        extra_keys: dict[str, str] | None = None,
        rollout_stats: Callable[[], dict[str, Any]] | None = None) -> None:
    """Train with metrics.jsonl and a progress bar; with resume, continue from the last complete checkpoint.

    rollout_stats: the per-step statistics for metrics.jsonl; default: the RL trainer's `_rb_rollout` (whose
    cumulative counters are then restored on resume)."""
    checkpoint = last_checkpoint(run) if resume else None
    step = (checkpoint_step(checkpoint) or 0) if checkpoint else 0
    kept = truncate_metrics(run, step) if resume else []
    if rollout_stats is None:
        restore_rollout_counters(trainer, kept)

        def rollout_stats() -> dict[str, Any]:
            return trainer._rb_rollout

    if resume:
        where = checkpoint or "the start (no complete checkpoint yet)"
        log.info("resuming from %s", where)
        if console is not None:
            console.print(f"Resuming from {where}", soft_wrap=True, markup=False)
    wall = float(kept[-1].get("wall_time") or 0.0) if kept else 0.0
    with RichProgress(console, max_steps, f"{run.recipe.algorithm.name} {run.dir.name}") as progress:
        trainer.add_callback(MetricsCallback(run.metrics_path, rollout_stats, progress,
                                             step_offset_wall=wall, extra_keys=extra_keys))
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
