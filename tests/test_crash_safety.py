"""A writer killed mid-write, or a rename that fails, leaves the previous file intact (records.atomic_write_*).

Catches atomic_write_text turned into a plain write: the SIGKILL test kills a subprocess while it writes a large
file in small pieces (the kill lands after the first pieces reached the page cache), the os.replace test makes the
final rename fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlbench_cli import records

OLD = {"status": "completed", "steps": 40}

# The child writes a 256 MiB text through atomic_write_text; the parent kills it as soon as some file in the
# folder has grown past 1 MiB, i.e. in the middle of the write, whichever file the implementation writes to.
CHILD = """
import sys
from rlbench_cli import records
text = '{"status": "running", "pad": "' + "x" * (256 << 20) + '"}\\n'
records.atomic_write_text(sys.argv[1], text)
"""


def _plain_writes_detected(path: Path) -> None:
    assert json.loads(path.read_text()) == OLD, "the previous file was overwritten or torn"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_during_atomic_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    records.atomic_write_json(target, OLD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(records.__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target)], env=env)
    try:
        deadline = time.monotonic() + 60
        while max(p.stat().st_size for p in tmp_path.iterdir()) < 1 << 20:
            assert child.poll() is None, f"child exited before the kill with {child.returncode}"
            assert time.monotonic() < deadline, "child never started writing"
            time.sleep(0.0005)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    _plain_writes_detected(target)
    leftovers = [p for p in tmp_path.iterdir() if p.name != "manifest.json"]
    assert all(p.name.startswith(".manifest.json.") for p in leftovers), leftovers  # only a hidden temp file


def test_failed_rename_keeps_the_previous_file_and_cleans_up(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "summary.json"
    records.atomic_write_json(target, OLD)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        records.atomic_write_json(target, {"status": "running", "pad": "x" * 100_000})
    _plain_writes_detected(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"], "temp file left behind"


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    """An exception while writing (disk full, Ctrl-C) never reaches the target."""
    target = tmp_path / "metrics.jsonl"
    records.atomic_write_text(target, "old\n")
    real = records.os.fsync

    def failing_fsync(fd):
        real(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(records.os, "fsync", failing_fsync)
    with pytest.raises(KeyboardInterrupt):
        records.atomic_write_text(target, "new\n" * 1000)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_atomic_write_follows_the_umask_and_creates_folders(tmp_path: Path) -> None:
    umask = os.umask(0o027)
    try:
        target = tmp_path / "run" / "eval" / "math500" / "summary.json"  # folders that do not exist yet
        records.atomic_write_json(target, OLD)
    finally:
        os.umask(umask)
    assert json.loads(target.read_text()) == OLD
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # the process's umask at import, not mkstemp's 0600
