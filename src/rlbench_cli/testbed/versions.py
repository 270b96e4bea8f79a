"""Testbed versions by name: `v2` (the default since issue 11) and `v1` (kept so old runs stay reproducible).

Names users write: model path `testbed` (default version) or `testbed:v1`; testbed data split `train` (default
version) or `v1/train`; eval benchmarks `testbed_easy` (default version) or `testbed_v1_easy`.
"""

from __future__ import annotations

from rlbench_cli.errors import UserError
from rlbench_cli.testbed import task as task_v1
from rlbench_cli.testbed import task_v2

VERSIONS = ("v1", "v2")
DEFAULT_VERSION = "v2"
_TASKS = {"v1": task_v1, "v2": task_v2}


def check_version(version: str | None) -> str:
    v = version or DEFAULT_VERSION
    if v not in VERSIONS:
        raise UserError(f"unknown testbed version {v!r}", where="testbed", fix=f"use one of {', '.join(VERSIONS)}")
    return v


def split_version(name: str) -> tuple[str, str]:
    """'v1/train' -> ('v1', 'train'); 'train' -> (DEFAULT_VERSION, 'train')."""
    if "/" in name:
        version, split = name.split("/", 1)
        return check_version(version), split
    return DEFAULT_VERSION, name


def model_version(path: str) -> str | None:
    """'testbed' -> DEFAULT_VERSION, 'testbed:v1' -> 'v1', anything else -> None (not the testbed)."""
    if path == "testbed":
        return DEFAULT_VERSION
    if path.startswith("testbed:"):
        return check_version(path.split(":", 1)[1])
    return None


def task_version(version: str | None = None) -> str:
    return _TASKS[check_version(version)].TASK_VERSION


def eval_splits(version: str | None = None) -> tuple[str, ...]:
    return _TASKS[check_version(version)].EVAL_SPLITS


def all_splits(version: str | None = None) -> tuple[str, ...]:
    return tuple(_TASKS[check_version(version)].SPLITS)


def generate_split(split: str, n: int | None = None, version: str | None = None) -> list[dict]:
    """Rows of one split; `split` may carry its version ('v1/train'), else `version` (default: the default)."""
    if "/" in split:
        version, split = split_version(split)
    return _TASKS[check_version(version)].generate_split(split, n)
