"""The runner's wave-2 rollout step (training/rollout_signals.py) on a hand-made rollout, one process: which reward
trains, which rows enter the loss, and the advantages that reach TRL. No model: the trainer is a stand-in."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from rlbench_cli.config import recipe_from_dict
from rlbench_cli.training.rollout_signals import rollout_advantages, shape_rewards, wave2_metric_keys


class _Acc:
    process_index, num_processes, device = 0, 1, "cpu"

    def gather(self, x):  # noqa: ANN001, ANN201
        return x


def _trainer(algo: dict, n: int = 4, **rollout) -> SimpleNamespace:
    data = {"name": "t", "model": {"path": "x"}, "algorithm": algo,
            "rollout": {"prompts_per_batch": 2, "n": n, **rollout}, "optim": {"micro_batch_size": 2 * n},
            "reward": {"correct": 1.0, "incorrect": -1.0}}
    return SimpleNamespace(rb=recipe_from_dict(data, "test"), num_generations=n, accelerator=_Acc())


def _out(lengths: list[int], width: int = 4) -> dict:
    mask = torch.tensor([[1] * k + [0] * (width - k) for k in lengths])
    return {"completion_mask": mask, "prompt_ids": torch.zeros(len(lengths), 1, dtype=torch.long),
            "prompt_mask": torch.ones(len(lengths), 1, dtype=torch.long),
            "completion_ids": torch.zeros(len(lengths), width, dtype=torch.long)}


def test_gfpo_zero_keeps_filtered_rows_in_the_loss_with_advantage_zero() -> None:
    tr = _trainer({"name": "gfpo", "gfpo_keep": 2})
    rewards = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0])
    out = _out([1, 2, 3, 4, 4, 3, 2, 1])  # group 0 keeps rows 0, 1 (shortest); group 1 keeps rows 6, 7
    result, adv, info = rollout_advantages(tr, [], out, rewards, rewards == 1.0)
    s = 1 / math.sqrt(2)  # GRPO over the kept pair [1, -1]: +-1/std, std = sqrt(2)
    assert torch.allclose(adv, torch.tensor([s, -s, 0, 0, 0, 0, s, -s]), atol=1e-5)
    assert result.keep.tolist() == [True] * 8 and info["gfpo_kept_frac"] == 0.5
    tr = _trainer({"name": "gfpo", "gfpo_keep": 2, "gfpo_filtered": "drop"})
    result, adv, _ = rollout_advantages(tr, [], out, rewards, rewards == 1.0)
    assert result.keep.tolist() == [True, True, False, False, False, False, True, True]


def test_opo_and_lite_ppo_reach_the_loss() -> None:
    rewards = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0])
    out = _out([1, 3, 1, 3, 2, 2, 2, 2])
    _, adv, _ = rollout_advantages(_trainer({"name": "opo"}), [], out, rewards, rewards == 1.0)
    # group 0: b = (1 - 3 + 1 - 3) / 8 = -0.5 -> A = [1.5, -0.5, 1.5, -0.5]; group 1 all equal -> 0
    assert torch.allclose(adv, torch.tensor([1.5, -0.5, 1.5, -0.5, 0, 0, 0, 0]))
    # opo_baseline batch (LMOps "optimal_batch"): b = (1 - 3 + 1 - 3 + 8) / 16 = 0.25 over the whole batch
    _, adv, _ = rollout_advantages(_trainer({"name": "opo", "opo_baseline": "batch"}), [], out, rewards, rewards == 1.0)
    assert torch.allclose(adv, torch.tensor([0.75, -1.25, 0.75, -1.25, 0.75, 0.75, 0.75, 0.75]))
    _, adv, _ = rollout_advantages(_trainer({"name": "lite_ppo"}), [], out, rewards, rewards == 1.0)
    std = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0]).std().item()  # batch std of raw rewards
    assert torch.allclose(adv, torch.tensor([1, -1, 1, -1, 0, 0, 0, 0]) / (std + 1e-6), atol=1e-6)


def test_reinforce_pp_gives_token_advantages() -> None:
    tr = _trainer({"name": "reinforce_pp", "kl_in_reward_coef": 0.0})
    rewards = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0])
    out = _out([1, 2, 1, 2, 1, 1, 1, 1])
    _, adv, _ = rollout_advantages(tr, [], out, rewards, rewards == 1.0)
    assert adv.shape == (8, 4)
    assert torch.equal(adv[:, 2:], torch.zeros(8, 2))  # nothing outside the mask
    valid = adv[out["completion_mask"].bool()]
    assert valid.mean().abs() < 1e-6 and valid.pow(2).mean().sub(1).abs() < 1e-5  # whitened over tokens


def test_ttrl_trains_on_the_first_half_with_vote_rewards(monkeypatch: pytest.MonkeyPatch) -> None:
    import rlbench_cli.training.rollout_signals as rs

    tr = _trainer({"name": "ttrl"})
    assert tr.rb.algorithm.vote_train_n == 2  # n / 2
    texts = [r"\boxed{3}", r"\boxed{3}", r"\boxed{4}", "no box", r"\boxed{7}", r"\boxed{8}", "x", "y"]
    monkeypatch.setattr(rs, "_texts", lambda trainer, out: texts)
    tr.reward_funcs = [lambda **kw: None]  # no grader attached: rollout_signals starts an in-process one
    gold = torch.tensor([-1.0] * 8)  # the grader's (gold) rewards are ignored for training
    rewards, correct, info = shape_rewards(tr, _out([1] * 8), gold)
    # group 0 majority "3": rows 0, 1 agree; rows 2, 3 are outside the training subset (NaN)
    # group 1 answers "7", "8", "", "": the empty (unparsed) answer wins -> nothing to agree with, all incorrect
    assert rewards[:2].tolist() == [1.0, 1.0] and torch.isnan(rewards[2:4]).all()
    assert correct.tolist() == [True, True] + [False] * 6
    assert rewards[4:6].tolist() == [-1.0, -1.0] and torch.isnan(rewards[6:]).all()
    assert info["vote_share"] == pytest.approx((0.5 + 0.5) / 2)
    # TTRL's extraction: unboxed answers vote too ("The answer is 5", the last number), in canonical form
    texts[:4] = ["The answer is 5", r"\boxed{5.0}", r"\boxed{6}", "so 5 it is"]
    rewards, _, info = shape_rewards(tr, _out([1] * 8), gold)
    assert rewards[:2].tolist() == [1.0, 1.0]  # majority "5" (3 of 4); both trained rows agree with it
    assert info["vote_share"] == pytest.approx((0.75 + 0.5) / 2)


def test_kl_in_the_reward_subtracts_the_sequence_k1() -> None:
    tr = _trainer({"name": "grpo", "kl_coef": 0.0, "kl_in_reward_coef": 0.1})
    out = _out([2, 1, 2, 2, 2, 2, 2, 2])
    out["old_per_token_logps"] = torch.full((8, 4), -1.0)
    out["ref_per_token_logps"] = torch.full((8, 4), -2.0)  # k1 = 1 per valid token
    rewards, correct, info = shape_rewards(tr, out, torch.ones(8))
    assert torch.allclose(rewards, torch.tensor([0.8, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8], dtype=torch.float64))
    assert correct.all()  # correctness is judged before the KL shaping (group filters, RAFT, statistics)
    assert info["kl_reward"] == pytest.approx((2 * 7 + 1) / 8)


def test_metric_columns_follow_the_settings() -> None:
    assert wave2_metric_keys(_trainer({"name": "grpo"}).rb) == {}
    keys = wave2_metric_keys(_trainer({"name": "ttrl"}, temperature_schedule="linear", temperature_end=0.5).rb)
    assert set(keys) == {"vote_share", "temperature"}


def test_shuffle_groups_keeps_each_group_whole_and_in_order() -> None:
    from rlbench_cli.training.rollout_signals import shuffle_groups

    torch.manual_seed(3)
    batch = {"completion_mask": torch.arange(12).reshape(6, 2), "advantages": torch.arange(6.0),
             "names": list("abcdef"), "num_items_in_batch": torch.tensor(7.0)}
    out = shuffle_groups(batch, 2)
    groups = out["advantages"].view(3, 2)
    assert sorted(groups[:, 0].tolist()) == [0.0, 2.0, 4.0] and (groups[:, 1] - groups[:, 0] == 1).all()
    assert out["names"] == [chr(ord("a") + int(i)) for i in out["advantages"].tolist()]
    assert torch.equal(out["completion_mask"][:, 0] // 2, out["advantages"].long())
    assert out["num_items_in_batch"].item() == 7.0  # scalars untouched
    with pytest.raises(ValueError):
        shuffle_groups(batch, 4)
