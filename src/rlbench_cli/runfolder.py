"""Checks on every run folder a `rlbench train` will write, done before the first run starts (`--seeds 1,0`
must not train seed 1 and then stop on seed 0's folder). The run itself repeats them under the folder lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError
from rlbench_cli.runlock import assert_not_locked


def check_run_folder(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    manifest = run_dir / "manifest.json"
    assert_not_locked(run_dir)  # a live writer is refused in one line; a stale lock is reported by the run
    if not manifest.exists():
        if resume:
            raise UserError("no run to resume", where=str(run_dir), fix="drop --resume to start a new run")
        return
    try:
        status = json.loads(manifest.read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if resume and status == "completed":
        raise UserError("this run already completed; nothing to resume", where=str(run_dir),
                        fix="use --overwrite to train it again, or another output.run_name")
    if not resume and not overwrite:
        raise UserError(f"run folder already exists (status: {status})", where=str(run_dir),
                        fix="add --resume to continue it, --overwrite to start again, or set output.run_name=NAME")


def check_run_folders(recipes: Iterable[Any], *, resume: bool, overwrite: bool) -> None:
    for recipe in recipes:
        check_run_folder(Path(recipe.output.dir) / recipe.run_name, resume=resume, overwrite=overwrite)
