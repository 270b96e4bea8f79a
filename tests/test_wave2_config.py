"""Wave-2 recipe settings: the dry run prints each method's resolved choices, and impossible combinations are one
clear error (exit 2) naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from rlbench_cli.config import ALGORITHM_DEFAULTS, load_recipe

REPO = Path(__file__).resolve().parents[1]
WAVE2 = ("reinforce_pp", "reinforce_pp_baseline", "lite_ppo", "cispo", "sapo", "gmpo", "kl_cov", "clip_cov", "remax",
         "gvpo", "riskpo", "opo", "gfpo", "ttrl", "em_rl", "em_ft")


@pytest.mark.parametrize("name", WAVE2)
def test_each_method_has_a_tiny_and_a_paper_recipe_with_its_defaults(name: str) -> None:
    for folder in ("tiny", "wave2"):
        path = REPO / "recipes" / folder / f"{name}.yaml"
        algo = load_recipe(path).algorithm
        written = yaml.safe_load(path.read_text())["algorithm"]
        for key, value in ALGORITHM_DEFAULTS[name].items():
            if key not in ("runner", "label") and key not in written:  # not overridden by the recipe
                assert getattr(algo, key) == value, (folder, key)
        assert algo.loss_agg is not None and algo.policy_loss is not None


def test_dry_run_prints_the_resolved_choices() -> None:
    code, out, _ = run_cli("train", "recipes/tiny/kl_cov.yaml", "--dry-run")
    assert code == 0
    for line in ("policy_loss: kl_cov", "cov_ratio: 0.002", "cov_kl_coef: 1.0", "dynamic_sampling: true",
                 "kl_coef: 0.0"):
        assert line in out, line
    code, out, _ = run_cli("train", "recipes/tiny/ttrl.yaml", "--dry-run")
    assert "reward_source: majority_vote" in out and "vote_train_n: 4" in out  # n = 8 -> half


@pytest.mark.parametrize(("override", "key"), [
    ("algorithm.gfpo_keep=1", "gfpo_keep"),
    ("algorithm.gfpo_keep=99", "gfpo_keep"),
    ("algorithm.ref_reset_every=3", "ref_reset_every"),          # not a multiple of the 2 steps per rollout
    ("rollout.temperature_schedule=linear", "temperature_end"),
    ("algorithm.policy_loss=gvpo_x", "policy_loss"),
    ("algorithm.vote_train_n=9", "vote_train_n"),
    ("algorithm.drop_all_wrong=true", "reward_source"),
    ("optim.micro_batch_size=4", "whole groups"),   # GVPO: divides the step, but not a multiple of n = 8
    ("algorithm.opo_baseline=batch", "opo_baseline"),  # an OPO setting on GRPO
])
def test_impossible_settings_are_one_line_errors(override: str, key: str) -> None:
    recipe = {"gfpo": "gfpo", "vote": "ttrl", "drop": "em_rl", "micro": "gvpo"}.get(
        next((k for k in ("gfpo", "vote", "drop", "micro") if k in override), ""), "grpo")
    recipe = f"recipes/tiny/{recipe}.yaml"
    code, out, err = run_cli("validate", recipe, "--set", override)
    assert code == 2, (out, err)
    assert key in err and "Traceback" not in err


def test_checkpoints_must_fall_on_reference_resets() -> None:
    code, _, err = run_cli("validate", "recipes/tiny/prorl.yaml", "--set", "output.checkpoint_every=4")
    assert code == 2 and "ref_reset_every" in err
    code, _, err = run_cli("validate", "recipes/tiny/prorl.yaml", "--set", "model.lora.enabled=true")
    assert code == 2 and "LoRA" in err


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").rglob("*.yaml")), ids=lambda p: p.stem)
def test_the_command_a_recipe_opens_with_passes_the_launch_checks(recipe: Path) -> None:
    # e.g. a dynamic-sampling recipe (DAPO's filter: KL-Cov, Clip-Cov) must not open with --num-processes 8
    import re

    from rlbench_cli.training.launch import check_processes

    first = recipe.read_text().splitlines()[0]
    found = re.search(r"--num-processes\s+(\d+)", first)
    check_processes(load_recipe(recipe), int(found.group(1)) if found else 1)
