"""Training-time schedules usable with any RL algorithm: the rollout temperature schedule and ProRL's periodic
reference-policy reset (arXiv 2505.24864).

Pure functions of the optimizer step; the runner calls them once per rollout / step. Tests: tests/test_schedules.py.
"""

from __future__ import annotations

import math

TEMPERATURE_SCHEDULES = ("constant", "linear", "cosine", "step")


def temperature_at(step: int, total_steps: int, start: float, end: float | None, kind: str = "constant",
                   *, step_every: int = 0, step_size: float = 0.0) -> float:
    """Rollout temperature at optimizer step `step` (0-based) of `total_steps`.

    constant: start.  linear: start -> end over the run.  cosine: start -> end along half a cosine.
    step: start + step_size * floor(step / step_every), clamped to end when end is set (e.g. raise 0.1 every
    100 steps). The value at step 0 is always `start`.
    """
    if kind not in TEMPERATURE_SCHEDULES:
        raise ValueError(f"unknown temperature schedule {kind!r}; use one of {TEMPERATURE_SCHEDULES}")
    if kind == "constant" or total_steps <= 1:
        return start
    if kind == "step":
        if step_every <= 0:
            raise ValueError("a step temperature schedule needs step_every >= 1")
        value = start + step_size * (step // step_every)
        if end is not None:
            value = min(value, end) if step_size >= 0 else max(value, end)
        return value
    if end is None:
        raise ValueError(f"a {kind} temperature schedule needs an end temperature")
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    if kind == "cosine":
        frac = 0.5 * (1.0 - math.cos(math.pi * frac))
    return start + (end - start) * frac


def reference_reset_due(step: int, every: int) -> bool:
    """ProRL: reset pi_ref <- pi_theta (and the optimizer state) after every `every` optimizer steps (0 = never).
    `step` is the number of optimizer steps completed."""
    return every > 0 and step > 0 and step % every == 0
