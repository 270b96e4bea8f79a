"""The console a person reads: rich on a terminal; whole lines off one (a log file, SLURM, CI).

- `setup_console(console)` gives a console that is not a terminal an unlimited width, so tables are never
  truncated and YAML and commands are never wrapped.
- `progress(console, description, total)` is a rich bar on a terminal and `PlainProgress` otherwise: one plain
  line every few seconds ("math500: 40/120 (33%) 0:12 elapsed, ETA 0:24") and one at the end.
- `quiet_libraries(log_handler, verbose)` sends transformers / TRL / Python warnings and library progress bars
  to the run's log file instead of the console; `-v` keeps them on the console too.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import IO, Any

UNLIMITED = 100_000
_VERBOSE = {"on": False}


def set_verbose(on: bool) -> None:
    _VERBOSE["on"] = on


def verbose() -> bool:
    return _VERBOSE["on"]


def setup_console(console: Any) -> None:
    """Off a terminal (even with COLUMNS set, as SLURM and CI often do), lines are never cut or wrapped."""
    if not console.is_terminal:
        console.width = UNLIMITED


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class PlainProgress:
    """Progress as one plain line every `every_s` seconds (and at the end), for logs that are not terminals."""

    def __init__(self, file: IO[str] | None, description: str, total: int, *, completed: int = 0,
                 every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.file, self.description, self.total = file, description, total
        self.every_s, self.clock = every_s, clock
        self.start = clock()
        self.first = completed
        self.completed = completed
        self.info = ""
        self.last_print: float | None = None
        self.last_printed = -1

    def _line(self) -> str:
        now = self.clock()
        elapsed = now - self.start
        done = self.completed - self.first
        pct = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        eta = ""
        if done > 0 and self.total:
            eta = f", ETA {_clock(elapsed / done * max(0, self.total - self.completed))}"
        info = f"  {self.info}" if self.info else ""
        return f"{self.description}: {self.completed}/{self.total}{pct} {_clock(elapsed)} elapsed{eta}{info}"

    def _emit(self) -> None:
        if self.file is not None:
            print(self._line(), file=self.file, flush=True)
        self.last_printed = self.completed

    def update(self, completed: int | None = None, *, advance: int = 0, info: str | None = None) -> None:
        self.completed = (self.completed if completed is None else completed) + advance
        if info is not None:
            self.info = info
        now = self.clock()
        if self.last_print is None or now - self.last_print >= self.every_s:
            self.last_print = now
            self._emit()

    def close(self) -> None:
        if self.last_printed != self.completed:
            self._emit()


class Progress:
    """One task's progress: rich on a terminal, PlainProgress off one; nothing when console is None."""

    def __init__(self, console: Any, description: str, total: int, completed: int = 0, unit: str = "") -> None:
        self.rich: Any = None
        self.plain: PlainProgress | None = None
        if console is None:
            return
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=console, transient=False,
            )
            self.task = self.rich.add_task(description, total=total, completed=completed, info="")
        else:
            self.plain = PlainProgress(console.file, description + (f" {unit}" if unit else ""), total,
                                       completed=completed)

    def __enter__(self) -> Progress:
        if self.rich is not None:
            self.rich.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.rich is not None:
            self.rich.stop()
        if self.plain is not None:
            self.plain.close()

    def update(self, completed: int | None = None, *, advance: int = 0, info: str | None = None) -> None:
        if self.rich is not None:
            fields = {"info": info} if info is not None else {}
            if completed is not None:
                self.rich.update(self.task, completed=completed, **fields)
            else:
                self.rich.update(self.task, advance=advance, **fields)
        if self.plain is not None:
            self.plain.update(completed, advance=advance, info=info)


LIBRARY_LOGGERS = ("transformers", "trl", "accelerate", "peft", "datasets", "huggingface_hub", "py.warnings")


def quiet_libraries(handler: logging.Handler | None) -> Callable[[], None]:
    """Route library logs, Python warnings and library progress bars to `handler` (the run's log file) instead
    of the console, unless -v. Returns a function that undoes it."""
    logging.captureWarnings(True)
    undo: list[Callable[[], None]] = [lambda: logging.captureWarnings(False)]
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        old = logger.propagate
        if handler is not None:
            logger.addHandler(handler)
            undo.append(lambda logger=logger: logger.removeHandler(handler))
        if not verbose():
            logger.propagate = False
            undo.append(lambda logger=logger, old=old: setattr(logger, "propagate", old))
    if "transformers" in sys.modules or _importable("transformers"):
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        if not verbose():
            hf_logging.disable_default_handler()
            hf_logging.disable_progress_bar()
            undo.append(hf_logging.enable_default_handler)
            undo.append(hf_logging.enable_progress_bar)
        hf_logging.set_verbosity_info() if verbose() else hf_logging.set_verbosity_warning()
        undo.append(lambda: hf_logging.set_verbosity(level))
    if not verbose():
        try:
            from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

            disable_progress_bars()
            undo.append(enable_progress_bars)
        except ImportError:
            pass

    def restore() -> None:
        for fn in reversed(undo):
            fn()

    return restore


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
