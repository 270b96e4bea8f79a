"""PPO (learned critic + GAE) on the TRL runner: the pure helpers, the n = 1 config workaround, training steps
that move policy and critic, critic warmup, the critic update on a fixed batch, and checkpoint / resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import metrics_without_timing, tiny_recipe, train_dict

from rlbench_cli.algorithms.losses import masked_whiten
from rlbench_cli.config import recipe_from_dict
from rlbench_cli.errors import UserError
from rlbench_cli.records import read_jsonl
from rlbench_cli.training.context import METRIC_KEYS, RunContext
from rlbench_cli.training.ppo import (
    CRITIC_OPTIMIZER,
    CRITIC_WEIGHTS,
    PPO_EXTRA_KEYS,
    build_ppo_trainer,
    check_ppo_recipe,
    load_critic,
    ppo_config,
    token_level_rewards,
    whiten_global,
)

# ------------------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("lengths", "rewards", "expected_pos"),
    [
        ([3, 1, 5], [1.0, -1.0, 0.5], [2, 0, 4]),
        ([5, 2], [-1.0, 1.0], [4, 1]),
        ([0, 4], [1.0, 1.0], [None, 3]),  # an empty completion gets no reward
        ([2, 3], [float("nan"), 1.0], [None, 2]),  # a missing reward gives zeros
    ],
)
def test_token_level_rewards_put_reward_on_last_token(lengths, rewards, expected_pos) -> None:
    t = 5
    mask = torch.tensor([[1] * n + [0] * (t - n) for n in lengths])
    out = token_level_rewards(torch.tensor(rewards), mask)
    assert out.shape == (len(lengths), t)
    for row, (pos, r) in enumerate(zip(expected_pos, rewards, strict=True)):
        if pos is None:
            assert torch.all(out[row] == 0)
        else:
            assert out[row, pos] == pytest.approx(r)
            assert out[row].abs().sum() == pytest.approx(abs(r))


def test_whiten_global_on_one_process_matches_masked_whiten() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, generator=gen) * 3 + 2
    mask = (torch.rand(4, 7, generator=gen) > 0.3).float()
    out = whiten_global(x, mask, reduce_sum=lambda t: t)
    torch.testing.assert_close(out, masked_whiten(x, mask) * mask)
    sel = out[mask.bool()]
    assert sel.mean().abs() < 1e-5 and sel.std() == pytest.approx(1.0, abs=1e-4)
    assert torch.all(out[~mask.bool()] == 0)


# ------------------------------------------------------------------------------------------- config


def _ppo(model_dir: Path, out_dir: Path, algo: dict | None = None, **sections) -> dict:
    """tiny_recipe for PPO (its first parameter is named `algorithm`, so PPO keys come in as `algo`)."""
    data = tiny_recipe("ppo", model_dir, out_dir, **sections)
    data["algorithm"].update(algo or {})
    return data


def _recipe(model_dir: Path, out_dir: Path, algo: dict | None = None, **sections):
    return recipe_from_dict(_ppo(model_dir, out_dir, algo, **sections), "test")


def test_ppo_config_accepts_one_generation(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    from rlbench_cli.training.rl import grpo_config

    recipe = _recipe(tiny_random_model_dir, tmp_path)
    run = RunContext(recipe, tmp_path / "run", "pytest")
    args = ppo_config(recipe, run, max_steps=2)
    assert args.num_generations == 1
    assert args.generation_batch_size == recipe.rollout.prompts_per_batch
    # Why PPOConfig exists: TRL's config still rejects a group of one. If this stops raising, drop the shim.
    with pytest.raises(ValueError, match="at least 2 generations"):
        grpo_config(recipe, run, max_steps=2)


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"algo": {"dynamic_sampling": True}}, "algorithm.dynamic_sampling"),
        ({"model": {"dtype": "float16"}}, "model.dtype"),
    ],
)
def test_unsupported_ppo_settings_are_user_errors(override: dict, where: str, tiny_random_model_dir: Path,
                                                  tmp_path: Path) -> None:
    recipe = _recipe(tiny_random_model_dir, tmp_path, **override)
    with pytest.raises(UserError) as err:
        check_ppo_recipe(recipe)
    assert err.value.where == where


# ------------------------------------------------------------------------------------------- training


def _critic_state_at_init(model_dir: Path, recipe) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_critic(str(model_dir), recipe).state_dict().items()}


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


def _policy_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


@pytest.mark.slow
def test_ppo_steps_move_policy_and_critic(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    data = _ppo(tiny_random_model_dir, tmp_path, algo={"critic_lr": 1e-3}, optim={"max_steps": 4},
                output={"checkpoint_every": 4})
    run_dir = train_dict(data)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert set(METRIC_KEYS) | set(PPO_EXTRA_KEYS) <= set(row)
        for key in ("loss", "value_loss", "value_clip_frac", "entropy", "kl", "clip_frac", "reward_mean"):
            assert row[key] is not None and math.isfinite(row[key]), (key, row)
        # n = 1: a "group" is one response.
        assert row["frac_all_correct"] == pytest.approx(row["accuracy"])
        assert row["frac_all_wrong"] == pytest.approx(1 - row["accuracy"])
    policy_before, policy_after = _policy_tensors(tiny_random_model_dir), _policy_tensors(run_dir / "model")
    assert _changed(policy_before, policy_after), "policy parameters did not change"
    recipe = recipe_from_dict(data, "test")
    critic_after = torch.load(run_dir / "checkpoints" / "checkpoint-4" / CRITIC_WEIGHTS, weights_only=True)
    changed = _changed(_critic_state_at_init(tiny_random_model_dir, recipe), critic_after)
    assert "score.weight" in changed and any(k.startswith("backbone.") for k in changed), changed


@pytest.mark.slow
def test_critic_warmup_trains_only_the_critic(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    data = _ppo(tiny_random_model_dir, tmp_path, algo={"critic_lr": 1e-3, "critic_warmup_steps": 2},
                optim={"max_steps": 2}, output={"checkpoint_every": 2})
    run_dir = train_dict(data)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert all(r["value_loss"] is not None and math.isfinite(r["value_loss"]) for r in rows)
    before, after = _policy_tensors(tiny_random_model_dir), _policy_tensors(run_dir / "model")
    assert not _changed(before, after), "the actor moved during critic warmup"
    critic_after = torch.load(run_dir / "checkpoints" / "checkpoint-2" / CRITIC_WEIGHTS, weights_only=True)
    recipe = recipe_from_dict(data, "test")
    assert _changed(_critic_state_at_init(tiny_random_model_dir, recipe), critic_after)


def test_value_loss_decreases_on_a_fixed_batch(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    from rlbench_cli.training.data import load_rows

    recipe = _recipe(tiny_random_model_dir, tmp_path, algo={"critic_lr": 3e-3})
    run = RunContext(recipe, tmp_path / "run", "pytest")
    rows, _ = load_rows(recipe)
    trainer, _, reward_fn, _ = build_ppo_trainer(recipe, run, None, rows=rows,
                                                 model_path=str(tiny_random_model_dir))
    try:
        trainer.model.train()
        batch = trainer._generate_and_score_completions([trainer.train_dataset[i] for i in range(4)])
        b, t = batch["completion_ids"].shape
        for key in ("advantages", "old_values", "returns"):
            assert batch[key].shape == (b, t), key  # per-token, as TRL's loss accepts
        trainer.current_gradient_accumulation_steps = 1
        for _ in range(8):
            trainer._critic_micro_step(batch)
            trainer._critic_optimizer_step()
        losses = trainer._metrics["train"]["rb/value_loss"]
        assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
        assert losses[-1] < 0.8 * losses[0], losses
    finally:
        reward_fn.close() if hasattr(reward_fn, "close") else None


@pytest.mark.slow
def test_resume_restores_the_critic_and_matches_an_uninterrupted_run(tiny_random_model_dir: Path,
                                                                     tmp_path: Path) -> None:
    from rlbench_cli.training.run import run_training

    common = {"algo": {"critic_lr": 1e-3}, "output": {"checkpoint_every": 2}}
    full = train_dict(_ppo(tiny_random_model_dir, tmp_path / "full", optim={"max_steps": 4}, **common))
    part = train_dict(_ppo(tiny_random_model_dir, tmp_path / "part", optim={"max_steps": 2}, **common))
    ckpt = part / "checkpoints" / "checkpoint-2"
    assert (ckpt / CRITIC_WEIGHTS).is_file() and (ckpt / CRITIC_OPTIMIZER).is_file()
    manifest = json.loads((part / "manifest.json").read_text())
    manifest["status"] = "interrupted"  # pretend the 4-step run stopped after its step-2 checkpoint
    (part / "manifest.json").write_text(json.dumps(manifest))
    recipe = _recipe(tiny_random_model_dir, tmp_path / "part", optim={"max_steps": 4}, **common)
    run_training(recipe, command="pytest --resume", resume=True)
    assert "restored the PPO critic" in (part / "train.log").read_text()
    resumed = read_jsonl(part / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    # Step 3 starts a new rollout whose values come from the restored critic: it must match the run that never
    # stopped (a fresh critic would give other advantages, hence another loss).
    assert metrics_without_timing(resumed) == metrics_without_timing(read_jsonl(full / "metrics.jsonl"))
    torch.testing.assert_close(_policy_tensors(part / "model"), _policy_tensors(full / "model"))


def test_critic_state_round_trip_and_missing_state(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    from rlbench_cli.training.data import load_rows

    recipe = _recipe(tiny_random_model_dir, tmp_path)
    run = RunContext(recipe, tmp_path / "run", "pytest")
    rows, _ = load_rows(recipe)
    trainer, _, reward_fn, _ = build_ppo_trainer(recipe, run, None, rows=rows,
                                                 model_path=str(tiny_random_model_dir))
    try:
        with pytest.raises(UserError, match="no PPO critic"):
            trainer.load_critic_state(tmp_path / "empty")
        # Round trip: what save_critic writes, load_critic_state restores exactly.
        critic = trainer.accelerator.unwrap_model(trainer.critic)
        saved = {k: v.clone() for k, v in critic.state_dict().items()}
        trainer.save_critic(tmp_path / "ck")
        with torch.no_grad():
            for p in critic.parameters():
                p.add_(1.0)
        trainer.load_critic_state(tmp_path / "ck")
        assert not _changed(saved, critic.state_dict())
    finally:
        reward_fn.close() if hasattr(reward_fn, "close") else None


@pytest.mark.slow
def test_two_process_cpu_ppo_run(tiny_random_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A real 2-process `accelerate launch` (gloo): the DDP-wrapped critic, its no_sync accumulation and the
    cross-process advantage whitening run, and the log has the same keys and rollout size as one process."""
    import socket
    import sys

    import yaml
    from helpers import FIXTURES

    from rlbench_cli.training import launch
    from rlbench_cli.training.run import run_training

    data = tmp_path / "train.jsonl"
    rows = [{"problem": f"{i}+{i}=", "answer": str(2 * i)} for i in range(24)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = _ppo(tiny_random_model_dir, tmp_path / "results", algo={"critic_lr": 1e-3},
                  data={"source": "jsonl", "path": str(data)}, optim={"micro_batch_size": 1, "max_steps": 2})
    recipe["data"].pop("split")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    single = run_training(recipe_from_dict({**recipe, "name": "one"}, "r.yaml"), command="pytest")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(FIXTURES) + ":" + ":".join(sys.path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    launch.run_launch(launch.launch_command(Path("r.yaml"), ["name=two"], num_processes=2, deepspeed=None,
                                            cpu=True, main_process_port=port))
    double = tmp_path / "results" / "two-s0"
    one_rows, two_rows = read_jsonl(single / "metrics.jsonl"), read_jsonl(double / "metrics.jsonl")
    assert len(one_rows) == len(two_rows) == 2
    assert [sorted(r) for r in one_rows] == [sorted(r) for r in two_rows]
    assert one_rows[0]["samples"] == two_rows[0]["samples"] == recipe["rollout"]["prompts_per_batch"]
    for row in two_rows:
        assert row["value_loss"] is not None and math.isfinite(row["value_loss"])
    assert json.loads((double / "manifest.json").read_text())["status"] == "completed"
    assert (double / "model" / "model.safetensors").is_file()
