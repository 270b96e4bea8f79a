"""What surrounds one `rlbench eval`: the run-folder lock, a disk-space reserve, and a status that says how
the eval ended (`<root>/eval/status.json`; for a base model also its manifest.json).

    with eval_guard(target, command="rlbench eval ...", console=console):
        ...  # generate, grade, write summaries

Ctrl-C and SIGTERM end as `interrupted` with the exact command that resumes; a full disk ends as `failed`
with one line and exit 2 (the reserve is deleted first, so the status can still be written).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rlbench_cli import signals
from rlbench_cli.diskspace import Reserve, disk_full
from rlbench_cli.errors import UserError
from rlbench_cli.records import atomic_write_json, atomic_write_text, now_iso
from rlbench_cli.runlock import RunLock


@contextmanager
def _eval_log(path: Any) -> Iterator[logging.Logger]:
    """eval.log gets rlbench's lines and the libraries' warnings (off the console unless -v)."""
    from rlbench_cli.console import quiet_libraries

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.handleError = lambda record: None  # type: ignore[method-assign]  # a full disk must not print tracebacks
    log = logging.getLogger("rlbench.eval")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    restore = quiet_libraries(handler)
    try:
        yield log
    finally:
        restore()
        log.removeHandler(handler)
        handler.close()


@contextmanager
def eval_guard(tgt: Any, *, command: str, console: Any) -> Iterator[None]:
    def warn(message: str) -> None:
        if console is not None:
            console.print(f"[yellow]{message}[/]", soft_wrap=True, highlight=False)

    status_path = tgt.root / "eval" / "status.json"
    record: dict[str, Any] = {"status": "running", "command": command, "started_at": now_iso()}

    def write(status: str, **extra: Any) -> None:
        record.update(status=status, **extra)
        atomic_write_json(status_path, record)
        if tgt.kind == "base":
            atomic_write_json(tgt.root / "manifest.json", {
                "kind": "base", "name": tgt.name, "label": tgt.label, "recipe_name": tgt.recipe_name,
                "model": tgt.model_ref, "model_sha256": tgt.model_sha256, "status": status,
                **({"error": extra["error"]} if extra.get("error") else {}),
            })

    with RunLock(tgt.root, "eval", command=command, warn=warn), _eval_log(tgt.root / "eval" / "eval.log") as log:
        manifest = tgt.root / "manifest.json"
        previous = manifest.read_bytes() if tgt.kind == "base" and manifest.is_file() else None
        reserve = Reserve(tgt.root).create()
        try:
            write("running")
            yield
            write("completed", ended_at=now_iso())
        except UserError as e:  # bad input found before any sample was made: the model's status is unchanged
            record.update(status="failed", error=str(e), ended_at=now_iso())
            atomic_write_json(status_path, record)
            if previous is not None:
                atomic_write_text(manifest, previous.decode("utf-8", errors="replace"))
            elif tgt.kind == "base":
                write("failed", error=str(e))
            raise
        except KeyboardInterrupt:
            why = "stopped by SIGTERM" if signals.received() else "interrupted by the user (Ctrl-C)"
            write("interrupted", ended_at=now_iso(), error=why, resume=command)
            log.info("%s; resume with: %s", why, command)
            if console is not None:
                console.print(f"[yellow]Interrupted ({why}); finished samples are kept. Resume with: {command}[/]",
                              soft_wrap=True, highlight=False)
            raise
        except BaseException as e:
            if disk_full(e):
                reserve.release()
                log.error("disk full: %s", e)
                write("failed", ended_at=now_iso(), error=f"disk full: {e}")
                raise UserError(f"the disk is full ({e})", where=str(tgt.root),
                                fix=f"free some space, then resume with: {command}") from None
            write("failed", ended_at=now_iso(), error=f"{type(e).__name__}: {e}")
            raise
        finally:
            reserve.release()
