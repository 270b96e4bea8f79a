"""A full disk ends a run with one line, exit 2, and a manifest that says so.

`Reserve(run_dir)` writes a small file (`.rlbench-reserve`, 1 MiB) when a run starts. When a write fails with
ENOSPC, `release()` deletes it, which frees exactly the room the final `failed` manifest and log line need.
`disk_full(exc)` recognises ENOSPC also where a library wraps it (torch's writer, safetensors).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

RESERVE_NAME = ".rlbench-reserve"
RESERVE_BYTES = 1 << 20
_MESSAGES = ("no space left on device", "disk quota exceeded", "file write failed", "enospc")


def disk_full(exc: BaseException | None) -> bool:
    """Whether an exception (or one it was raised from) is a full disk or an exceeded quota."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(m in str(exc).lower() for m in _MESSAGES):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class Reserve:
    """A placeholder file whose space is given back when the disk fills up."""

    def __init__(self, folder: Path, size: int = RESERVE_BYTES) -> None:
        self.path = Path(folder) / RESERVE_NAME
        self.size = size

    def create(self) -> Reserve:
        try:
            with open(self.path, "wb") as f:
                f.write(b"\0" * self.size)  # real blocks, not a sparse file: they must be there to give back
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            self.path.unlink(missing_ok=True)
            raise
        return self

    def release(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
