"""What the RL runner does beyond the advantages, through the real RLBenchGRPOTrainer with stubbed rewards: the
rollout metrics every algorithm logs (rl.py `_generate_and_score_completions`: reward mean, accuracy, lengths,
group fractions, throughput, sample and token counts), DAPO's soft overlong penalty with and without the overlong
filter, the rollout temperature schedule, and the recipe's settings reaching the policy loss (`_policy_loss`).

Mutation testing (tests/mutation_run.py, group rl_wiring) found each of these unchecked: a metric renamed, counted
per rollout instead of over the run, or taken over the wrong rows; the penalty's sign or the filter's stand-in
length flipped; the schedule never applied; a loss setting dropped. The random model never ends a completion
early, so `_cut` gives the rollout the lengths a real one has (EOS after k tokens) before the runner reads them.
Values are hand-computed.
"""

from __future__ import annotations

import pytest
import torch
from test_rl_wiring import N, StubReward, _clock, _recipe, _rollout, _trainer

from rlbench_cli.algorithms.advantages import compute_advantages

LENGTHS = [6, 5, 4, 3, 2, 1, 6, 3]  # 30 tokens


def _cut(monkeypatch, lengths: list[int]) -> None:
    """Each scored rollout's completions end after `lengths` tokens (0: TRL's overlong filter masked it out)."""
    from rlbench_cli.training.rl import RLBenchGRPOTrainer

    score = RLBenchGRPOTrainer._score_rollout

    def cut(self, inputs):  # noqa: ANN001, ANN202
        out, rewards = score(self, inputs)
        mask = out["completion_mask"]
        ends = torch.tensor(lengths, device=mask.device).unsqueeze(1)
        out["completion_mask"] = (torch.arange(mask.size(1), device=mask.device).unsqueeze(0) < ends).to(mask.dtype)
        return out, rewards

    monkeypatch.setattr(RLBenchGRPOTrainer, "_score_rollout", cut)


def test_rollout_metrics_are_the_rollouts(tiny_random_model_dir, tmp_path, monkeypatch):
    """Group 0 mixed with a reward-less row, group 1 all correct (dropped: filter_mode drop); then an all-correct
    rollout (samples and tokens add up over the run; no wrong answer: no incorrect length); then one with no reward
    at all (no reward mean)."""
    recipe = _recipe("grpo", tiny_random_model_dir, tmp_path, algo={"filter_mode": "drop"})
    reward = StubReward([1.0, -1.0, None, 1.0] + [1.0] * 4, [1.0] * 8, [None] * 8)
    trainer = _trainer(recipe, tiny_random_model_dir, tmp_path, reward)
    _clock(monkeypatch)  # 0.25 s per generation
    _cut(monkeypatch, LENGTHS)
    _rollout(trainer)
    want = {
        "reward_mean": 5 / 7,  # the 7 rows with a reward
        "accuracy": 6 / 8,  # the grader's verdict over every row (no reward: not correct)
        "response_len": 30 / 8,
        "incorrect_len": (5 + 4) / 2,  # rows 1 (wrong) and 2 (no reward)
        "frac_all_correct": 0.5, "frac_all_wrong": 0.0,
        "kept_frac": 3 / 8,  # group 0's rewarded rows; group 1 dropped
        "tokens_per_s": 30 / 0.25, "samples": 8, "gen_tokens": 30, "rollout_rounds": 1, "padded_groups": None,
        "temperature": 1.0,
    }
    got = trainer._rb_rollout
    assert {k: got[k] for k in want} == pytest.approx(want)
    _rollout(trainer)
    got = trainer._rb_rollout
    assert (got["reward_mean"], got["accuracy"], got["incorrect_len"], got["frac_all_correct"]) == (1.0, 1.0, None, 1.0)
    assert (got["samples"], got["gen_tokens"], got["tokens_per_s"]) == (16, 60, 120.0)
    _rollout(trainer)
    assert trainer._rb_rollout["reward_mean"] is None and trainer._rb_rollout["accuracy"] == 0.0


@pytest.mark.parametrize("overlong_filter", [False, True])
def test_dapo_overlong_penalty_shapes_the_training_reward(tiny_random_model_dir, tmp_path, monkeypatch,
                                                          overlong_filter):
    """DAPO's soft overlong penalty, max length 6, buffer 2, factor 0.5: L <= 4 -> 0, L = 5 -> -0.25, L = 6 -> -0.5.
    With the overlong filter TRL masks the truncated responses out (length 0 here); the penalty still counts them
    as max-length, and only them (a 1-token answer is not truncated). Without the filter a length 0 is an empty
    answer (EOS first): no penalty. The grader's verdict (accuracy, correctness for the group filters) stays the
    unshaped one."""
    recipe = _recipe("dapo", tiny_random_model_dir, tmp_path, algo={
        "dynamic_sampling": False, "overlong_buffer_len": 2, "overlong_penalty_factor": 0.5,
        "overlong_filter": overlong_filter})
    raw = [1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0]
    trainer = _trainer(recipe, tiny_random_model_dir, tmp_path, StubReward(raw))
    lengths = [0 if k == 6 else k for k in LENGTHS] if overlong_filter else [6, 5, 4, 3, 0, 1, 6, 3]
    _cut(monkeypatch, lengths)
    got = _rollout(trainer)
    shaped = torch.tensor([1 - 0.5, -1 - 0.25, -1, 1, 1, -1, 1 - 0.5, 1])
    r = torch.tensor(raw)
    a = recipe.algorithm
    want = compute_advantages(shaped, r == 1.0, N, a.estimator, std_eps=a.std_eps, drop_all_wrong=a.drop_all_wrong,
                              drop_all_correct=a.drop_all_correct, filter_mode=a.filter_mode)
    torch.testing.assert_close(got["advantages"].float(), want.advantages.float())
    assert trainer._rb_rollout["reward_mean"] == pytest.approx(float(shaped.mean()))
    assert trainer._rb_rollout["accuracy"] == 5 / 8


def test_temperature_schedule_is_applied_before_each_training_rollout(tiny_random_model_dir, tmp_path):
    """rollout.temperature_schedule linear 1.0 -> 0.5 over 3 steps: step 1's rollout samples at 0.75 and logs it;
    an evaluation rollout leaves the temperature where training put it."""
    recipe = _recipe("grpo", tiny_random_model_dir, tmp_path,
                     rollout={"temperature": 1.0, "temperature_schedule": "linear", "temperature_end": 0.5})
    trainer = _trainer(recipe, tiny_random_model_dir, tmp_path, StubReward([1.0, -1.0] * 4))
    trainer.state.max_steps, trainer.state.global_step = 3, 1
    _rollout(trainer)
    assert trainer.temperature == pytest.approx(0.75) and trainer._rb_rollout["temperature"] == pytest.approx(0.75)
    trainer.state.global_step = 2
    trainer.model.eval()
    _rollout(trainer)
    assert trainer.temperature == pytest.approx(0.75)
    trainer.model.train()
    _rollout(trainer)
    assert trainer.temperature == pytest.approx(0.5)


# The recipe's policy-loss settings as _policy_loss must pass them (every one off its default), and the fallbacks
# when a setting is unset (None): the papers' values, as algorithms/policy_losses.py documents them.
SET = {"ratio_level": "sequence", "clip_low": 0.1, "clip_high": 0.28, "dual_clip_c": 3.0, "sapo_tau_pos": 0.7,
       "sapo_tau_neg": 1.3, "cov_ratio": 0.01, "cov_kl_coef": 2.0, "cov_lb": 0.5, "cov_ub": 4.0, "gvpo_beta": 0.3}
PASSED = {"ratio_level": "sequence", "clip_low": 0.1, "clip_high": 0.28, "dual_clip_c": 3.0, "tau_pos": 0.7,
          "tau_neg": 1.3, "cov_ratio": 0.01, "cov_kl_coef": 2.0, "cov_lb": 0.5, "cov_ub": 4.0, "group_size": N,
          "gvpo_beta": 0.3}
FALLBACK = {"ratio_level": "token", "clip_low": 0.2, "clip_high": 0.2, "dual_clip_c": None, "tau_pos": 1.0,
            "tau_neg": 1.05, "cov_ratio": 2e-4, "cov_kl_coef": 1.0, "cov_lb": 1.0, "cov_ub": 5.0, "group_size": N,
            "gvpo_beta": 0.1}


@pytest.mark.parametrize(("settings", "passed"), [(SET, PASSED), (dict.fromkeys(SET), FALLBACK)],
                         ids=["set", "unset"])
def test_policy_loss_gets_the_recipes_settings(tiny_random_model_dir, tmp_path, monkeypatch, settings, passed):
    """_policy_loss hands every recipe setting to the loss (DAPO's clip-higher 0.28, GRPO's dual clip, SAPO's gate
    temperatures, the Cov losses' bounds, GVPO's beta, sequence-level ratios); a dropped keyword would silently run
    the function's own default. Settings are written onto the resolved recipe (no validation: one recipe holding
    every loss's settings is not one a user can write)."""
    from rlbench_cli.algorithms.policy_losses import POLICY_LOSSES

    recipe = _recipe("grpo", tiny_random_model_dir, tmp_path)
    trainer = _trainer(recipe, tiny_random_model_dir, tmp_path, StubReward([1.0] * 8))
    trainer.rb = recipe.model_copy(update={"algorithm": recipe.algorithm.model_copy(update=settings)})
    calls = []

    def record(logps, old_logps, advantages, mask, **kwargs):  # noqa: ANN001, ANN202
        calls.append((logps, old_logps, advantages, mask, kwargs))
        return logps * 0, {"clip_frac": torch.zeros(())}

    monkeypatch.setitem(POLICY_LOSSES, "ppo", record)
    x = torch.zeros(2, 3)
    trainer._policy_loss(x, x + 1, x + 2, torch.ones(2), torch.ones(2, 3))
    [(logps, old, adv, mask, kwargs)] = calls
    assert (float(logps.sum()), float(old.sum()), adv.tolist(), float(mask.sum())) == (0.0, 6.0, [1.0, 1.0], 6.0)
    assert kwargs == passed


@pytest.mark.parametrize(("x", "mask", "partner", "want"), [
    ([1.0, 2.0, 3.0], [1.0, 1.0, 0.0], (5.0, 3.0), (1 + 2 + 5) / (2 + 3)),  # summed over both processes
    ([4.0], [1.0], (0.0, 0.0), 4.0),  # one token in all: its value (the count is floored at 1, not 2)
])
def test_logged_means_sum_over_processes(tiny_random_model_dir, tmp_path, monkeypatch, x, mask, partner, want):
    """_global_mean (rb/entropy, rb/kl): sum of values and of counts over every process, then divide; a partner
    process holding (value sum, token count) `partner`. A mean-reduce would average the partial sums instead."""
    recipe = _recipe("grpo", tiny_random_model_dir, tmp_path)
    trainer = _trainer(recipe, tiny_random_model_dir, tmp_path, StubReward([1.0] * 8))

    def reduce(t, reduction):  # noqa: ANN001, ANN202
        assert reduction == "sum"
        return t + torch.tensor(partner)

    monkeypatch.setattr(trainer.accelerator, "reduce", reduce)
    assert trainer._global_mean(torch.tensor(x), torch.tensor(mask)) == pytest.approx(want)
