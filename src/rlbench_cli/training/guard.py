"""What surrounds one training run: the run-folder lock, the log file, a disk-space reserve, and a manifest
status for every way a run can end.

    with train_guard(ctx, console=console, prepare=lambda: prepare_run_folder(ctx, ...)) as log:
        ...  # load, train, ctx.finish("completed", ...)

- One writer per run folder (runlock): a second `train`, `--resume`, `--overwrite` or `eval` is refused.
- Ctrl-C and SIGTERM end as `interrupted`, with the exact resume command on the console and in train.log.
- A full disk ends as `failed` ("disk full: ..."), one line, exit 2: the reserve is deleted first, so the
  manifest can still be written.
- Library warnings, per-step metrics and progress bars go to train.log, not the console (unless -v).
- With checkpointing off, no empty checkpoints/ folder is left behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rlbench_cli import signals
from rlbench_cli.console import quiet_libraries
from rlbench_cli.diskspace import Reserve, disk_full
from rlbench_cli.errors import UserError
from rlbench_cli.runlock import RunLock
from rlbench_cli.training.context import RunContext, attach_log, detach_log, is_main_process


@contextmanager
def train_guard(ctx: RunContext, *, console: Any, prepare: Callable[[], None]) -> Iterator[logging.Logger]:
    log = logging.getLogger("rlbench")
    run_dir, is_main = ctx.dir, is_main_process()

    def warn(message: str) -> None:
        log.warning(message)
        if console is not None:
            console.print(f"[yellow]{message}[/]", soft_wrap=True, highlight=False)

    # Under accelerate/torchrun only rank 0 owns the run folder (lock, checks, manifest); others only train.
    lock = RunLock(run_dir, "train", command=ctx.command, warn=warn).acquire() if is_main else None
    reserve = Reserve(run_dir)
    handler: logging.Handler | None = None
    restore: Callable[[], None] = lambda: None  # noqa: E731
    try:
        if is_main:
            prepare()
            reserve.create()  # room for the `failed` manifest when the disk fills up
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = attach_log(run_dir, "train.log" if is_main else f"train.rank{os.environ.get('RANK')}.log")
        handler.handleError = lambda record: None  # type: ignore[method-assign]  # a full disk: no traceback
        restore = quiet_libraries(handler)
        yield log
    except KeyboardInterrupt:
        why = "stopped by SIGTERM" if signals.received() else "interrupted by the user (Ctrl-C)"
        resume = f"rlbench train {run_dir / 'recipe.yaml'} --resume"
        if ctx.manifest:
            ctx.finish("interrupted", error=why, resume_command=resume)
        log.info("%s; resume with: %s", why, resume)
        if console is not None:
            console.print(f"[yellow]Interrupted ({why}). Resume with: {resume}[/]", soft_wrap=True)
        raise
    except UserError as e:
        if ctx.manifest:
            ctx.finish("failed", error=str(e))
        raise
    except BaseException as e:
        if disk_full(e):
            reserve.release()  # frees the room the `failed` manifest needs
            if ctx.manifest:
                ctx.finish("failed", error=f"disk full: {e}")
            raise UserError(f"the disk is full ({' '.join(str(e).split())[:200]})", where=str(run_dir),
                            fix=f"free some space, then: rlbench train {run_dir / 'recipe.yaml'} --resume") from None
        if ctx.manifest:
            ctx.finish("failed", error=f"{type(e).__name__}: {e}")
        log.exception("run failed")
        raise
    finally:
        reserve.release()
        if is_main and ctx.checkpoint_dir.is_dir() and not any(ctx.checkpoint_dir.iterdir()):
            ctx.checkpoint_dir.rmdir()  # checkpointing off: no empty checkpoints/ left behind
        restore()
        if handler is not None:
            detach_log(handler)
        if lock is not None:
            lock.release()
