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
    # v1 prompts, the data this mechanism test was written for: on v2 prompts every step logged clip_frac 0.
    v1 = {"source": "testbed", "split": "v1/train", "prompt_template": "plain", "max_prompts": 32}
    data = tiny_recipe("raft_pp", tiny_random_model_dir, tmp_path, data=v1, optim={"lr": 5e-2, "max_steps": 4})
    rows = read_jsonl(train_dict(data) / "metrics.jsonl")
    assert any(r["clip_frac"] and r["clip_frac"] > 0 for r in rows), [r["clip_frac"] for r in rows]
    # RAFT takes the same steps with no ratio: nothing to clip.
    rows = read_jsonl(train_dict(tiny_recipe("raft", tiny_random_model_dir, tmp_path / "raft", data=v1,
                                             optim={"lr": 5e-2, "max_steps": 4})) / "metrics.jsonl")
    assert all(not r["clip_frac"] for r in rows)


# Wave-2 training settings usable with any RL algorithm (docs/algorithms.md): the same checks as above.
SETTINGS = {
    "kl_reward": {"algorithm": {"kl_coef": 0.0, "kl_in_reward_coef": 0.01}},
    "temperature_schedule": {"rollout": {"temperature": 1.2, "temperature_schedule": "linear", "temperature_end": 0.8},
                             "optim": {"max_steps": 4}},
    "ref_reset": {"algorithm": {"ref_reset_every": 2}, "optim": {"max_steps": 4}},
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_setting_trains_and_is_deterministic(setting: str, tiny_random_model_dir: Path, tmp_path: Path) -> None:
    runs = []
    for attempt in ("a", "b"):
        data = tiny_recipe("grpo", tiny_random_model_dir, tmp_path / attempt)
        for section, values in SETTINGS[setting].items():
            data[section].update(values)
        runs.append(train_dict(data))
    rows = read_jsonl(runs[0] / "metrics.jsonl")
    for row in rows:
        assert set(METRIC_KEYS) <= set(row) and row["loss"] is not None and math.isfinite(row["loss"])
    assert weights_hash(runs[0] / "model") != weights_hash(tiny_random_model_dir)
    assert metrics_without_timing(rows) == metrics_without_timing(read_jsonl(runs[1] / "metrics.jsonl"))
    assert weights_hash(runs[0] / "model") == weights_hash(runs[1] / "model")
    if setting == "kl_reward":
        assert all(r["kl_reward"] is not None for r in rows)
    if setting == "temperature_schedule":  # 2 rollouts of 2 steps; the second starts at step 2 of 4: 1.2 - 0.4 * 2/3
        assert [r["temperature"] for r in rows] == pytest.approx([1.2, 1.2, 1.2 - 0.4 * 2 / 3, 1.2 - 0.4 * 2 / 3])
    if setting == "ref_reset":
        # reset after step 2: the next rollout's policy is the reference, so its first step's KL is ~0
        assert rows[1]["kl"] > 0 and abs(rows[2]["kl"]) < 1e-6, [r["kl"] for r in rows]
