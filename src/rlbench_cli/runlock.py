"""One writer per run folder: `RunLock(run_dir, "train")` held while train / eval write into it.

The lock is `<run>/.rlbench.lock`, held with flock (the kernel drops it when the holder dies, even by SIGKILL)
and holding JSON that names the holder: PID, host, command and start time. A second writer is refused with
one line naming the live process. A lock left by a dead process on this host is reported and taken over; a
lock from another host cannot be checked from here, so it is reported and the user decides.

    with RunLock(Path("results/grpo-s0"), "train", command="rlbench train ...", warn=print):
        ...  # write the run folder
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError

LOCK_NAME = ".rlbench.lock"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(owner: dict[str, Any]) -> str:
    what = owner.get("what") or "rlbench"
    return (f"rlbench {what} (PID {owner.get('pid', '?')} on host {owner.get('host', '?')}, "
            f"started {owner.get('started_at', '?')})")


def read_owner(run_dir: Path) -> dict[str, Any] | None:
    """Who holds (or last held) the lock of run_dir, or None."""
    try:
        data = json.loads((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _refusal(run_dir: Path) -> UserError:
    owner = read_owner(run_dir) or {}
    return UserError(f"run folder is in use by {_describe(owner)}", where=str(run_dir),
                     fix=f"wait for it to finish or stop it (kill {owner.get('pid', 'PID')}); "
                         "one writer per run folder")


def assert_not_locked(run_dir: Path) -> None:
    """Refuse (one line naming the process) if a live process holds run_dir's lock; takes nothing."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise _refusal(run_dir) from None
    finally:
        os.close(fd)


class RunLock:
    """Exclusive lock on a run folder; a context manager. `warn` receives the one-line stale-lock report."""

    def __init__(self, run_dir: Path, what: str, *, command: str = "", warn: Callable[[str], Any] | None = None):
        self.run_dir, self.what, self.command = Path(run_dir), what, command
        self.warn = warn or (lambda _msg: None)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None
        self.stale: dict[str, Any] | None = None

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # the file may be unlinked by a releasing holder between our open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(f"cannot lock the run folder ({e.strerror})", where=str(self.path),
                                    fix="put results on a filesystem that supports file locks") from None
                raise _refusal(self.run_dir) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
            time.sleep(0.01)
        else:
            raise UserError("could not lock the run folder (its lock file keeps changing)", where=str(self.path))
        self.fd = fd
        self._check_stale()
        record = {"what": self.what, "pid": os.getpid(), "host": socket.gethostname(),
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return self

    def _check_stale(self) -> None:
        """We hold the flock, so no live process on this host holds it; a leftover record means a holder died."""
        assert self.fd is not None
        try:
            raw = os.pread(self.fd, 1 << 16, 0)
            old = json.loads(raw) if raw.strip() else None
        except ValueError:
            old = None
        if not isinstance(old, dict) or old.get("pid") == os.getpid():
            return
        host = socket.gethostname()
        if old.get("host") not in (None, host):
            # flock is not reliable across hosts on every network filesystem: we cannot tell if it still runs.
            os.close(self.fd)  # keep the file: it is the other host's lock
            self.fd = None
            raise UserError(f"run folder is locked by {_describe(old)}; rlbench cannot check a process on "
                            "another host", where=str(self.run_dir),
                            fix=f"if that run has stopped, delete {self.path} and rerun")
        pid = old.get("pid")
        state = "is no longer running" if isinstance(pid, int) and not pid_alive(pid) else "no longer holds it"
        self.stale = old
        self.warn(f"stale lock in {self.run_dir}: {_describe(old)} {state}; taking it over")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def clear_run_folder(run_dir: Path) -> None:
    """Delete a run folder's contents (for --overwrite) but keep the lock file this process holds."""
    import shutil

    for path in Path(run_dir).iterdir():
        if path.name == LOCK_NAME:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
