"""Rollout-time work the RL runner does beyond TRL for the wave-2 methods, called from `RLBenchGRPOTrainer`:

- `apply_temperature`: the rollout temperature schedule (TRL bakes the temperature into its fused LM head and
  generation config at construction; both are re-set here before each rollout);
- `shape_rewards`: the training reward when it is not the grader's (EM-RL: negative entropy or sequence
  log-prob; TTRL: agreement with the group's majority answer), TTRL's training subset, and KL in the reward (k1);
- `rollout_advantages`: the advantage for every estimator (first wave through `compute_advantages`; OPO,
  Lite-PPO, ReMax, REINFORCE++ here), with GFPO's group filter.
The math lives in `algorithms/`; this module only gathers what it needs from TRL's rollout dict (per process) and
the gathered rewards (global, TRL's order). Run: `rlbench train recipes/tiny/<method>.yaml`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from rlbench_cli.algorithms.advantages import AdvantageResult, compute_advantages
from rlbench_cli.algorithms.baselines import (
    gfpo_keep,
    group_centred,
    kl_shaped_rewards,
    lite_ppo_advantage,
    opo_advantage,
    opo_batch_advantage,
    reinforce_pp_returns,
    remax_advantage,
    riskpo_advantage,
    token_moments,
    whiten_tokens,
)
from rlbench_cli.algorithms.entropy import em_rl_rewards
from rlbench_cli.algorithms.pseudo_labels import majority_labels, train_subset, ttrl_answer, ttrl_vote_key
from rlbench_cli.algorithms.schedules import temperature_at

# Estimators computed here; the others go through algorithms.advantages.compute_advantages.
TOKEN_ESTIMATORS = ("reinforce_pp", "reinforce_pp_baseline")
SEQUENCE_ESTIMATORS = ("opo", "lite_ppo", "remax", "riskpo")


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _local(trainer: Any, n_local: int) -> slice:
    i = trainer.accelerator.process_index
    return slice(i * n_local, (i + 1) * n_local)


def _gather(trainer: Any, x: torch.Tensor) -> torch.Tensor:
    return trainer.accelerator.gather(x.to(trainer.accelerator.device)).cpu()


# ------------------------------------------------------------------------------------------- temperature


def apply_temperature(trainer: Any) -> float:
    """Set this rollout's temperature (rollout.temperature_schedule) on TRL's generation and log-prob paths."""
    ro = trainer.rb.rollout
    total = trainer.state.max_steps or 1
    temp = temperature_at(trainer.state.global_step, total, ro.temperature, ro.temperature_end,
                          ro.temperature_schedule, step_every=ro.temperature_step_every,
                          step_size=ro.temperature_step_size)
    if temp == trainer.temperature:
        return temp
    from accelerate.utils import is_peft_model
    from trl.trainer.utils import add_fused_lm_head

    trainer.temperature = temp
    if getattr(trainer, "generation_config", None) is not None:
        trainer.generation_config.temperature = temp
        trainer.generation_kwargs["temperature"] = temp
    if getattr(trainer, "vllm_generation", None) is not None:
        trainer.vllm_generation.temperature = temp
    model = trainer.accelerator.unwrap_model(trainer.model)
    targets = [(model.get_base_model() if is_peft_model(model) else model, ("log_probs", "entropy"))]
    if trainer.ref_model is not None:
        targets.append((trainer.accelerator.unwrap_model(trainer.ref_model), ("log_probs",)))
    for target, outputs in targets:
        target.__dict__.pop("forward", None)  # drop the previous fused head (an instance attribute); keep the class's
        add_fused_lm_head(target, temperature=temp, cast_lm_head_to_fp32=trainer.args.cast_lm_head_to_fp32,
                          outputs=outputs)
    return temp


# ------------------------------------------------------------------------------------------- rewards


def sampling_logps(trainer: Any, out: dict[str, Any], *, entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (and entropies) of this process's completions under the sampling policy (no grad)."""
    old = out.get("old_per_token_logps")
    if old is not None and not entropy:
        return old.detach(), None
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, ents, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, att, out["completion_ids"].size(1),
            batch_size=trainer.args.per_device_train_batch_size, compute_entropy=entropy)
    return (logps if old is None else old).detach(), None if ents is None else ents.detach()


def _texts(trainer: Any, out: dict[str, Any]) -> list[str]:
    ids = out["completion_ids"].masked_fill(out["completion_mask"] == 0, trainer.processing_class.pad_token_id)
    return trainer.processing_class.batch_decode(ids, skip_special_tokens=True)


def _majority_rewards(trainer: Any, out: dict[str, Any], n: int) -> tuple[torch.Tensor, float]:
    """TTRL: 1 (reward.correct) if the response's answer verifies as equal to its group's majority answer, else
    reward.incorrect; an empty (unparsed) majority gives every response of the group `incorrect`."""
    from accelerate.utils import gather_object

    from rlbench_cli.evaluation.grader import GradeItem, Grader, normalize_answer

    texts = gather_object(_texts(trainer, out)) if trainer.accelerator.num_processes > 1 else _texts(trainer, out)
    # TTRL's extraction; votes counted in canonical form (TTRL: strip_string), so "5.0" and "5" are one answer
    answers = [ttrl_vote_key(ttrl_answer(t), normalize_answer) for t in texts]
    labels, shares = majority_labels(answers, n)
    fn = trainer.reward_funcs[0]
    items = [GradeItem(completion=t, gold=g) for t, g in zip(texts, labels, strict=True) if g]
    grader = getattr(fn, "grader", None)
    if grader is not None:
        verdicts = iter(grader.grade_many(items))
    else:
        with Grader(workers=0, timeout_s=trainer.rb.reward.grader_timeout_s) as own:
            verdicts = iter(own.grade_many(items))
    rw = trainer.rb.reward
    rewards = [rw.correct if g and next(verdicts).correct else rw.incorrect for g in labels]
    return torch.tensor(rewards, dtype=torch.float64), float(sum(shares) / max(len(shares), 1))


def shape_rewards(trainer: Any, out: dict[str, Any],
                  rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The global training rewards (N,) of this rollout, which of them count as correct (before the KL shaping), and
    extra rollout metrics.

    reward_source grader keeps the grader's rewards; neg_entropy / seq_logprob (EM-RL) and majority_vote (TTRL)
    replace them (the gold answer then only feeds the logged accuracy). Then TTRL's training subset (rows past
    vote_train_n become NaN: out of the loss and of the group statistics) and KL in the reward.
    """
    algo = trainer.rb.algorithm
    n = trainer.num_generations
    info: dict[str, Any] = {}
    source = algo.reward_source or "grader"
    mask = out["completion_mask"]
    if source in ("neg_entropy", "seq_logprob"):
        logps, ents = sampling_logps(trainer, out, entropy=source == "neg_entropy")
        local = em_rl_rewards(mask.cpu(), variant="token" if source == "neg_entropy" else "sequence",
                              entropies=None if ents is None else ents.cpu(), logps=logps.cpu(),
                              reduce=algo.em_reduce or "mean")
        rewards = _gather(trainer, local)
    elif source == "majority_vote":
        rewards, share = _majority_rewards(trainer, out, n)
        info["vote_share"] = share
    rewards = rewards.to(torch.float64)
    if algo.vote_train_n is not None and algo.vote_train_n < n:
        subset = torch.tensor(train_subset(n, algo.vote_train_n)).repeat(len(rewards) // n)
        rewards = torch.where(subset, rewards, torch.full_like(rewards, float("nan")))
    correct = rewards == trainer.rb.reward.correct
    if algo.kl_in_reward_coef and algo.estimator not in TOKEN_ESTIMATORS:
        ref = out.get("ref_per_token_logps")
        if ref is None:
            raise RuntimeError("KL in the reward needs the reference log-probs (TRL beta switch off?)")
        logps, _ = sampling_logps(trainer, out, entropy=False)
        k1 = kl_shaped_rewards(torch.zeros(len(mask)), logps.cpu(), ref.cpu(), mask.cpu(), 1.0)  # = -sum k1
        info["kl_reward"] = float(-_gather(trainer, k1).mean())
        rewards = rewards + algo.kl_in_reward_coef * _gather(trainer, k1)
    return rewards, correct, info


# ------------------------------------------------------------------------------------------- ReMax


def greedy_rewards(trainer: Any, inputs: list[dict[str, Any]]) -> torch.Tensor:
    """ReMax baseline: reward of the greedy decode of each local row's prompt, one decode per distinct prompt,
    gathered to (N_total,). The reward functions are called as TRL calls them (dataset columns as keywords)."""
    n = trainer.num_generations
    firsts = list(range(0, len(inputs), n)) if len(inputs) % n == 0 else list(range(len(inputs)))
    chosen = [inputs[i] for i in firsts]
    prompts = [x["prompt"] for x in chosen]
    prompt_ids, images, mm = trainer._tokenize_prompts(prompts)
    saved = {}
    if getattr(trainer, "generation_config", None) is not None:
        saved["do_sample"] = trainer.generation_config.do_sample
        trainer.generation_config.do_sample = False
        trainer.generation_kwargs["do_sample"] = False
    if getattr(trainer, "vllm_generation", None) is not None:
        saved["vllm_t"] = trainer.vllm_generation.temperature
        trainer.vllm_generation.temperature = 0.0  # vLLM: temperature 0 is greedy
    try:
        completion_ids, _ = trainer._generate_single_turn(prompt_ids, images, mm, 1)
    finally:
        if "do_sample" in saved:
            trainer.generation_config.do_sample = saved["do_sample"]
            trainer.generation_kwargs["do_sample"] = saved["do_sample"]
        if "vllm_t" in saved:
            trainer.vllm_generation.temperature = saved["vllm_t"]
    texts = trainer.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
    columns = {k: [x[k] for x in chosen] for k in chosen[0] if k not in ("prompt", "completion", "completion_ids")}
    total = torch.zeros(len(chosen), dtype=torch.float64)
    for func, weight in zip(trainer.reward_funcs, trainer.reward_weights.tolist(), strict=True):
        values = func(prompts=prompts, completions=texts, completion_ids=completion_ids, **columns)
        total += weight * torch.tensor([float("nan") if v is None else v for v in values], dtype=torch.float64)
    per_row = total.repeat_interleave(n) if len(firsts) * n == len(inputs) else total
    return _gather(trainer, per_row)


# ------------------------------------------------------------------------------------------- advantages


def rollout_advantages(trainer: Any, inputs: list[dict[str, Any]], out: dict[str, Any], rewards: torch.Tensor,
                       correct: torch.Tensor) -> tuple[AdvantageResult, torch.Tensor, dict[str, Any]]:
    """(global AdvantageResult for keep/stats, this process's advantages (B,) or (B, T), extra metrics)."""
    algo = trainer.rb.algorithm
    n = trainer.num_generations
    est = algo.estimator or "grpo"
    std_eps = 1e-6 if algo.std_eps is None else algo.std_eps
    info: dict[str, Any] = {}
    lengths = _gather(trainer, out["completion_mask"].sum(1).to(torch.float64))
    adv_rewards = rewards.to(torch.float64)
    gfpo_rows = None
    if algo.gfpo_keep is not None:
        gfpo_rows = gfpo_keep(adv_rewards.view(-1, n), lengths.view(-1, n), algo.gfpo_keep,
                              algo.gfpo_metric or "length").reshape(-1)
        adv_rewards = torch.where(gfpo_rows, adv_rewards, torch.full_like(adv_rewards, float("nan")))
        info["gfpo_kept_frac"] = float(gfpo_rows.float().mean())
    base = est if est not in SEQUENCE_ESTIMATORS and est not in TOKEN_ESTIMATORS else (
        "reinforce" if est in TOKEN_ESTIMATORS or est in ("remax", "riskpo") else "dr_grpo")
    result = compute_advantages(adv_rewards, correct, n, base, std_eps=std_eps,
                                drop_all_wrong=bool(algo.drop_all_wrong), drop_all_correct=bool(algo.drop_all_correct),
                                filter_mode=algo.filter_mode or "zero")
    keep = result.keep
    grouped = adv_rewards.view(-1, n)
    if est in SEQUENCE_ESTIMATORS:
        if est == "opo":
            opo = opo_batch_advantage if algo.opo_baseline == "batch" else opo_advantage
            adv = opo(grouped, lengths.view(-1, n))
        elif est == "lite_ppo":
            adv = lite_ppo_advantage(grouped, std_eps=std_eps)
        elif est == "riskpo":
            adv = riskpo_advantage(grouped, bundle=algo.riskpo_bundle or 5, alpha=_pick(algo.riskpo_alpha, 0.2),
                                   beta=_pick(algo.riskpo_beta, 0.9), mix_weight=_pick(algo.riskpo_mix_weight, 1.5),
                                   natural_baseline=_pick(algo.riskpo_natural_baseline, True),
                                   credit=algo.riskpo_credit or "std")
        else:
            baseline = greedy_rewards(trainer, inputs).view(-1, n)[:, 0]
            info["greedy_reward_mean"] = float(torch.nan_to_num(baseline).mean())
            adv = remax_advantage(grouped, baseline)
        adv = torch.where(keep, adv.reshape(-1), torch.zeros_like(adv.reshape(-1))).to(torch.float32)
        result = replace(result, advantages=adv)
    if gfpo_rows is not None and (algo.gfpo_filtered or "zero") == "zero":
        # the paper zeroes the filtered responses' advantage: they stay in the loss and its token normaliser
        back = ~gfpo_rows & ~torch.isnan(rewards.to(torch.float64))
        result = replace(result, keep=keep | back)
    n_local = len(out["completion_mask"])
    local = _local(trainer, n_local)
    if est not in TOKEN_ESTIMATORS:
        return result, result.advantages[local], info
    # REINFORCE++: group baseline on the global rewards, returns per process, whitening over all processes' tokens
    r = group_centred(adv_rewards, n) if est == "reinforce_pp_baseline" else torch.nan_to_num(adv_rewards)
    mask = (out["completion_mask"].cpu().to(torch.float64) * result.keep[local].to(torch.float64).unsqueeze(1))
    token_kl = None
    if algo.kl_in_reward_coef:
        ref = out.get("ref_per_token_logps")
        if ref is None:
            raise RuntimeError("KL in the reward needs the reference log-probs (TRL beta switch off?)")
        logps, _ = sampling_logps(trainer, out, entropy=False)
        token_kl = (logps - ref).cpu()
    returns = reinforce_pp_returns(r[local], mask, token_kl=token_kl, kl_coef=algo.kl_in_reward_coef or 0.0)
    mean, var = token_moments(returns, mask)
    if trainer.accelerator.num_processes > 1:
        count = mask.sum()
        sums = torch.stack([mean * count, (var + mean ** 2) * count, count]).to(trainer.accelerator.device)
        tot = trainer.accelerator.reduce(sums, reduction="sum").cpu()
        mean = tot[0] / tot[2].clamp(min=1.0)
        var = tot[1] / tot[2].clamp(min=1.0) - mean ** 2
    return result, whiten_tokens(returns, mask, (mean, var)).to(torch.float32), info


def wave2_metric_keys(recipe: Any) -> dict[str, str]:
    """metrics.jsonl columns a wave-2 setting adds (filled from the rollout stats), beside context.METRIC_KEYS."""
    algo, keys = recipe.algorithm, []
    if recipe.rollout.temperature_schedule != "constant":
        keys.append("temperature")
    if algo.reward_source == "majority_vote":
        keys.append("vote_share")
    if algo.estimator == "remax":
        keys.append("greedy_reward_mean")
    if algo.gfpo_keep is not None:
        keys.append("gfpo_kept_frac")
    if algo.kl_in_reward_coef and algo.estimator not in TOKEN_ESTIMATORS:
        keys.append("kl_reward")
    return {k: f"rb/{k}" for k in keys}


def shuffle_groups(batch: dict[str, Any], group_size: int) -> dict[str, Any]:
    """Permute whole groups (contiguous runs of `group_size` rows) of a rollout dict, rows within a group kept in
    order; torch's global generator, as TRL's row shuffle. For GVPO, whose loss needs each group in one micro-batch."""
    n_rows = len(batch["completion_mask"])
    if n_rows % group_size:
        raise ValueError(f"{n_rows} rows do not form groups of {group_size}")
    order = torch.randperm(n_rows // group_size)
    rows = (order.unsqueeze(1) * group_size + torch.arange(group_size)).reshape(-1)

    def permute(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.ndim >= 1 and len(v) == n_rows:
            return v[rows.to(v.device)]
        if isinstance(v, list) and len(v) == n_rows:
            return [v[i] for i in rows.tolist()]
        return v

    return {k: permute(v) for k, v in batch.items()}
