"""The RL runner wires the pure functions in as the recipe says: a fixed rollout with stubbed rewards through the
real RLBenchGRPOTrainer (TRL generation, reward call, rlbench advantages and loss).

Checked against the pure functions and hand-computed values: advantages and keep mask (filter_mode honoured, RAFT's
advantage from the verdict when reward.correct != 1, GPG's batch count without reward-less rows), the loss summed
over gradient-accumulation micro-batches (token-mean normaliser, KL term and its sign), KL logged with kl_coef 0, and
DAPO's dynamic sampling leaving no all-equal group in the batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_recipe

from rlbench_cli.algorithms.advantages import compute_advantages
from rlbench_cli.config import RL_ALGORITHMS, recipe_from_dict

N, PROMPTS = 4, 2  # one rollout = 2 prompts x 4 responses; micro-batch 4 -> 2 accumulation steps


class StubReward:
    """Returns the queued reward vectors in order, one per TRL reward call (None = no reward for that row)."""

    __name__ = "stub_reward"

    def __init__(self, *batches: list[float | None]) -> None:
        self.batches = list(batches)
        self.calls = 0

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        batch = self.batches[min(self.calls, len(self.batches) - 1)]
        self.calls += 1
        assert len(batch) == len(completions)
        assert len(kwargs["completion_ids"]) == len(completions), "reward functions get the token ids too (TRL)"
        return list(batch)


def _recipe(algorithm: str, model_dir: Path, out: Path, algo: dict | None = None, reward: dict | None = None,
            prompts: int = PROMPTS, rollout: dict | None = None):
    data = tiny_recipe(algorithm, model_dir, out,
                       rollout={"prompts_per_batch": prompts, "n": N, "max_new_tokens": 6, **(rollout or {})},
                       optim={"mini_batch_prompts": PROMPTS, "micro_batch_size": 4, "max_steps": 2})
    data["algorithm"].update(algo or {})
    data["reward"] = dict(reward or {})
    return recipe_from_dict(data, "test")


def _trainer(recipe, model_dir: Path, out: Path, reward: StubReward):
    from rlbench_cli.training.context import RunContext
    from rlbench_cli.training.data import build_prompt_dataset
    from rlbench_cli.training.policy import load_policy
    from rlbench_cli.training.rl import RLBenchGRPOTrainer, grpo_config

    torch.manual_seed(0)
    model, tok = load_policy(str(model_dir), recipe)
    rows = [{"problem": f"Compute {i}+{i}.", "answer": str(2 * i), "solution": "", "problem_id": str(i)}
            for i in range(8)]
    run = RunContext(recipe, out / "run", "pytest")
    trainer = RLBenchGRPOTrainer(model=model, args=grpo_config(recipe, run, 2), train_dataset=build_prompt_dataset(
        rows, recipe, tok), processing_class=tok, reward_funcs=[reward], rb_recipe=recipe)
    trainer.model.train()
    return trainer


def _rollout(trainer, prompts: int = PROMPTS) -> dict:
    ds = trainer.train_dataset
    if trainer.rb.algorithm.dynamic_sampling and trainer._rb_stream is None:
        trainer._get_train_sampler()  # a swapped-in recipe that resamples (GPG) needs the prompt stream TRL builds
    return trainer._generate_and_score_completions([ds[i // N] for i in range(prompts * N)])


def _expected(recipe, rewards: list[float | None]):
    r = torch.tensor([float("nan") if x is None else x for x in rewards])
    a = recipe.algorithm
    return compute_advantages(r, r == recipe.reward.correct, N, a.estimator, std_eps=a.std_eps,
                              drop_all_wrong=a.drop_all_wrong, drop_all_correct=a.drop_all_correct,
                              filter_mode=a.filter_mode)


@pytest.fixture(scope="module")
def shared(tiny_random_model_dir, tmp_path_factory):
    """One trainer whose recipe each test swaps (the wiring reads trainer.rb at call time)."""
    out = tmp_path_factory.mktemp("wiring")
    reward = StubReward([1.0] * 8)
    return _trainer(_recipe("grpo", tiny_random_model_dir, out), tiny_random_model_dir, out, reward), reward, out


REWARDS = [1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # a mixed group and an all-correct group


# The first-wave algorithms, whose advantage is exactly compute_advantages. Wave-2 ones (issue 14: GFPO filtering,
# TTRL pseudo-labels, entropy rewards, their own estimators in training/rollout_signals.py) transform rewards or
# groups first and need their own hand-computed rows.
FIRST_WAVE = [a for a in ("raft", "raft_pp", "reinforce", "reinforce_rej", "grpo", "dr_grpo", "gspo", "rloo", "gpg")
              if a in RL_ALGORITHMS]


@pytest.mark.parametrize("algorithm", FIRST_WAVE)
@pytest.mark.parametrize("filter_mode", ["zero", "drop"])
def test_advantages_and_keep_equal_the_pure_function(shared, tiny_random_model_dir, algorithm, filter_mode):
    trainer, reward, out = shared
    trainer.rb = _recipe(algorithm, tiny_random_model_dir, out, algo={"filter_mode": filter_mode})
    reward.batches, reward.calls = [REWARDS], 0
    got = _rollout(trainer)
    want = _expected(trainer.rb, REWARDS)
    torch.testing.assert_close(got["advantages"].float(), want.advantages.float())
    assert got["rb_keep"].bool().tolist() == want.keep.tolist()
    if filter_mode == "drop" and algorithm not in ("reinforce",):
        assert not all(want.keep.tolist()), "the drop case must drop something to test anything"
    kept_tokens = (got["completion_mask"] * got["rb_keep"].unsqueeze(1)).sum()
    assert float(got["num_items_in_batch"]) == float(kept_tokens)


def test_reinforce_rej_drop_removes_the_all_equal_group(shared, tiny_random_model_dir):
    trainer, reward, out = shared
    trainer.rb = _recipe("reinforce_rej", tiny_random_model_dir, out, algo={"filter_mode": "drop"})
    reward.batches, reward.calls = [REWARDS], 0
    got = _rollout(trainer)
    assert got["rb_keep"].bool().tolist() == [True] * 4 + [False] * 4
    assert got["advantages"].tolist() == [1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_raft_advantage_is_the_verdict_not_the_reward(shared, tiny_random_model_dir):
    trainer, reward, out = shared
    trainer.rb = _recipe("raft", tiny_random_model_dir, out, reward={"correct": 2.0, "incorrect": 0.5})
    reward.batches, reward.calls = [[2.0, 0.5, 0.5, 2.0, 0.5, 0.5, 0.5, 0.5]], 0
    assert _rollout(trainer)["advantages"].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_gpg_batch_count_excludes_rows_without_reward(shared, tiny_random_model_dir):
    trainer, reward, out = shared
    trainer.rb = _recipe("gpg", tiny_random_model_dir, out)
    reward.batches, reward.calls = [[1.0, -1.0, None, 1.0, -1.0, -1.0, None, -1.0]], 0
    got = _rollout(trainer)
    # group 1 valid [1, -1, 1]: r - mean = [2/3, -4/3, 2/3]; alpha = 6 valid rows / 3 nonzero = 2
    torch.testing.assert_close(got["advantages"], torch.tensor([4 / 3, -8 / 3, 0, 4 / 3, 0, 0, 0, 0]))
    assert got["rb_keep"].bool().tolist() == [True, True, False, True, True, True, False, True]


# ---------------------------------------------------------------- loss


def _perturb(model) -> None:
    """Move the policy away from the reference so that KL is not 0."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _micro_losses(trainer, batch: dict) -> tuple[float, list[dict]]:
    """Sum of the micro-batch losses of the rollout's first optimizer step, and those micro-batches."""
    from trl.trainer.utils import split_tensor_dict

    trainer.current_gradient_accumulation_steps = accum = trainer.args.gradient_accumulation_steps
    chunks = split_tensor_dict(batch, trainer.args.steps_per_generation)[:accum]
    trainer._metrics["train"].clear()
    total = sum(float(trainer._compute_loss(trainer.model, c)) for c in chunks)
    return total, chunks


def _logps(trainer, c: dict, entropy: bool = False):
    """Per-token log-probs of a micro-batch under the current policy (and the token entropies when `entropy`)."""
    ids = torch.cat([c["prompt_ids"], c["completion_ids"]], dim=1)
    att = torch.cat([c["prompt_mask"], c["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, ents, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, att,
                                                                    c["completion_ids"].size(1),
                                                                    compute_entropy=entropy)
    return (logps, ents) if entropy else logps


def _k3(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (torch.exp(ref - logp) - (ref - logp) - 1).clamp(-10, 10)


KL = {"low_var_kl": _k3, "k2": lambda logp, ref: 0.5 * (logp - ref) ** 2}
MAX_LEN = 8  # Dr. GRPO cases: the normaliser's max length, set above the rollout's width of 6 (see below)

# id: (kl_coef, loss_agg, prompts per rollout, other algorithm settings)
LOSS_CASES = {
    "kl": (0.5, "token_mean", PROMPTS, {}),
    "kl_coef_0": (0.0, "token_mean", PROMPTS, {}),
    "dr_grpo": (0.5, "seq_mean_token_sum_norm", PROMPTS, {}),
    "two_steps": (0.5, "token_mean", 2 * PROMPTS, {}),  # 2 optimizer steps per rollout (off-policy buffering)
    # filter_mode drop: the all-correct group leaves the loss, its KL term and (Dr. GRPO) its row count too
    "drop": (0.5, "token_mean", PROMPTS, {"filter_mode": "drop"}),
    "dr_grpo_drop": (0.5, "seq_mean_token_sum_norm", PROMPTS, {"filter_mode": "drop"}),
    "k2": (0.5, "token_mean", PROMPTS, {"kl_type": "k2"}),  # the recipe's KL estimator, not low_var_kl
    "no_reference": (0.0, "token_mean", PROMPTS, {"log_kl": False}),  # no reference model: no KL term, none logged
}


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_loss_is_policy_term_plus_kl_over_the_right_normaliser(tiny_random_model_dir, tmp_path, monkeypatch, case):
    kl_coef, loss_agg, prompts, extra = LOSS_CASES[case]
    recipe = _recipe("grpo", tiny_random_model_dir, tmp_path,
                     algo={"kl_coef": kl_coef, "loss_agg": loss_agg, **extra}, prompts=prompts)
    trainer = _trainer(recipe, tiny_random_model_dir, tmp_path, StubReward(REWARDS * (prompts // PROMPTS)))
    _perturb(trainer.model)
    batch = _rollout(trainer, prompts)
    has_ref = recipe.algorithm.log_kl
    assert ("ref_per_token_logps" in batch) == has_ref, "TRL's reference model does not follow log_kl / kl_coef"
    assert trainer.args.gradient_accumulation_steps == 2
    if loss_agg == "seq_mean_token_sum_norm":
        # Every completion of the random model runs to the width 6; a configured max length above it (as when all
        # completions of a batch end early) tells Dr. GRPO's constant normaliser from the batch width and from the
        # per-sequence token mean.
        assert batch["completion_ids"].size(1) == 6 < MAX_LEN
        trainer.max_completion_length = MAX_LEN
    if extra.get("filter_mode") == "drop":
        assert batch["rb_keep"].tolist() == [1] * N + [0] * N, "the all-correct group must leave the loss"
    total, chunks = _micro_losses(trainer, batch)

    # By hand: on-policy (ratio 1) the per-token policy loss is -A; plus kl_coef * KL(logp, ref) of the recipe's kind.
    sums, tokens, rows, kls, kl_means, ent_means = [], [], [], [], [], []
    for c in chunks:
        mask = c["completion_mask"] * c["rb_keep"].unsqueeze(1)
        logps, ents = _logps(trainer, c, entropy=True)
        kl = KL[recipe.algorithm.kl_type](logps, c["ref_per_token_logps"]) if has_ref else torch.zeros_like(logps)
        per_token = -c["advantages"].unsqueeze(1) + kl_coef * kl
        sums.append(float((per_token * mask).sum()))
        tokens.append(float(mask.sum()))
        rows.append(int((mask.sum(1) > 0).sum()))
        kls.append(float((kl * c["completion_mask"]).sum()))
        kl_means.append(float((kl * c["completion_mask"]).sum() / c["completion_mask"].sum()))
        ent_means.append(float((ents * c["completion_mask"]).sum() / c["completion_mask"].sum()))
    assert sum(kls) > 1e-3 or not has_ref, "policy equals the reference: the KL checks would be vacuous"
    all_tokens = float((batch["completion_mask"] * batch["rb_keep"].unsqueeze(1)).sum())
    steps = prompts // PROMPTS
    assert steps > 1 or sum(tokens) == all_tokens
    if loss_agg == "token_mean":
        # One token mean per optimizer step; with several steps per rollout the normaliser is the rollout's kept
        # tokens per step (verl/TRL 'dapo' use the generation batch's count).
        expected = sum(sums) / (all_tokens / steps)
    else:  # Dr. GRPO: sum / (kept rows * max length), averaged over the accumulation steps
        expected = sum(s / (max(r, 1) * MAX_LEN) for s, r in zip(sums, rows, strict=True)) / len(chunks)
    assert total == pytest.approx(expected, rel=1e-4, abs=1e-6)
    # KL to the initial policy is logged per micro-batch whatever kl_coef is (0 included), over every response;
    # without a reference model nothing is logged. The token entropy is logged per micro-batch.
    assert trainer._metrics["train"].get("rb/kl", []) == (pytest.approx(kl_means, rel=1e-4) if has_ref else [])
    assert trainer._metrics["train"]["rb/entropy"] == pytest.approx(ent_means, rel=1e-4)
    assert trainer._metrics["train"]["rb/clip_frac"] == [0.0] * len(chunks)  # on-policy: ratio 1, nothing clipped
    if case == "kl":
        # 2 processes: num_items_in_batch counts every process's kept tokens, each process divides by its share,
        # so the same micro-batches give twice the loss.
        assert abs(total) > 1e-3
        monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda self: 2))
        assert _micro_losses(trainer, batch)[0] == pytest.approx(2 * total, rel=1e-4)


# ---------------------------------------------------------------- DAPO


def _clock(monkeypatch, tick: float = 0.25) -> None:
    """rl.py's perf_counter as a clock that advances `tick` per read: each generation call then takes `tick`."""
    import itertools
    from types import SimpleNamespace

    import rlbench_cli.training.rl as rl

    ticks = itertools.count(step=tick)
    monkeypatch.setattr(rl, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))


def test_dapo_batch_holds_no_all_equal_group(tiny_random_model_dir, tmp_path, monkeypatch):
    # The soft overlong penalty is off here: this test is about which groups the refill keeps, not reward shaping.
    recipe = _recipe("dapo", tiny_random_model_dir, tmp_path, algo={"overlong_penalty_factor": 0.0})
    assert recipe.algorithm.dynamic_sampling
    # Round 1: group 0 all correct (no signal), group 1 mixed; round 2: two mixed groups.
    reward = StubReward([1.0] * 4 + [1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0])
    trainer = _trainer(recipe, tiny_random_model_dir, tmp_path, reward)
    _clock(monkeypatch)
    got = _rollout(trainer)
    assert reward.calls == 2 and trainer._rb_rollout["rollout_rounds"] == 2
    # Throughput counts both rounds: every generated token over both generation times (0.25 s each here).
    stats = trainer._rb_rollout
    assert stats["samples"] == 2 * PROMPTS * N and stats["padded_groups"] == 0
    assert stats["tokens_per_s"] == pytest.approx(stats["gen_tokens"] / 0.5)
    assert trainer._rb_rollout["frac_all_correct"] == 0.0 and trainer._rb_rollout["frac_all_wrong"] == 0.0
    groups = got["advantages"].view(-1, N)
    assert len(groups) == PROMPTS and bool((groups != 0).any(dim=1).all())
    # The kept groups: round 1's mixed group, then round 2's first group (rows stay in rollout order).
    want = torch.cat([_expected(recipe, [1.0, -1.0, 1.0, -1.0]).advantages,
                      _expected(recipe, [-1.0, 1.0, -1.0, -1.0]).advantages])
    torch.testing.assert_close(got["advantages"], want)


@pytest.mark.parametrize("exhausted", ["error", "pad"])
def test_dapo_refill_stops_after_max_resample_rounds(tiny_random_model_dir, tmp_path, exhausted):
    """Two rounds allowed, one group with unequal rewards found (round 1's second), two wanted: resample_exhausted
    error stops the run with a message saying what to change; pad tops the batch up with round 2's first all-equal
    group (the last round's first, as GPG) and counts it in padded_groups."""
    from rlbench_cli.errors import UserError

    recipe = _recipe("dapo", tiny_random_model_dir, tmp_path, algo={
        "overlong_penalty_factor": 0.0, "max_resample_rounds": 2, "resample_exhausted": exhausted})
    reward = StubReward([1.0] * 4 + [1.0, -1.0, 1.0, -1.0], [-1.0] * 8)
    trainer = _trainer(recipe, tiny_random_model_dir, tmp_path, reward)
    if exhausted == "error":
        with pytest.raises(UserError) as err:
            _rollout(trainer)
        assert reward.calls == 2
        assert ("dynamic sampling found 1 groups with unequal rewards in 2 generation batches, 1 x 2 needed"
                in str(err.value))
        assert err.value.where == "algorithm.max_resample_rounds" and "resample_exhausted=pad" in err.value.fix
        return
    got = _rollout(trainer)
    assert reward.calls == 2 and trainer._rb_rollout["rollout_rounds"] == 2
    assert trainer._rb_rollout["padded_groups"] == 1
    want = torch.cat([_expected(recipe, [1.0, -1.0, 1.0, -1.0]).advantages, torch.zeros(N)])
    torch.testing.assert_close(got["advantages"], want)
