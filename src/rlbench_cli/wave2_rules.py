"""Recipe rules of the wave-2 methods (docs/algorithms.md): the settings whose default depends on other settings,
and the combinations that cannot run. Called by config.resolve_defaults; imports nothing of rlbench but errors, so
config can import it (no circle) and `rlbench validate` stays free of torch.
"""

from __future__ import annotations

from typing import Any

from rlbench_cli.errors import UserError

ESTIMATOR_NAMES = ("raft", "reinforce", "reinforce_rej", "grpo", "dr_grpo", "rloo", "gpg", "opo", "lite_ppo",
                   "remax", "reinforce_pp", "reinforce_pp_baseline", "riskpo")
POLICY_LOSS_NAMES = ("ppo", "cispo", "sapo", "gmpo", "kl_cov", "clip_cov", "gvpo", "em_ft")
# Aggregation a policy loss needs whatever the recipe says (sequence-level losses and SAPO, as their references).
FORCED_LOSS_AGG = {"sapo": "seq_mean_token_mean", "gmpo": "seq_mean_token_mean", "em_ft": "seq_mean_token_mean",
                   "gvpo": "seq_sum_token_mean"}
# Settings whose default depends on the group size n.
HALF_GROUP = {"gfpo": "gfpo_keep", "ttrl": "vote_train_n"}


def resolve_wave2(recipe: Any, rl_algorithms: tuple[str, ...]) -> None:
    """Wave-2 defaults that depend on other settings, and the combinations that cannot run."""
    algo, n = recipe.algorithm, recipe.rollout.n
    key = HALF_GROUP.get(algo.name)
    if key and getattr(algo, key) is None:
        setattr(algo, key, max(2, n // 2))
    forced = FORCED_LOSS_AGG.get(algo.policy_loss or "")
    if forced:
        algo.loss_agg = forced  # the loss is defined with this aggregation (docs/algorithms.md)
    where = "algorithm"
    if algo.gfpo_keep is not None and not 2 <= algo.gfpo_keep <= n:
        raise UserError(f"algorithm.gfpo_keep ({algo.gfpo_keep}) must be in 2..rollout.n ({n}): the GRPO advantage "
                        "over the kept responses needs at least two", where=f"{where}.gfpo_keep")
    if algo.opo_baseline is not None and algo.estimator != "opo":
        raise UserError(f"algorithm.opo_baseline is an OPO setting; the estimator here is {algo.estimator}",
                        where=f"{where}.opo_baseline", fix="remove it or use algorithm.name=opo")
    if algo.vote_train_n is not None and algo.vote_train_n > n:
        raise UserError(f"algorithm.vote_train_n ({algo.vote_train_n}) exceeds rollout.n ({n})",
                        where=f"{where}.vote_train_n", fix=f"use at most {n}")
    group_stats = (algo.estimator in ("lite_ppo", "reinforce_pp_baseline") or algo.reward_source == "majority_vote"
                   or (algo.estimator == "opo" and algo.opo_baseline != "batch"))
    if group_stats and n < 2:
        raise UserError(f"{algo.name} compares the responses of a group: rollout.n must be >= 2",
                        where="rollout.n", fix="set rollout.n=2 or more")
    if algo.reward_source in ("neg_entropy", "seq_logprob") and (algo.drop_all_wrong or algo.drop_all_correct):
        raise UserError("EM-RL rewards are not correct / wrong, so drop_all_wrong / drop_all_correct have no meaning",
                        where=f"{where}.reward_source", fix="set algorithm.drop_all_wrong=false drop_all_correct=false")
    if algo.policy_loss == "gvpo" and (n < 2 or recipe.optim.micro_batch_size % n):
        raise UserError(f"GVPO needs whole groups in every micro-batch: optim.micro_batch_size "
                        f"({recipe.optim.micro_batch_size}) must be a multiple of rollout.n ({n}), n >= 2",
                        where="optim.micro_batch_size", fix=f"e.g. optim.micro_batch_size={max(2, n) * 4}")
    ro = recipe.rollout
    if ro.temperature_schedule in ("linear", "cosine") and ro.temperature_end is None:
        raise UserError(f"a {ro.temperature_schedule} temperature schedule needs rollout.temperature_end",
                        where="rollout.temperature_end", fix="e.g. rollout.temperature_end=0.8")
    if ro.temperature_schedule == "step" and ro.temperature_step_every < 1:
        raise UserError("a step temperature schedule needs rollout.temperature_step_every >= 1",
                        where="rollout.temperature_step_every")
    every = algo.ref_reset_every
    if every:
        if algo.name not in rl_algorithms:
            raise UserError(f"algorithm.ref_reset_every is for the RL runner's algorithms, not {algo.name}",
                            where=f"{where}.ref_reset_every")
        if not (algo.kl_coef or algo.log_kl or algo.kl_in_reward_coef):
            raise UserError("algorithm.ref_reset_every needs a reference policy", where=f"{where}.ref_reset_every",
                            fix="set algorithm.kl_coef > 0 or algorithm.log_kl=true")
        if recipe.model.lora.enabled:
            raise UserError("a reference reset cannot run with LoRA (the reference is the adapter-free base)",
                            where=f"{where}.ref_reset_every", fix="set model.lora.enabled=false")
        if every % recipe.steps_per_rollout:
            raise UserError(f"algorithm.ref_reset_every ({every}) must be a multiple of the optimizer steps per "
                            f"rollout ({recipe.steps_per_rollout}): the reference log-probs are computed per rollout",
                            where=f"{where}.ref_reset_every")
        ckpt = recipe.output.checkpoint_every
        if ckpt and ckpt % every:
            raise UserError(f"output.checkpoint_every ({ckpt}) must be a multiple of algorithm.ref_reset_every "
                            f"({every}) so that a resumed run holds the same reference",
                            where="output.checkpoint_every")
