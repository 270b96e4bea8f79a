"""Trainer callbacks shared by every runner: one metrics.jsonl line per optimizer step, and a rich progress bar.

Every algorithm writes the same keys (context.METRIC_KEYS); a value an algorithm does not have is null. The same
row goes to the run's experiment trackers (tracking.py, output.report_to), so their keys are metrics.jsonl's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rlbench_cli import tracking
from rlbench_cli.records import append_jsonl
from rlbench_cli.training.context import METRIC_KEYS

# TRL / Trainer log key -> our key (first match wins).
_FROM_LOGS = {
    "loss": ("loss",),
    "lr": ("learning_rate",),
    "grad_norm": ("grad_norm",),
    "entropy": ("rb/entropy", "entropy"),
    "kl": ("rb/kl", "kl"),
    "clip_frac": ("rb/clip_frac", "clip_ratio/region_mean"),
}


class MetricsCallback(TrainerCallback):
    """Writes metrics.jsonl. `rollout_stats` returns the stats of the rollout the current step trained on."""

    def __init__(self, metrics_path: Path, rollout_stats: Callable[[], dict[str, Any]] | None = None,
                 progress: Any = None, step_offset_wall: float = 0.0,
                 extra_keys: dict[str, str] | None = None) -> None:
        """extra_keys: algorithm-specific row key -> log key (e.g. PPO's value_loss), added after the schema."""
        self.metrics_path = metrics_path
        self.sources = {**_FROM_LOGS, **{k: (v,) for k, v in (extra_keys or {}).items()}}
        self.rollout_stats = rollout_stats or (lambda: {})
        self.progress = progress
        self.t0 = time.time() - step_offset_wall

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or "train_runtime" in logs or not state.is_world_process_zero:
            return
        row: dict[str, Any] = dict.fromkeys((*METRIC_KEYS, *self.sources))
        row["step"] = state.global_step
        for key, sources in self.sources.items():
            for src in sources:
                if logs.get(src) is not None:
                    row[key] = float(logs[src])
                    break
        row.update({k: v for k, v in self.rollout_stats().items() if k in row})
        row["wall_time"] = round(time.time() - self.t0, 3)
        append_jsonl(self.metrics_path, [row])
        tracking.log_row(self.metrics_path, row)
        if self.progress is not None:
            self.progress.note(row)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None and state.is_world_process_zero:
            self.progress.advance(state.global_step)


class RichProgress:
    """A rich progress bar with ETA and the latest reward / accuracy, for any runner."""

    def __init__(self, console: Any, total: int, description: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=console, transient=False, disable=console is None,
        )
        self.task = self.progress.add_task(description, total=total, info="")

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def advance(self, completed: int) -> None:
        self.progress.update(self.task, completed=completed)

    def note(self, row: dict[str, Any]) -> None:
        parts = [f"{k}={row[k]:.3g}" for k in ("reward_mean", "accuracy", "loss") if row.get(k) is not None]
        self.progress.update(self.task, info=" ".join(parts))
