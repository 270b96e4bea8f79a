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

    def texts_of(trainer, out):  # noqa: ANN001, ANN202
        assert out["completion_mask"].shape == (8, 4), "TTRL must vote on this rollout's completions"
        return texts

    monkeypatch.setattr(rs, "_texts", texts_of)
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


# ------------------------------------------------------------------------- settings reaching the estimators
# Each row: recipe settings, rewards (None: no reward), lengths, the advantages and keep mask by hand. Mutation
# testing found these settings unchecked (std_eps, drop_all_*, which base estimator filters for OPO / Lite-PPO /
# RiskPO / ReMax / REINFORCE++, GFPO's reward-less row).
_S43 = math.sqrt(4 / 3)  # unbiased std of [1, -1, 1, -1]
_LITE = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0]).std().item()  # Lite-PPO: batch std of raw rewards
TABLE = {
    # GRPO: (r - group mean) / (group std + std_eps), std_eps 1 (not the default 1e-6)
    "grpo_std_eps": ({"name": "grpo", "std_eps": 1.0}, [1, -1, 1, -1, 1, 1, 1, -1], [2] * 8,
                     [1 / (_S43 + 1), -1 / (_S43 + 1)] * 2 + [0.25, 0.25, 0.25, -0.75], [True] * 8),
    "lite_ppo_std_eps": ({"name": "lite_ppo", "std_eps": 1.0}, [1, -1, 1, -1, 1, 1, 1, -1], [2] * 8,
                         [x / (_LITE + 1) for x in (1, -1, 1, -1, 0.5, 0.5, 0.5, -1.5)], [True] * 8),
    # Reinforce (A = r) with a whole-group rejection, any filter_mode
    "drop_all_wrong": ({"name": "reinforce", "drop_all_wrong": True}, [1, -1, 1, -1] + [-1] * 4, [2] * 8,
                       [1, -1, 1, -1, 0, 0, 0, 0], [True] * 4 + [False] * 4),
    "drop_all_correct": ({"name": "reinforce", "drop_all_correct": True}, [1, -1, 1, -1] + [1] * 4, [2] * 8,
                         [1, -1, 1, -1, 0, 0, 0, 0], [True] * 4 + [False] * 4),
    # filter_mode drop: OPO and Lite-PPO (group-mean baselines) drop the all-equal group; RiskPO's bundle baseline
    # and ReMax's greedy baseline (0.5 here) give it a signal, so they keep it.
    "opo_drop": ({"name": "opo", "filter_mode": "drop"}, [1, -1, 1, -1] + [1] * 4, [1, 3, 1, 3] + [2] * 4,
                 [1.5, -0.5, 1.5, -0.5, 0, 0, 0, 0], [True] * 4 + [False] * 4),
    "lite_ppo_drop": ({"name": "lite_ppo", "filter_mode": "drop"}, [1, -1, 1, -1] + [1] * 4, [2] * 8, None,
                      [True] * 4 + [False] * 4),
    "remax_drop": ({"name": "remax", "filter_mode": "drop"}, [1, -1, 1, -1] + [1] * 4, [2] * 8,
                   [0.5, -1.5, 0.5, -1.5] + [0.5] * 4, [True] * 8),
    "riskpo_drop": ({"name": "riskpo", "filter_mode": "drop"}, [1, -1, 1, -1] + [1] * 4, [2] * 8, None, [True] * 8),
    # GFPO reward_per_token: the 2 of 4 with the highest r / |o| ([1, -.25, -1, -.5]: rows 0, 1), not the shortest
    # (rows 0, 2); GRPO over the kept pair, the others kept with A = 0
    "gfpo_reward_per_token": ({"name": "gfpo", "gfpo_keep": 2, "gfpo_metric": "reward_per_token"},
                              [1, -1, -1, -1] + [1] * 4, [1, 4, 1, 2] + [2] * 4,
                              [1 / math.sqrt(2), -1 / math.sqrt(2), 0, 0] + [0] * 4, [True] * 8),
    # GFPO (shortest 2 of 4, filtered rows kept with A = 0): a reward-less row stays out of the loss
    "gfpo_no_reward": ({"name": "gfpo", "gfpo_keep": 2}, [1, -1, None, 1, 1, -1, 1, -1], [1, 2, 4, 3, 1, 2, 3, 4],
                       [1 / math.sqrt(2), -1 / math.sqrt(2), 0, 0, 1 / math.sqrt(2), -1 / math.sqrt(2), 0, 0],
                       [True, True, False, True] + [True] * 4),
}


@pytest.mark.parametrize("case", list(TABLE))
def test_estimator_settings_reach_the_advantages(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    import rlbench_cli.training.rollout_signals as rs

    algo, rewards, lengths, want_adv, want_keep = TABLE[case]
    monkeypatch.setattr(rs, "greedy_rewards", lambda trainer, inputs: torch.full((8,), 0.5, dtype=torch.float64))
    r = torch.tensor([float("nan") if x is None else float(x) for x in rewards])
    result, adv, _ = rollout_advantages(_trainer(algo), [], _out(lengths), r, r == 1.0)
    if want_adv is not None:
        assert torch.allclose(adv.double(), torch.tensor(want_adv, dtype=torch.float64), atol=1e-5), adv
    assert result.keep.tolist() == want_keep


def test_riskpo_gets_the_recipes_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """RiskPO's bundle, risk levels, mix weight, baseline and credit reach riskpo_advantage (a dropped keyword would
    run its defaults), on the grouped rewards; unset (None) they fall back to the paper's values."""
    import rlbench_cli.training.rollout_signals as rs

    calls = []
    monkeypatch.setattr(rs, "riskpo_advantage", lambda grouped, **kw: calls.append((grouped, kw)) or grouped * 0)
    rewards = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0])
    tr = _trainer({"name": "riskpo", "riskpo_bundle": 2, "riskpo_alpha": 0.3, "riskpo_beta": 0.8,
                   "riskpo_mix_weight": 2.0, "riskpo_natural_baseline": False, "riskpo_credit": "score"})
    rollout_advantages(tr, [], _out([2] * 8), rewards, rewards == 1.0)
    unset = dict.fromkeys(["riskpo_bundle", "riskpo_alpha", "riskpo_beta", "riskpo_mix_weight",
                           "riskpo_natural_baseline", "riskpo_credit"])
    tr.rb = tr.rb.model_copy(update={"algorithm": tr.rb.algorithm.model_copy(update=unset)})
    rollout_advantages(tr, [], _out([2] * 8), rewards, rewards == 1.0)
    (grouped, kw_set), (_, kw_unset) = calls
    assert grouped.tolist() == rewards.view(2, 4).tolist()
    assert kw_set == {"bundle": 2, "alpha": 0.3, "beta": 0.8, "mix_weight": 2.0, "natural_baseline": False,
                      "credit": "score"}
    assert kw_unset == {"bundle": 5, "alpha": 0.2, "beta": 0.9, "mix_weight": 1.5, "natural_baseline": True,
                        "credit": "std"}


@pytest.mark.parametrize(("reduce", "want"), [("sum", [-0.5 * k for k in (1, 2, 3, 4, 4, 3, 2, 1)]),
                                              ("mean", [-0.5] * 8)])
def test_em_rl_sequence_log_prob_reward(reduce: str, want: list[float]) -> None:
    """EM-RL seq_logprob: the training reward is the sum / mean of the response's token log-probs under the sampling
    policy (here TRL's old log-probs, -0.5 per token), replacing the grader's reward."""
    tr = _trainer({"name": "em_rl", "reward_source": "seq_logprob", "em_reduce": reduce})
    out = _out([1, 2, 3, 4, 4, 3, 2, 1])
    out["old_per_token_logps"] = torch.full((8, 4), -0.5)
    rewards, _, _ = shape_rewards(tr, out, torch.ones(8))
    assert rewards.tolist() == want


class _Acc2:
    """Process `index` of 2: gather puts the partner's `other` rows beside this process's, in process order; reduce
    records what this process sends and adds the partner's `partner_sums` (recorded from the partner's own call)."""

    num_processes, device = 2, "cpu"

    def __init__(self, index: int, other: torch.Tensor, partner_sums: torch.Tensor) -> None:
        self.process_index, self.other, self.partner_sums, self.sent = index, other, partner_sums, None

    def gather(self, x):  # noqa: ANN001, ANN201
        return torch.cat([x, self.other] if self.process_index == 0 else [self.other, x])

    def reduce(self, x, reduction):  # noqa: ANN001, ANN201
        assert reduction == "sum"
        self.sent = x
        return x + self.partner_sums


def test_reinforce_pp_whitens_over_every_process_tokens() -> None:
    """REINFORCE++ on 2 processes (4 rows each): the token whitening uses the mean and variance of all 8 rows'
    tokens (gathered counts, sums and squares), so each process's advantages equal its rows of the one-process
    result, and differ from whitening its own tokens only."""
    lengths = [1, 2, 3, 4, 4, 3, 2, 1]
    rewards = torch.tensor([2.0, -1.0, 1.0, -1.0, 1.0, 0.5, -1.0, 1.0])  # not all +-1: E[r^2] != 1
    algo = {"name": "reinforce_pp", "kl_in_reward_coef": 0.0}
    _, want, _ = rollout_advantages(_trainer(algo), [], _out(lengths), rewards, rewards == 1.0)
    halves = [_out(lengths[:4]), _out(lengths[4:])]
    counts = [h["completion_mask"].sum(1).to(torch.float64) for h in halves]
    tr = _trainer(algo)
    sent = []
    for i in (0, 1):
        tr.accelerator = _Acc2(i, counts[1 - i], torch.zeros(3, dtype=torch.float64))
        rollout_advantages(tr, [], halves[i], rewards, rewards == 1.0)
        sent.append(tr.accelerator.sent)
    for i in (0, 1):
        tr.accelerator = _Acc2(i, counts[1 - i], sent[1 - i])
        _, adv, _ = rollout_advantages(tr, [], halves[i], rewards, rewards == 1.0)
        assert torch.allclose(adv, want[4 * i: 4 * i + 4], atol=1e-6), i
    _, alone, _ = rollout_advantages(_trainer(algo), [], halves[0], rewards[:4], rewards[:4] == 1.0)
    assert not torch.allclose(alone, want[:4], atol=1e-3), "both halves have the global statistics: vacuous"


def test_reinforce_pp_leaves_reward_less_rows_out_of_the_whitening() -> None:
    """REINFORCE++: a row without a reward (keep False) gets advantage 0 and its tokens count in no statistic.
    One token per row, kept returns [1, -1, -1, 1, 1, 1, 1]: mean 3/7, biased var 40/49."""
    tr = _trainer({"name": "reinforce_pp", "kl_in_reward_coef": 0.0})
    nan = float("nan")
    rewards = torch.tensor([1.0, -1.0, nan, -1.0, 1.0, 1.0, 1.0, 1.0])
    result, adv, _ = rollout_advantages(tr, [], _out([1] * 8), rewards, rewards == 1.0)
    assert result.keep.tolist() == [True, True, False] + [True] * 5
    up, down = 4 / math.sqrt(40), -10 / math.sqrt(40)  # (r - 3/7) / sqrt(40/49)
    assert torch.allclose(adv[:, 0], torch.tensor([up, down, 0, down, up, up, up, up]), atol=1e-5)
    assert torch.equal(adv[:, 1:], torch.zeros(8, 3))
