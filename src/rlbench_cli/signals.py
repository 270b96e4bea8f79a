"""SIGTERM handled like Ctrl-C: SLURM and Kubernetes preempt a job with SIGTERM, then SIGKILL after a grace time.

`on_sigterm(deferred=...)` installs the handler for one command. By default the first SIGTERM raises
`Terminated` (a KeyboardInterrupt, so every Ctrl-C path also runs: status `interrupted`, resume hint). With
`deferred=True` (training with checkpointing on) the first SIGTERM only sets `requested()`; the trainer callback
saves a checkpoint at the next safe point and then raises `Terminated`. A second SIGTERM raises at once.
The process exits with 143 (128 + SIGTERM), as shells and schedulers expect of a job stopped by SIGTERM.

    with on_sigterm(deferred=True):
        trainer.train()
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_CODE = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """Raised in the main thread after SIGTERM."""


_state = {"requested": False, "deferred": False, "received": False}


def requested() -> bool:
    """A SIGTERM arrived and waits for the next safe point (deferred mode)."""
    return _state["requested"]


def received() -> bool:
    """Whether this process got SIGTERM since the handler was installed (for the exit code)."""
    return _state["received"]


def _handler(signum: int, frame: Any) -> None:
    _state["received"] = True
    if _state["deferred"] and not _state["requested"]:
        _state["requested"] = True
        return
    raise Terminated()


@contextmanager
def on_sigterm(*, deferred: bool = False) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signals can only be set from the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, _handler)
    old_deferred = _state["deferred"]
    _state["deferred"] = deferred
    try:
        yield
    finally:
        _state["deferred"] = old_deferred
        signal.signal(signal.SIGTERM, previous)


def raise_if_requested() -> None:
    """Call at a safe point (after a checkpoint was written) to stop a run a deferred SIGTERM asked to stop."""
    if _state["requested"]:
        _state["requested"] = False
        raise Terminated()


def preempt_callback(steps_per_rollout: int = 1) -> Any:
    """A TrainerCallback that turns a deferred SIGTERM into a checkpoint at the next rollout boundary (the only
    steps a run can resume from), then raises Terminated once the checkpoint is on disk."""
    from transformers import TrainerCallback

    class PreemptCallback(TrainerCallback):
        stopping = False

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if requested() and state.global_step % max(1, steps_per_rollout) == 0:
                control.should_save, self.stopping = True, True

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.stopping:
                raise_if_requested()

    return PreemptCallback()
