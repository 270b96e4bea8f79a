"""Issue 14 §1: the defects an outside audit found in the glue around the (correct) formulas, one test each.

Each test failed before its fix. References: verl recipe/dapo (dapo_ray_trainer.py, run_dapo_qwen2.5_32b.sh),
verl core_algos (compute_policy_loss_gspo, kl_penalty), AMAP-ML/GPG open-r1/src/open_r1/gpg_trainer.py and
train.sh, RLHFlow/Online-DPO-R1 run_iter_dpo.sh, RLHFlow/Minimal-RL verl/trainer/config/ppo_trainer.yaml.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import run_cli, tiny_recipe

from rlbench_cli.config import ALGORITHM_DEFAULTS, load_recipe, recipe_from_dict
from rlbench_cli.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PAPER_RECIPES = sorted([*REPO.glob("recipes/*.yaml"), *REPO.glob("recipes/paper-1.5b/*.yaml")])


def _recipe(tmp_path: Path, *overrides: str):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nalgorithm: {name: grpo}\n")
    return load_recipe(path, list(overrides))


# ------------------------------------------------------------------ validate: group baselines need a group


@pytest.mark.parametrize("overrides", [
    ["algorithm.name=gpg"], ["algorithm.name=grpo"], ["algorithm.name=rloo"], ["algorithm.name=dapo"],
    ["algorithm.name=reinforce", "algorithm.estimator=grpo"], ["algorithm.name=raft_pp", "algorithm.estimator=rloo"],
])
def test_validate_refuses_a_group_baseline_with_one_response(tmp_path: Path, overrides: list[str]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nalgorithm: {name: grpo}\n")
    args = [f"--set={o}" for o in [*overrides, "rollout.n=1", "optim.micro_batch_size=1"]]
    code, out, err = run_cli("validate", str(path), *args)
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 2, out + err
    assert len(lines) == 1 and "rollout.n" in lines[0], lines


@pytest.mark.parametrize("name", ["reinforce", "raft", "raft_pp", "ppo"])
def test_one_response_is_fine_without_a_group_baseline(tmp_path: Path, name: str) -> None:
    assert _recipe(tmp_path, f"algorithm.name={name}", "rollout.n=1", "optim.micro_batch_size=1").rollout.n == 1


@pytest.mark.parametrize("name", ["dapo", "gpg", "dpo"])
def test_one_process_algorithms_are_refused_before_launching(tmp_path: Path, name: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nalgorithm: {{name: {name}}}\n")
    code, out, err = run_cli("train", str(path), "--launcher", "accelerate", "--num-processes", "2", "--dry-run")
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "--num-processes" in lines[0], out + err


# ------------------------------------------------------------------ low_var_kl: clamped like current verl


def test_low_var_kl_gradient_is_finite_far_from_the_reference() -> None:
    from rlbench_cli.algorithms.losses import kl_penalty

    logp = torch.tensor([0.0, -100.0, -1.0, 30.0], requires_grad=True)
    ref = torch.tensor([0.0, 0.0, -1.5, 0.0])
    kl = kl_penalty(logp, ref, "low_var_kl")
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all(), logp.grad

    def by_hand(lp: float, rp: float) -> float:  # verl: d = clamp(ref - logp, ±20); clamp(e^d - d - 1, ±10)
        d = max(-20.0, min(20.0, rp - lp))
        return max(-10.0, min(10.0, math.exp(d) - d - 1.0))

    expected = [by_hand(a, b) for a, b in zip(logp.tolist(), ref.tolist(), strict=True)]
    assert kl.tolist() == pytest.approx(expected, rel=1e-6)
    assert logp.grad[2].item() == pytest.approx(1.0 - math.exp(-0.5), rel=1e-5)  # d/dlogp (e^d - d - 1)


# ------------------------------------------------------------------ GSPO aggregation, DAPO dual clip


def test_gspo_aggregates_as_sequence_mean_of_token_means(tmp_path: Path) -> None:
    from rlbench_cli.algorithms.losses import aggregate_loss

    assert _recipe(tmp_path, "algorithm.name=gspo").algorithm.loss_agg == "seq_mean_token_mean"
    loss = torch.tensor([[1.0, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0]])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    assert aggregate_loss(loss, mask, "seq_mean_token_mean").item() == pytest.approx((1.0 + 3.0) / 2)


def test_dapo_dual_clip_follows_the_dapo_recipe_not_verls_default(tmp_path: Path) -> None:
    r = _recipe(tmp_path, "algorithm.name=dapo")
    assert r.algorithm.dual_clip_c == 10.0  # verl recipe/dapo: actor.clip_ratio_c=10.0 (verl's default is 3)
    assert _recipe(tmp_path, "algorithm.name=dapo", "algorithm.dual_clip_c=0").algorithm.dual_clip_c is None


# ------------------------------------------------------------------ DAPO soft overlong penalty


def test_dapo_resolves_the_soft_overlong_penalty_like_its_recipe(tmp_path: Path) -> None:
    a = _recipe(tmp_path, "algorithm.name=dapo", "rollout.max_new_tokens=20480").algorithm
    # run_dapo_qwen2.5_32b.sh: overlong_buffer.len 4096 of max_response_length 20480, factor 1.0, no filter
    assert (a.overlong_buffer_len, a.overlong_penalty_factor, a.overlong_filter) == (4096, 1.0, False)
    g = _recipe(tmp_path).algorithm
    assert g.overlong_buffer_len == 0


def test_ppo_refuses_the_overlong_penalty(tmp_path: Path) -> None:
    from rlbench_cli.training.ppo import check_ppo_recipe

    recipe = _recipe(tmp_path, "algorithm.name=ppo", "rollout.n=1", "optim.micro_batch_size=1",
                     "algorithm.overlong_buffer_len=8")
    with pytest.raises(UserError, match="overlong_buffer_len"):
        check_ppo_recipe(recipe)


# ------------------------------------------------------------------ entropy bonus, iterative DPO settings


@pytest.mark.parametrize("recipe", PAPER_RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_paper_recipes_state_their_entropy_and_dpo_choices(recipe: Path) -> None:
    data = yaml.safe_load(recipe.read_text())
    algo = data["algorithm"]
    runner = ALGORITHM_DEFAULTS[algo["name"]]["runner"]
    if runner in ("rl", "ppo"):
        assert "entropy_coef" in algo, f"{recipe}: say which entropy bonus (code 0.001, rlbench default 0)"
    if runner == "dpo":
        assert {"dpo_label_smoothing", "dpo_epochs"} <= set(algo), recipe


def test_readme_paper_vs_code_table_says_what_the_paper_recipes_use() -> None:
    values = {yaml.safe_load(p.read_text())["algorithm"].get("entropy_coef") for p in PAPER_RECIPES
              if ALGORITHM_DEFAULTS[yaml.safe_load(p.read_text())["algorithm"]["name"]]["runner"] in ("rl", "ppo")}
    assert len(values) == 1, f"paper recipes disagree on the entropy bonus: {values}"
    rows = {line.split("|")[1].strip(): line.split("|") for line in (REPO / "README.md").read_text().splitlines()
            if line.startswith("| ")}
    assert f"`algorithm.entropy_coef: {values.pop()}`" in rows["entropy bonus"][4]  # the "rlbench recipes" column
    dpo = yaml.safe_load((REPO / "recipes/dpo.yaml").read_text())["algorithm"]
    assert f"label smoothing {dpo['dpo_label_smoothing']}" in rows["iterative DPO"][4]
    assert f"{dpo['dpo_epochs']} epochs per iteration" in rows["iterative DPO"][4]


def test_iterative_dpo_exposes_label_smoothing_and_epochs(tmp_path: Path) -> None:
    from rlbench_cli.training.batching import dpo_batching, dpo_plan
    from rlbench_cli.training.context import RunContext
    from rlbench_cli.training.dpo import dpo_config

    base = _recipe(tmp_path, "algorithm.name=dpo", "rollout.prompts_per_batch=4", "optim.micro_batch_size=2")
    two = _recipe(tmp_path, "algorithm.name=dpo", "rollout.prompts_per_batch=4", "optim.micro_batch_size=2",
                  "algorithm.dpo_label_smoothing=0.1", "algorithm.dpo_epochs=2")
    assert dpo_plan(two, 40)["max_steps"] == 2 * dpo_plan(base, 40)["max_steps"]
    cfg = dpo_config(two, RunContext(two, tmp_path / "run", "t"), 0, dpo_batching(two), 10)
    assert cfg.label_smoothing == 0.1 and cfg.max_steps == 10
    with pytest.raises(UserError, match="dpo_label_smoothing"):
        _recipe(tmp_path, "algorithm.name=dpo", "algorithm.dpo_label_smoothing=0.5")


# ------------------------------------------------------------------ dynamic sampling / GPG resampling


def test_prompt_stream_without_refills_is_trls_repeat_sampler() -> None:
    from trl.trainer.utils import RepeatSampler

    from rlbench_cli.training.resampling import PromptStream

    ours = PromptStream(list(range(10)), prompts_per_chunk=3, mini_repeat=2, repeat=2, shuffle=True, seed=5)
    trl = RepeatSampler(list(range(10)), mini_repeat_count=2, batch_size=3, repeat_count=2, shuffle=True, seed=5)
    assert [list(ours) for _ in range(3)] == [list(trl) for _ in range(3)]
    assert len(ours) == len(trl)


def test_prompt_stream_refills_from_prompts_not_yet_used_in_the_pass() -> None:
    from rlbench_cli.training.resampling import PromptStream

    stream = PromptStream(list(range(12)), prompts_per_chunk=2, mini_repeat=1, repeat=1, shuffle=True, seed=0)
    main = iter(stream)
    first = [next(main), next(main)]
    refills = [stream.take() for _ in range(3)]
    rest = list(main)
    used = first + [i for chunk in refills for i in chunk] + rest
    assert sorted(used[:12]) == list(range(12)), "every prompt once per pass, refills included"
    assert len(rest) == 2 * 6 - 2, "the Trainer's epoch keeps its nominal length"


@pytest.mark.parametrize(("valid", "want", "frac", "chosen", "padded"), [
    ([[True, False, False, True]], 4, 0.5, [(0, 0), (0, 3), (0, 1), (0, 2)], 2),  # GPG: half valid is enough
    ([[True, False], [False, True]], 2, 1.0, [(0, 0), (1, 1)], 0),  # DAPO: valid groups only
    ([[True, True], [True, False]], 2, 1.0, [(0, 0), (0, 1)], 0),  # extra valid groups are left out (verl)
    ([[False, False], [False, True]], 2, 1.0, [(1, 1), (1, 0)], 1),  # pad: all-equal of the last round first
])
def test_choose_groups(valid: list[list[bool]], want: int, frac: float, chosen: list[tuple[int, int]],
                       padded: int) -> None:
    from rlbench_cli.training.resampling import choose_groups, enough_groups

    assert choose_groups(valid, want) == (chosen, padded)
    assert enough_groups(valid, want, frac) == (padded == 0 or frac < 1.0)


def _resampling_trainer(model_dir: Path, tmp_path: Path, name: str, valid_ids: set[int], **algo: Any):
    """An RLBenchGRPOTrainer over 24 prompts (4 per rollout, n = 2, in order) whose reward gives a group unequal
    rewards iff its problem_id is in valid_ids; returns (trainer, first batch, prompts seen per reward call)."""
    from datasets import Dataset

    from rlbench_cli.training.context import RunContext
    from rlbench_cli.training.policy import load_policy
    from rlbench_cli.training.rl import RLBenchGRPOTrainer, grpo_config

    data = tiny_recipe(name, model_dir, tmp_path, data={"shuffle": False},
                       rollout={"prompts_per_batch": 4, "n": 2, "max_new_tokens": 4},
                       optim={"mini_batch_prompts": 4, "micro_batch_size": 8, "max_steps": 1})
    data["algorithm"].update(algo)
    data["reward"] = {}
    recipe = recipe_from_dict(data, "t")
    seen: list[list[int]] = []

    def reward(prompts, completions, problem_id, **kw):
        seen.append(sorted(set(problem_id)))
        return [(1.0 if k % 2 == 0 else -1.0) if p in valid_ids else -1.0 for k, p in enumerate(problem_id)]

    model, tok = load_policy(str(model_dir), recipe)
    ds = Dataset.from_list([{"prompt": f"{i}+1=", "answer": str(i + 1), "problem_id": i} for i in range(24)])
    trainer = RLBenchGRPOTrainer(model=model, args=grpo_config(recipe, RunContext(recipe, tmp_path / "run", "t"), 1),
                                 train_dataset=ds, processing_class=tok, reward_funcs=[reward], rb_recipe=recipe)
    trainer.model.train()
    batches = iter(trainer.get_train_dataloader())
    return trainer, next(batches), seen, batches


def test_gpg_resamples_until_half_the_groups_have_signal(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    trainer, batch, seen, batches = _resampling_trainer(tiny_random_model_dir, tmp_path, "gpg", {0, 9, 10})
    assert trainer.rb.algorithm.min_valid_frac == 0.5  # AMAP-ML/GPG open-r1 train.sh --min_inverse_alpha 0.5
    trainer._generate_and_score_completions(batch)
    # prompts 0-3 (1 valid), 4-7 already fetched by the Trainer's loader, so the refill draws 8-11 (2 valid)
    assert seen == [[0, 1, 2, 3], [8, 9, 10, 11]]
    stats = trainer._rb_rollout
    assert stats["rollout_rounds"] == 2 and stats["padded_groups"] == 1  # groups 0, 9, 10 + all-equal 8
    assert stats["frac_all_wrong"] == 0.25
    assert sorted({row["problem_id"] for row in next(batches)}) == [4, 5, 6, 7]  # the pass goes on, no repeat


def test_overlong_penalty_shapes_the_training_reward_not_correctness(tiny_random_model_dir: Path,
                                                                      tmp_path: Path) -> None:
    trainer, batch, _, _ = _resampling_trainer(tiny_random_model_dir, tmp_path, "grpo", {0},
                                               overlong_buffer_len=4, overlong_penalty_factor=2.0)
    trainer._generate_and_score_completions(batch)
    stats = trainer._rb_rollout
    # rewards: group 0 = [1, -1], the other three all -1 -> mean -0.75, accuracy 1/8; max_new_tokens 4 = buffer,
    # so each response gets 2 * (0 - L) / 4: the mean reward drops by response_len / 2
    assert stats["accuracy"] == 1 / 8
    assert stats["reward_mean"] == pytest.approx(-0.75 - stats["response_len"] / 2, abs=1e-6)


def test_dapo_keeps_sampling_unused_prompts_then_errors(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    trainer, batch, seen, _ = _resampling_trainer(tiny_random_model_dir, tmp_path, "dapo", {0, 9, 10, 13},
                                                  max_resample_rounds=3)
    trainer._generate_and_score_completions(batch)
    assert seen == [[0, 1, 2, 3], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert trainer._rb_rollout["rollout_rounds"] == 3 and trainer._rb_rollout["padded_groups"] == 0

    trainer, batch, seen, _ = _resampling_trainer(tiny_random_model_dir, tmp_path, "dapo", {0},
                                                  max_resample_rounds=3)
    with pytest.raises(UserError, match="max_resample_rounds"):
        trainer._generate_and_score_completions(batch)
    assert len({p for ids in seen for p in ids}) == 12, "every round drew prompts not used before"

    trainer, batch, seen, _ = _resampling_trainer(tiny_random_model_dir, tmp_path, "dapo", {0},
                                                  max_resample_rounds=3, resample_exhausted="pad")
    trainer._generate_and_score_completions(batch)
    assert trainer._rb_rollout["padded_groups"] == 3 and trainer._rb_rollout["frac_all_wrong"] == 0.75


@pytest.mark.slow
def test_dynamic_sampling_resume_matches_an_uninterrupted_run(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    """The prompt stream (cursor, prefetched chunk, epoch position) is saved in each checkpoint."""
    import json

    from helpers import metrics_without_timing, train_dict, weights_hash

    from rlbench_cli.config import recipe_from_dict
    from rlbench_cli.records import read_jsonl
    from rlbench_cli.training.run import run_training

    def recipe(out: Path, steps: int) -> dict[str, Any]:
        data = tiny_recipe("dapo", tiny_random_model_dir, out, optim={"max_steps": steps},
                           output={"checkpoint_every": 2}, reward={"function": "toy_reward:one_in_three_constant"})
        data["algorithm"].update(resample_exhausted="pad")
        return data

    full = train_dict(recipe(tmp_path / "full", 4))
    rows = read_jsonl(full / "metrics.jsonl")
    assert max(r["rollout_rounds"] for r in rows) > 1, "the test needs refills before and after the checkpoint"
    part = train_dict(recipe(tmp_path / "part", 2))
    manifest = json.loads((part / "manifest.json").read_text())
    (part / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    run_training(recipe_from_dict(recipe(tmp_path / "part", 4), "t"), command="pytest", resume=True)
    assert metrics_without_timing(read_jsonl(part / "metrics.jsonl")) == metrics_without_timing(rows)
    assert weights_hash(part / "model") == weights_hash(full / "model")
