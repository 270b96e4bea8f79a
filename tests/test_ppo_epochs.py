"""optim.ppo_epochs: passes over each rollout (TRL num_iterations); steps per rollout = mini-batches × epochs."""

from __future__ import annotations

import pytest

from rlbench_cli.config import load_recipe
from rlbench_cli.errors import UserError
from rlbench_cli.training.batching import plan


def test_epochs_multiply_optimizer_steps_not_generation_steps() -> None:
    one = load_recipe("recipes/tiny/raft_pp.yaml")
    two = load_recipe("recipes/tiny/raft_pp.yaml", ["optim.ppo_epochs=2"])
    p1, p2 = plan(one), plan(two)
    assert two.steps_per_rollout == 2 * one.steps_per_rollout == 2 * one.mini_batches_per_rollout
    assert p2["optimizer_steps_per_rollout"] == 2 * p1["optimizer_steps_per_rollout"]
    assert p2["trl_steps_per_generation"] == p1["trl_steps_per_generation"]  # TRL reuses the buffer per epoch


def test_epochs_refused_outside_the_rl_runner() -> None:
    with pytest.raises(UserError, match="ppo_epochs"):
        load_recipe("recipes/tiny/dpo.yaml", ["optim.ppo_epochs=2"])
