"""Every algorithm trains a few steps from a tiny model: finite loss, parameters changed, full metrics schema,
and the same seed gives the same numbers and weights (a different seed does not)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import metrics_without_timing, tiny_recipe, train_dict, weights_hash

from rlbench_cli.config import ALGORITHMS
from rlbench_cli.records import read_jsonl
from rlbench_cli.training.context import METRIC_KEYS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_trains_and_is_deterministic(algorithm: str, tiny_random_model_dir: Path, tmp_path: Path) -> None:
    runs = []
    for attempt in ("a", "b"):
        data = tiny_recipe(algorithm, tiny_random_model_dir, tmp_path / attempt)
        runs.append(train_dict(data))
    first, second = runs
    rows = read_jsonl(first / "metrics.jsonl")
    assert len(rows) >= 2
    for row in rows:
        assert set(METRIC_KEYS) <= set(row), f"missing metric keys: {set(METRIC_KEYS) - set(row)}"
        assert row["loss"] is not None and math.isfinite(row["loss"])
    assert weights_hash(first / "model") != weights_hash(tiny_random_model_dir), "parameters did not change"
    assert metrics_without_timing(rows) == metrics_without_timing(read_jsonl(second / "metrics.jsonl"))
    assert weights_hash(first / "model") == weights_hash(second / "model")


def test_different_seed_gives_different_numbers(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    a = train_dict(tiny_recipe("grpo", tiny_random_model_dir, tmp_path / "a"))
    b = train_dict(tiny_recipe("grpo", tiny_random_model_dir, tmp_path / "b", seed=1))
    assert weights_hash(a / "model") != weights_hash(b / "model")
    assert metrics_without_timing(read_jsonl(a / "metrics.jsonl")) != metrics_without_timing(
        read_jsonl(b / "metrics.jsonl"))


def test_off_policy_steps_clip(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    """RAFT++ with 2 optimizer steps per rollout: the second step is off-policy and clipping fires."""
    data = tiny_recipe("raft_pp", tiny_random_model_dir, tmp_path, optim={"lr": 5e-2, "max_steps": 4})
    rows = read_jsonl(train_dict(data) / "metrics.jsonl")
    assert any(r["clip_frac"] and r["clip_frac"] > 0 for r in rows), [r["clip_frac"] for r in rows]
    # RAFT takes the same steps with no ratio: nothing to clip.
    rows = read_jsonl(train_dict(tiny_recipe("raft", tiny_random_model_dir, tmp_path / "raft",
                                             optim={"lr": 5e-2, "max_steps": 4})) / "metrics.jsonl")
    assert all(not r["clip_frac"] for r in rows)
