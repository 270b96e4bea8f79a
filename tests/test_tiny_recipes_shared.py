"""Apples to apples: every tiny recipe shares GRPO's data, prompts, sampling, batch sizes, optimisation, rewards and
eval; only the algorithm block differs, plus the declared exceptions below (each with the reason its recipe states).

The second-wave tiny recipes once kept the v1 testbed's optimisation (16 prompts, lr 2e-5, 2 steps per rollout)
after the core recipes moved to v2's, so a wave-2 row and a GRPO row in one `rlbench compare` table differed in
more than the algorithm. This test fails on any such drift.
Run: `pytest tests/test_tiny_recipes_shared.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tiny"
NOT_COMPARED = ("name", "description", "label")  # identity, not settings

# recipe -> {flattened key: why it may differ from GRPO's}
EXCEPTIONS: dict[str, dict[str, str]] = {
    "gpg": {"optim.lr": "GPG scales advantages by batch / nonzero (>= 1): half the RL lr"},
    "opo": {"optim.mini_batch_prompts": "OPO is exact on-policy: one optimizer step per rollout"},
    "em_inf": {k: "EM-INF is an eval-time option: GRPO training, EM-INF decoding" for k in (
        "eval.em_inf", "eval.em_inf_threshold", "eval.em_inf_kl_weight", "eval.em_inf_lr", "eval.em_inf_steps")},
    "temperature_schedule": {k: "the method is a rollout temperature schedule (1.2 -> 0.8)" for k in (
        "rollout.temperature", "rollout.temperature_schedule", "rollout.temperature_end")},
    "ppo": {k: "PPO samples one response per prompt (n = 1) and keeps GRPO's 256 responses per rollout" for k in (
        "rollout.n", "rollout.prompts_per_batch", "optim.mini_batch_prompts")},
}
OWN_SETUP = ("sft", "dpo")  # supervised / iterative-DPO runners: their own data and schedule, not GRPO's


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "algorithm":
            out.update(_flat(v, f"{prefix}{k}."))
        elif k != "algorithm":
            out[prefix + k] = v
    return out


def _load(name: str) -> dict[str, Any]:
    return _flat(yaml.safe_load((TINY / f"{name}.yaml").read_text(encoding="utf-8")))


RECIPES = sorted(p.stem for p in TINY.glob("*.yaml") if p.stem not in (*OWN_SETUP, "grpo"))


@pytest.mark.parametrize("name", RECIPES)
def test_tiny_recipe_differs_from_grpo_only_in_its_algorithm(name: str) -> None:
    grpo, recipe = _load("grpo"), _load(name)
    allowed = EXCEPTIONS.get(name, {})
    drift = {k: (grpo.get(k), recipe.get(k)) for k in set(grpo) | set(recipe)
             if k not in NOT_COMPARED and k not in allowed and grpo.get(k) != recipe.get(k)}
    assert not drift, f"recipes/tiny/{name}.yaml differs from grpo.yaml outside its algorithm block: {drift}"
    unused = [k for k in allowed if grpo.get(k) == recipe.get(k)]
    assert not unused, f"declared exceptions that no longer differ (remove them): {unused}"


def test_every_tiny_recipe_is_covered() -> None:
    assert len(RECIPES) + len(OWN_SETUP) + 1 == len(list(TINY.glob("*.yaml")))
    assert set(EXCEPTIONS) <= set(RECIPES)
