"""Recipe schema: one pydantic model per YAML section, every field with help text, unknown keys rejected.

`load_recipe(path, overrides)` reads a YAML recipe, applies `key=value` dotted overrides, validates, and fills the
algorithm's defaults (ALGORITHM_DEFAULTS) so the resolved recipe written into each run folder states every choice
the run made. Only pydantic and yaml are imported here: `rlbench validate` never loads torch.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlbench_cli.errors import UserError
from rlbench_cli.recipe_yaml import apply_overrides, read_yaml
from rlbench_cli.wave2_rules import ESTIMATOR_NAMES, POLICY_LOSS_NAMES, resolve_wave2

# What each algorithm is, in one place: which runner trains it (training/run.py RUNNERS), its label in tables, and
# its default settings (TRL style: a variant is a set of settings on a shared runner, not a subclass). Settings are
# AlgorithmConfig fields; values cite docs/reference.md §1-2. To add an algorithm: add an entry here (and the fields it
# needs to AlgorithmConfig, the math to algorithms/), then a recipe under recipes/.
_PPO_CLIP = {"ratio_level": "token", "clip_low": 0.2, "clip_high": 0.2, "dual_clip_c": 3.0}
_PAPER_KL = {"kl_coef": 0.001, "kl_type": "low_var_kl"}
_CLIP_ONLY = {"ratio_level": "token", "clip_low": 0.2, "clip_high": 0.2, "dual_clip_c": None}
_NO_KL = {"kl_coef": 0.0, "kl_type": "low_var_kl"}


def _fifth_of_max_new_tokens(recipe: Recipe) -> int:
    return recipe.rollout.max_new_tokens // 5


ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": {"runner": "sft", "label": "SFT"},
    "raft": {"runner": "rl", "label": "RAFT", "estimator": "raft", "ratio_level": "none", "clip_low": 0.2,
             "clip_high": 0.2, "dual_clip_c": None, **_PAPER_KL},
    "raft_pp": {"runner": "rl", "label": "RAFT++", "estimator": "raft", **_PPO_CLIP, **_PAPER_KL},
    "reinforce": {"runner": "rl", "label": "Reinforce", "estimator": "reinforce", **_PPO_CLIP, **_PAPER_KL},
    "reinforce_rej": {"runner": "rl", "label": "Reinforce-Rej", "estimator": "reinforce_rej", **_PPO_CLIP,
                      **_PAPER_KL},
    "grpo": {"runner": "rl", "label": "GRPO", "estimator": "grpo", **_PPO_CLIP, **_PAPER_KL},
    "dr_grpo": {"runner": "rl", "label": "Dr. GRPO", "estimator": "dr_grpo", **_PPO_CLIP, **_PAPER_KL,
                "loss_agg": "seq_mean_token_sum_norm"},
    # verl recipe/dapo run_dapo_qwen2.5_32b.sh: clip_ratio_c=10.0 (verl's default 3; the paper's objective has
    # none), soft overlong penalty (buffer 4096 of 20480 response tokens, factor 1.0) and no overlong filter,
    # filter_groups with max_num_gen_batches=10.
    "dapo": {"runner": "rl", "label": "DAPO", "estimator": "grpo", **_PPO_CLIP, "clip_high": 0.28,
             "dual_clip_c": 10.0, "kl_coef": 0.0, "kl_type": "low_var_kl", "dynamic_sampling": True,
             "min_valid_frac": 1.0, "max_resample_rounds": 10, "overlong_buffer_len": _fifth_of_max_new_tokens,
             "overlong_penalty_factor": 1.0},
    # verl compute_policy_loss_gspo aggregates with seq-mean-token-mean whatever loss_agg_mode says.
    "gspo": {"runner": "rl", "label": "GSPO", "estimator": "grpo", "ratio_level": "sequence", "clip_low": 3e-4,
             "clip_high": 4e-4, "dual_clip_c": None, "kl_coef": 0.0, "kl_type": "low_var_kl",
             "loss_agg": "seq_mean_token_mean"},
    "rloo": {"runner": "rl", "label": "RLOO", "estimator": "rloo", **_PPO_CLIP, **_PAPER_KL},
    # AMAP-ML/GPG open-r1: resample until half the groups have unequal rewards (--min_inverse_alpha 0.5), at most
    # 20 generation batches (max_gen), then fail.
    "gpg": {"runner": "rl", "label": "GPG", "estimator": "gpg", "ratio_level": "none", "clip_low": 0.2,
            "clip_high": 0.2, "dual_clip_c": None, "kl_coef": 0.0, "kl_type": "low_var_kl",
            "dynamic_sampling": True, "min_valid_frac": 0.5, "max_resample_rounds": 20},
    "ppo": {"runner": "ppo", "label": "PPO", **_PPO_CLIP, "kl_coef": 0.0, "kl_type": "low_var_kl"},
    "dpo": {"runner": "dpo", "label": "Iterative DPO"},
    # Wave 2: every value, and where paper and code differ, is in docs/algorithms.md.
    "reinforce_pp": {"runner": "rl", "label": "REINFORCE++", "estimator": "reinforce_pp", **_CLIP_ONLY, **_NO_KL,
                     "kl_in_reward_coef": 0.01},
    "reinforce_pp_baseline": {"runner": "rl", "label": "REINFORCE++-baseline", "estimator": "reinforce_pp_baseline",
                              **_CLIP_ONLY, "kl_coef": 1e-4, "kl_type": "k2"},
    "lite_ppo": {"runner": "rl", "label": "Lite-PPO", "estimator": "lite_ppo", **_CLIP_ONLY, **_NO_KL},
    "cispo": {"runner": "rl", "label": "CISPO", "estimator": "grpo", "policy_loss": "cispo", **_CLIP_ONLY,
              "clip_low": 1.0, **_NO_KL},
    "sapo": {"runner": "rl", "label": "SAPO", "estimator": "grpo", "policy_loss": "sapo", "sapo_tau_pos": 1.0,
             "sapo_tau_neg": 1.05, **_NO_KL},
    "gmpo": {"runner": "rl", "label": "GMPO", "estimator": "grpo", "std_eps": 1e-8, "policy_loss": "gmpo",
             "clip_low": 0.4, "clip_high": 0.4, "dual_clip_c": None, **_NO_KL},
    "kl_cov": {"runner": "rl", "label": "KL-Cov", "estimator": "grpo", "policy_loss": "kl_cov", "cov_ratio": 2e-3,
               "cov_kl_coef": 1.0, "dynamic_sampling": True, **_NO_KL},
    "clip_cov": {"runner": "rl", "label": "Clip-Cov", "estimator": "grpo", "policy_loss": "clip_cov", "clip_low": 1.0,
                 "clip_high": 1.0, "dual_clip_c": None, "cov_ratio": 2e-4, "cov_lb": 1.0, "cov_ub": 5.0,
                 "dynamic_sampling": True, **_NO_KL},
    "remax": {"runner": "rl", "label": "ReMax", "estimator": "remax", **_CLIP_ONLY, **_NO_KL,
              "kl_in_reward_coef": 0.001},
    "opo": {"runner": "rl", "label": "OPO", "estimator": "opo", **_CLIP_ONLY, **_NO_KL, "opo_baseline": "group"},
    "gfpo": {"runner": "rl", "label": "GFPO", "estimator": "grpo", **_PPO_CLIP, **_PAPER_KL, "gfpo_metric": "length",
             "gfpo_filtered": "zero"},
    "ttrl": {"runner": "rl", "label": "TTRL", "estimator": "grpo", **_CLIP_ONLY, **_PAPER_KL,
             "reward_source": "majority_vote"},
    "em_rl": {"runner": "rl", "label": "EM-RL", "estimator": "rloo", **_CLIP_ONLY, **_PAPER_KL,
              "reward_source": "neg_entropy", "em_reduce": "mean", "entropy_coef": 0.001},
    "gvpo": {"runner": "rl", "label": "GVPO", "estimator": "dr_grpo", "policy_loss": "gvpo", "gvpo_beta": 0.1,
             "ratio_level": "none", "clip_low": 0.2, "clip_high": 0.2, "dual_clip_c": None, **_NO_KL},
    "riskpo": {"runner": "rl", "label": "RiskPO", "estimator": "riskpo", **_CLIP_ONLY, **_NO_KL, "riskpo_bundle": 5,
               "riskpo_alpha": 0.2, "riskpo_beta": 0.9, "riskpo_mix_weight": 1.5, "riskpo_natural_baseline": True,
               "riskpo_credit": "std"},
    "em_ft": {"runner": "rl", "label": "EM-FT", "estimator": "reinforce", "policy_loss": "em_ft", "ratio_level": "none",
              "clip_low": 0.2, "clip_high": 0.2, "dual_clip_c": None, **_NO_KL},
}
# Entry keys that describe the algorithm rather than set an AlgorithmConfig field.
ALGORITHM_META_KEYS = ("runner", "label")
# Defaults every policy-gradient algorithm (runner rl or ppo) shares unless its entry says otherwise.
_COMMON = {"drop_all_wrong": False, "drop_all_correct": False, "filter_mode": "zero", "std_eps": 1e-6,
           "loss_agg": "token_mean", "entropy_coef": 0.0, "dynamic_sampling": False, "min_valid_frac": 1.0,
           "max_resample_rounds": 10, "resample_exhausted": "error", "overlong_filter": False,
           "overlong_buffer_len": 0, "overlong_penalty_factor": 1.0,
           "policy_loss": "ppo", "kl_in_reward_coef": 0.0, "reward_source": "grader"}
# Estimators whose baseline comes from the other responses of the group: with one response they train on nothing.
GROUP_BASELINES = ("reinforce_rej", "grpo", "dr_grpo", "rloo", "gpg")
ALGORITHMS = tuple(ALGORITHM_DEFAULTS)
RL_ALGORITHMS = tuple(name for name, entry in ALGORITHM_DEFAULTS.items() if entry["runner"] == "rl")
TESTBED_EVAL = ["testbed_hard", "testbed_ops6"]  # v2: 5 and 6 operands, so trained arms stay below 90% (issue 11)
TESTBED_V1_EVAL = ["testbed_v1_easy", "testbed_v1_medium", "testbed_v1_hard"]
PAPER_EVAL = ["math500", "minerva_math", "olympiadbench"]


class Section(BaseModel):
    # NaN / inf are never meaningful settings and would silently break comparisons (e.g. reward.correct).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LoraConfig(Section):
    enabled: bool = Field(False, description="Train a LoRA adapter (peft) instead of all weights.")
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling alpha.")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: str | list[str] = Field("all-linear", description="Modules to adapt (peft syntax).")


class ModelConfig(Section):
    path: str = Field(
        "testbed",
        description="Starting policy: 'testbed' (the locally built tiny model, v2; 'testbed:v1' for v1), "
        "a local folder, or a hub id.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when path is a hub id.")
    trust_remote_code: bool = Field(
        False, description="Allow model code from the hub to run. Off by default; printed when on."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype: auto = float32 on CPU, bfloat16 on GPU."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory on large models.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapter settings.")


class DataConfig(Section):
    source: Literal["testbed", "jsonl", "hub"] = Field(
        "testbed", description="Training prompts: the synthetic testbed, a local JSONL file, or a hub dataset."
    )
    path: str | None = Field(None, description="JSONL file (source: jsonl).")
    hub_id: str | None = Field(None, description="Dataset id (source: hub), e.g. ScaleML-RLHF/numina_math.")
    subset: str | None = Field(None, description="Dataset config name (source: hub).")
    split: str = Field(
        "train", description="Dataset split (hub) or testbed split ('train'; 'sft' for SFT; 'v1/train' for v1)."
    )
    problem_field: str = Field("problem", description="Field with the problem text (dotted for nesting).")
    answer_field: str = Field(
        "answer", description="Field with the gold answer (dotted, e.g. reward_model.ground_truth)."
    )
    solution_field: str = Field("solution", description="Field with the reference solution (SFT only).")
    prompt_template: Literal["paper", "plain", "raw"] = Field(
        "paper", description="How prompts are rendered: paper (chat template + paper suffix), plain, raw."
    )
    max_prompts: int | None = Field(None, ge=1, description="Use only the first N prompts (after shuffling).")
    shuffle: bool = Field(True, description="Shuffle prompts with the run seed.")
    lenient: bool = Field(False, description="Skip (and count) malformed rows instead of failing.")


class AlgorithmConfig(Section):
    name: Literal[ALGORITHMS] = Field(  # type: ignore[valid-type]
        ..., description=f"Algorithm: {', '.join(ALGORITHMS)}."
    )
    # Advantage and group filtering (None = the algorithm's default, see ALGORITHM_DEFAULTS).
    estimator: Literal[ESTIMATOR_NAMES] | None = Field(  # type: ignore[valid-type]
        None, description="Advantage estimator (defaults from the algorithm): " + ", ".join(ESTIMATOR_NAMES) + "."
    )
    drop_all_wrong: bool | None = Field(None, description="Drop prompts whose responses are all wrong.")
    drop_all_correct: bool | None = Field(None, description="Drop prompts whose responses are all correct.")
    filter_mode: Literal["zero", "drop"] | None = Field(
        None,
        description="reinforce_rej: 'zero' zeroes all-equal groups' advantage (public code, tokens stay in the "
        "denominator); 'drop' removes them (paper text).",
    )
    std_eps: float | None = Field(None, ge=0, description="GRPO: epsilon added to the group std.")
    # Policy loss
    ratio_level: Literal["none", "token", "sequence"] | None = Field(
        None, description="Importance ratio: none (−A·log π), token (PPO clip), sequence (GSPO)."
    )
    clip_low: float | None = Field(None, ge=0, le=1, description="Clip range below 1 (ε_low).")
    clip_high: float | None = Field(None, ge=0, le=10, description="Clip range above 1 (ε_high).")
    dual_clip_c: float | None = Field(
        None, ge=0, description="Dual-clip bound c for negative advantages (0 disables; null = algorithm default)."
    )
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm", "seq_sum_token_mean"] | None = (
        Field(None, description="Loss aggregation over the mini-batch (seq_sum_token_mean: GVPO's sum over "
              "sequences per micro-batch / accumulation steps)."))
    kl_coef: float | None = Field(None, ge=0, description="KL-to-initial-policy loss coefficient (0 = off).")
    kl_type: Literal["low_var_kl", "k1", "k2"] | None = Field(None, description="KL estimator in the loss.")
    log_kl: bool = Field(
        True, description="Measure KL to the initial policy every step even when it is not in the loss."
    )
    entropy_coef: float | None = Field(None, ge=0, description="Entropy bonus coefficient.")
    # Dynamic sampling (DAPO, GPG) and overlong shaping (DAPO)
    dynamic_sampling: bool | None = Field(
        None, description="Resample prompts not yet used in the pass until min_valid_frac of the batch's groups "
        "have unequal rewards (DAPO, GPG); the batch is those groups, topped up with all-equal ones if needed.",
    )
    min_valid_frac: float | None = Field(
        None, gt=0, le=1, description="Dynamic sampling: fraction of groups that must have unequal rewards "
        "(DAPO 1.0: every group; GPG 0.5).",
    )
    max_resample_rounds: int | None = Field(
        None, ge=1, le=1000, description="Dynamic sampling: generation batches per rollout at most, the first "
        "included (verl DAPO max_num_gen_batches 10; GPG 20).",
    )
    resample_exhausted: Literal["error", "pad"] | None = Field(
        None, description="Dynamic sampling, when max_resample_rounds run out: error (as DAPO's and GPG's code) "
        "or pad the batch with all-equal groups (zero advantage; counted in metrics padded_groups).",
    )
    overlong_filter: bool | None = Field(None, description="Exclude truncated responses from the loss.")
    overlong_buffer_len: int | None = Field(
        None, ge=0, description="DAPO soft overlong penalty: the last N tokens before rollout.max_new_tokens are "
        "penalised linearly down to -factor (0 = off; DAPO default: max_new_tokens / 5, as 4096 of 20480).",
    )
    overlong_penalty_factor: float | None = Field(
        None, ge=0, description="DAPO soft overlong penalty factor (verl overlong_buffer.penalty_factor)."
    )
    # PPO
    critic_lr: float = Field(1e-5, gt=0, description="PPO: critic learning rate.")
    gamma: float = Field(1.0, ge=0, le=1, description="PPO: GAE discount.")
    lam: float = Field(1.0, ge=0, le=1, description="PPO: GAE lambda.")
    value_clip: float = Field(0.5, gt=0, description="PPO: value-loss clip range.")
    critic_warmup_steps: int = Field(0, ge=0, description="PPO: critic-only steps before the actor updates.")
    # Iterative DPO
    dpo_beta: float = Field(0.1, gt=0, description="DPO: beta.")
    dpo_iterations: int = Field(2, ge=1, le=100, description="Iterative DPO: sample-pair-train iterations.")
    sft_coef: float = Field(0.0, ge=0, description="DPO: weight of an extra SFT term on the chosen response.")
    dpo_label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="DPO: label smoothing ε of the sigmoid loss (conservative DPO; "
        "Online-DPO-R1 scripts: 0.1).",
    )
    dpo_epochs: int = Field(
        1, ge=1, le=100, description="Iterative DPO: passes over each iteration's pairs (Online-DPO-R1: 2)."
    )
    pair_strategy: Literal["random", "max_min", "shortest"] = Field(
        "random", description="DPO: how chosen/rejected are picked: random (uniform correct vs uniform wrong), "
        "max_min (first correct vs first wrong, Online-DPO-R1), shortest (shortest correct vs uniform wrong)."
    )
    # Wave 2 (docs/algorithms.md). None = the algorithm's default.
    policy_loss: Literal[POLICY_LOSS_NAMES] | None = Field(  # type: ignore[valid-type]
        None, description="Policy loss: ppo (ratio_level: none / PPO clip / GSPO), cispo, sapo, gmpo, kl_cov, "
        "clip_cov, gvpo, em_ft (the entropy of the sampled responses, no reward).")
    gvpo_beta: float | None = Field(None, gt=0, description="GVPO: beta of the implicit reward (authors: 0.1).")
    sapo_tau_pos: float | None = Field(None, gt=0, description="SAPO: gate temperature for A > 0 (paper: 1.0).")
    sapo_tau_neg: float | None = Field(None, gt=0, description="SAPO: gate temperature for A <= 0 (paper: 1.05).")
    cov_ratio: float | None = Field(None, ge=0, le=1, description="KL-Cov / Clip-Cov: fraction of tokens picked by "
                                    "covariance (KL-Cov 7B 2e-3, 32B 2e-4; Clip-Cov 2e-4).")
    cov_kl_coef: float | None = Field(None, ge=0, description="KL-Cov: coefficient of |log ratio| (authors: 1).")
    cov_lb: float | None = Field(None, description="Clip-Cov: lower covariance bound of candidate tokens (1).")
    cov_ub: float | None = Field(None, description="Clip-Cov: upper covariance bound of candidate tokens (5).")
    kl_in_reward_coef: float | None = Field(None, ge=0, description="KL in the reward: r - coef * sum_t (log pi_old - "
                                            "log pi_ref), k1, on-policy (0 = off); per token for REINFORCE++.")
    reward_source: Literal["grader", "majority_vote", "neg_entropy", "seq_logprob"] | None = Field(
        None, description="Training reward: grader (gold answer), majority_vote (TTRL, no gold), neg_entropy "
        "(EM-RL token), seq_logprob (EM-RL sequence). Logged accuracy always uses the grader.")
    em_reduce: Literal["mean", "sum"] | None = Field(None, description="EM-RL: token mean (code) or sum (paper).")
    vote_train_n: int | None = Field(None, ge=1, description="TTRL: train on the first N of each group; all n vote.")
    opo_baseline: Literal["group", "batch"] | None = Field(
        None, description="OPO: length-weighted baseline over the group (LMOps optimal) or the whole batch "
        "(optimal_batch, their REINFORCE++ variant).")
    gfpo_keep: int | None = Field(None, ge=1, description="GFPO: keep the k best of a group's n (gfpo: n/2; null off).")
    gfpo_metric: Literal["length", "reward_per_token"] | None = Field(
        None, description="GFPO: rank by length (shortest kept) or reward per token (highest kept).")
    gfpo_filtered: Literal["zero", "drop"] | None = Field(
        None, description="GFPO: the filtered get A = 0 and stay in the normaliser (paper), or leave the loss (TRL).")
    ref_reset_every: int = Field(0, ge=0, description="ProRL: reset the reference to the current policy every N "
                                 "optimizer steps (0 = off; needs a reference: kl_coef > 0 or log_kl).")
    ref_reset_optimizer: bool = Field(True, description="ProRL: re-initialise the optimizer state at each reset.")
    riskpo_bundle: int | None = Field(None, ge=1, description="RiskPO: consecutive prompts per bundle (authors: 5).")
    riskpo_alpha: float | None = Field(None, ge=0, le=1, description="RiskPO: lower quantile (MATH script: 0.2).")
    riskpo_beta: float | None = Field(None, ge=0, le=1, description="RiskPO: upper quantile (MATH script: 0.9).")
    riskpo_mix_weight: float | None = Field(None, ge=0, description="RiskPO: CVaR mixing weight w (1.5; 0 = off).")
    riskpo_natural_baseline: bool | None = Field(None, description="RiskPO: add q_a - q_b to the RVaR advantage.")
    riskpo_credit: Literal["std", "sum_mean", "uniform", "score"] | None = Field(
        None, description="RiskPO: credit assignment (std, sum_mean, uniform, score: 0.5x if reward > 0 else 1.5x).")


class RolloutConfig(Section):
    prompts_per_batch: int = Field(8, ge=1, description="Prompts per rollout batch (paper: 1024).")
    n: int = Field(8, ge=1, le=1024, description="Responses per prompt (paper: 4; PPO: 1).")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature (paper: 1.0); a schedule's start.")
    temperature_schedule: Literal["constant", "linear", "cosine", "step"] = Field("constant", description="Rollout "
        "temperature: constant, linear / cosine to temperature_end, or step (+step_size every step_every steps).")
    temperature_end: float | None = Field(None, gt=0, le=10, description="Final temperature of the schedule.")
    temperature_step_every: int = Field(0, ge=0, description="Step schedule: optimizer steps between changes.")
    temperature_step_size: float = Field(0.0, description="Step schedule: temperature change per step.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (paper: 1.0).")
    max_new_tokens: int = Field(48, ge=1, le=131072, description="Max generated tokens (paper: 3072–4096).")
    max_prompt_tokens: int | None = Field(None, ge=1, description="Truncate prompts to this many tokens.")
    use_vllm: bool = Field(False, description="Generate rollouts with vLLM through TRL (GPU only).")
    vllm_mode: Literal["colocate", "server"] = Field("colocate", description="vLLM: colocate or server.")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="vLLM colocate memory fraction.")
    vllm_importance_sampling_correction: bool = Field(
        True, description="With use_vllm: weight the policy loss by TRL's importance ratio between the trainer's and "
        "vLLM's log-probs of the sampled tokens (corrects their mismatch; on by default, as in TRL).",
    )
    vllm_importance_sampling_mode: Literal["sequence_mask", "sequence_truncate", "token_mask", "token_truncate"] = (
        Field("sequence_mask", description="vLLM IS: per sequence or per token; ratios above the cap are zeroed "
              "(mask) or clipped to it (truncate). TRL's default.")
    )
    vllm_importance_sampling_cap: float | None = Field(
        3.0, gt=0, description="vLLM IS: upper bound of the ratio (TRL's vllm_importance_sampling_clip_max).",
    )


class OptimConfig(Section):
    lr: float = Field(1e-6, gt=0, le=1, description="Learning rate (paper: 1e-6, constant).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (paper: 0.01).")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "constant", description="LR schedule."
    )
    warmup_steps: int = Field(0, ge=0, description="Warmup optimizer steps.")
    mini_batch_prompts: int | None = Field(
        None, ge=1,
        description="Prompts per optimizer step (paper: 512 of 1024 → 2 steps per rollout). "
        "Default: prompts_per_batch (on-policy, 1 step per rollout).",
    )
    ppo_epochs: int = Field(
        1, ge=1, description="Passes over each rollout (TRL num_iterations; paper: 1). Optimizer steps per rollout "
        "= mini-batches × ppo_epochs; every step after the first is off-policy. RL runner only.",
    )
    micro_batch_size: int = Field(
        16, ge=1, description="Responses per forward/backward pass per device (gradient accumulation)."
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    max_steps: int | None = Field(
        None, ge=1, description="Optimizer steps. Default: one pass over the prompts (paper)."
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the data when max_steps is not set.")


class RewardConfig(Section):
    correct: float = Field(1.0, description="Reward of a correct response (paper: 1).")
    incorrect: float = Field(-1.0, description="Reward of a wrong response (paper: −1; public code: 0).")
    grader_timeout_s: float = Field(5.0, gt=0, description="Per-answer grading time limit.")
    grader_workers: int = Field(1, ge=0, le=64, description="Grading worker processes (0 = in-process).")
    function: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        description="Custom reward 'module:function' instead of the grader (runs your code; printed).",
    )


class EvalConfig(Section):
    benchmarks: list[str] = Field(default_factory=lambda: list(PAPER_EVAL), description="Benchmarks to run.")
    k: int = Field(16, ge=1, le=1024, description="Samples per problem (mean@k; paper: 16).")
    temperature: float = Field(1.0, ge=0, le=10, description="Sampling temperature (paper: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (paper: 1.0).")
    max_new_tokens: int = Field(4096, ge=1, le=131072, description="Max generated tokens (paper: 4096).")
    batch_size: int = Field(64, ge=1, description="Generation batch size (results do not depend on it).")
    backend: Literal["hf", "vllm"] = Field("hf", description="hf (transformers) or vllm (GPU).")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallelism.")
    grader: Literal["rlbench", "math_verify"] = Field(
        "rlbench",
        description="Answer checker, recorded in every summary. rlbench: Math-Verify plus rlbench's extraction, "
        "normalisation, multi-answer sets and tolerance (right more often on outside tests). math_verify: plain "
        "Math-Verify exactly as the reference paper called it, for apples-to-apples with published tables.",
    )
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N problems of each benchmark.")
    em_inf: bool = Field(False, description="EM-INF: a few Adam steps lowering each decoding step's entropy on the "
                         "logits (hf backend; arXiv 2505.15134). Recorded in the eval settings.")
    em_inf_mode: Literal["logits", "adaptive_temp"] = Field(
        "logits", description="EM-INF: logits (Adam on each step's logits) or adaptive_temp (bisect each step's "
        "temperature to a target entropy; the authors' adaptive-temperature variant).")
    em_inf_threshold: float = Field(0.3, ge=0, description="EM-INF: stop once the entropy is below this (math: 0.3).")
    em_inf_kl_weight: float = Field(0.05, ge=0, description="EM-INF: weight of KL(p_orig || p) (math: 0.05).")
    em_inf_lr: float = Field(0.1, gt=0, description="EM-INF: Adam learning rate on the logits (0.1).")
    em_inf_steps: int = Field(3, ge=1, le=100, description="EM-INF: Adam steps per decoding step at most (math: 3).")
    em_inf_target_ratio: float = Field(0.85, gt=0, le=1, description="Adaptive temperature: target entropy as a "
                                       "fraction of the step's entropy (math: 0.85).")
    em_inf_t_min: float = Field(0.01, gt=0, description="Adaptive temperature: lowest temperature (0.01).")
    em_inf_t_max: float = Field(1.0, gt=0, description="Adaptive temperature: highest temperature (1).")
    em_inf_tol: float = Field(0.1, gt=0, description="Adaptive temperature: entropy tolerance of the bisection (0.1).")
    em_inf_max_iter: int = Field(100, ge=1, le=1000, description="Adaptive temperature: bisection steps at most.")
    em_inf_min_entropy: float = Field(1e-5, ge=0, description="Adaptive temperature: leave a step whose entropy is "
                                      "at most this unchanged; also the lowest target (1e-5).")


class OutputConfig(Section):
    dir: str = Field("results", description="Folder that holds run folders.")
    run_name: str | None = Field(
        None, min_length=1, pattern=r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$",
        description="Run folder name (letters, digits, _ . -). Default: '<name>-s<seed>'.",
    )
    save_model: bool = Field(True, description="Save the final model in Hugging Face format.")
    checkpoint_every: int = Field(
        0, ge=0,
        description="Save a resumable checkpoint every N optimizer steps (0 = off); a multiple of the "
        "optimizer steps per rollout, so a checkpoint never splits a rollout.",
    )
    keep_checkpoints: int = Field(1, ge=1, description="Checkpoints kept on disk.")
    report_to: list[Literal["tensorboard", "wandb", "trackio"]] = Field(
        default_factory=list,
        description="Experiment trackers fed with metrics.jsonl's keys, the resolved recipe and manifest (run config) "
        "and eval summaries: tensorboard (<run>/tensorboard/), wandb (<run>/wandb/; WANDB_MODE=offline keeps it "
        "local), trackio. Default: none. Install with pip install 'rlbench[tracking]'.",
    )
    tracking_project: str = Field("rlbench", min_length=1, description="Project name for wandb and trackio runs.")


class Recipe(Section):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="Recipe name (groups seeds).")
    label: str | None = Field(None, description="Row label in comparison tables. Default: the algorithm.")
    description: str = Field("", description="One line shown by `rlbench recipes`.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Run seed (data order, sampling, init).")
    torch_threads: int | None = Field(
        None, ge=1, le=1024, description="Fix torch's CPU thread count (recorded; needed for bit-identical CPU runs)."
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    algorithm: AlgorithmConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> Recipe:
        mini = self.optim.mini_batch_prompts or self.rollout.prompts_per_batch
        if self.rollout.prompts_per_batch % mini:
            raise ValueError(
                f"optim.mini_batch_prompts ({mini}) must divide rollout.prompts_per_batch "
                f"({self.rollout.prompts_per_batch})"
            )
        if (mini * self.rollout.n) % self.optim.micro_batch_size:
            raise ValueError(
                f"optim.micro_batch_size ({self.optim.micro_batch_size}) must divide the responses per optimizer "
                f"step (mini_batch_prompts × n = {mini * self.rollout.n})"
            )
        every, per_rollout = self.output.checkpoint_every, self.steps_per_rollout
        if every and every % per_rollout:
            # TRL buffers a rollout's generations in memory; a checkpoint inside a rollout loses the rest of
            # it and a resumed run would no longer match an uninterrupted one.
            up = (every // per_rollout + 1) * per_rollout
            raise ValueError(
                f"output.checkpoint_every ({every}) must be a multiple of the optimizer steps per rollout "
                f"({per_rollout} = prompts_per_batch / mini_batch_prompts × ppo_epochs), so checkpoints fall on "
                f"rollout boundaries: use e.g. output.checkpoint_every={up}"
            )
        if self.data.source == "jsonl" and not self.data.path:
            raise ValueError("data.path is required when data.source is 'jsonl'")
        if self.data.source == "hub" and not self.data.hub_id:
            raise ValueError("data.hub_id is required when data.source is 'hub'")
        if self.optim.ppo_epochs > 1 and ALGORITHM_DEFAULTS[self.algorithm.name]["runner"] != "rl":
            raise ValueError(f"optim.ppo_epochs applies to the RL runner only, not to {self.algorithm.name}: "
                             "set optim.ppo_epochs=1")
        if self.algorithm.name == "ppo" and self.rollout.n != 1:
            raise ValueError("PPO uses one response per prompt: set rollout.n=1")
        return self

    @property
    def run_name(self) -> str:
        return self.output.run_name or f"{self.name}-s{self.seed}"

    @property
    def mini_batches_per_rollout(self) -> int:
        return self.rollout.prompts_per_batch // (self.optim.mini_batch_prompts or self.rollout.prompts_per_batch)

    @property
    def steps_per_rollout(self) -> int:
        """Optimizer steps per rollout: mini-batches × ppo_epochs."""
        return self.mini_batches_per_rollout * self.optim.ppo_epochs


def resolve_defaults(recipe: Recipe) -> Recipe:
    """Fill every algorithm field left unset with the algorithm's default, so the recorded recipe is explicit."""
    algo = recipe.algorithm
    entry = ALGORITHM_DEFAULTS[algo.name]
    defaults = {**_COMMON, **entry} if entry["runner"] in ("rl", "ppo") else dict(entry)
    for key, value in defaults.items():
        if key not in ALGORITHM_META_KEYS and getattr(algo, key) is None:
            if callable(value):  # a default that depends on other settings
                value = value(recipe)
            setattr(algo, key, value)
    if algo.estimator in GROUP_BASELINES and recipe.rollout.n < 2:
        raise UserError(f"{algo.name} with estimator {algo.estimator} takes its baseline from the other responses "
                        "of a group: with rollout.n=1 every advantage is 0", where="rollout.n",
                        fix="set rollout.n=2 or more, or use an estimator without a group baseline (reinforce, raft)")
    if algo.overlong_buffer_len and algo.overlong_buffer_len > recipe.rollout.max_new_tokens:
        raise UserError(f"algorithm.overlong_buffer_len ({algo.overlong_buffer_len}) exceeds rollout.max_new_tokens "
                        f"({recipe.rollout.max_new_tokens})", where="algorithm.overlong_buffer_len",
                        fix="use a buffer of at most rollout.max_new_tokens tokens (0 turns the penalty off)")
    resolve_wave2(recipe, RL_ALGORITHMS)
    if algo.dual_clip_c is not None and algo.dual_clip_c < 1:
        if algo.dual_clip_c != 0:
            raise UserError(f"algorithm.dual_clip_c must be 0 (off) or >= 1, got {algo.dual_clip_c}",
                            where="algorithm.dual_clip_c")
        algo.dual_clip_c = None
    return recipe


# ---------------------------------------------------------------- loading and error messages (YAML: recipe_yaml.py)


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid keys at the location of an error (for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
    return list(getattr(current, "model_fields", {}))


def format_validation_error(err: ValidationError, where: str) -> UserError:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    # Keys come from user YAML and may hold newlines or control characters: escape them to keep one line.
    key = ".".join(str(p) for p in loc).encode("unicode_escape").decode("ascii") or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        valid = _field_names(Recipe, loc)
        guess = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        msg = f"unknown key '{key}'"
        fix = f"{hint}valid keys here: {', '.join(valid)}" if valid else "remove it"
    elif kind == "missing":
        msg, fix = f"required key '{key}' is missing", f"add '{key}' (see the recipe reference in README.md)"
    elif kind == "value_error" and not loc:
        # A cross-field rule from Recipe._check_consistency: its message already names the keys.
        msg, fix = str(first["msg"]).removeprefix("Value error, "), "change one of the keys named above"
    else:
        got = first.get("input")
        got_text = repr(got) if not isinstance(got, dict) else "a mapping"
        if len(got_text) > 60:
            got_text = got_text[:57] + "..."
        msg = f"key '{key}': {first['msg']} (got {got_text})"
        fix = "see `rlbench validate --help` and the recipe reference in README.md"
    more = len(err.errors()) - 1
    if more:
        msg += f" [and {more} more problem{'s' if more > 1 else ''}]"
    return UserError(msg, where=where, fix=fix)


def recipe_from_dict(data: dict[str, Any], where: str) -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise format_validation_error(e, where) from None
    except (RecursionError, OverflowError, ValueError, TypeError) as e:
        raise UserError(f"invalid recipe: {e}", where=where) from None
    return resolve_defaults(recipe)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    data = apply_overrides(read_yaml(path), list(overrides or []))
    return recipe_from_dict(data, str(path))


def recipe_to_yaml(recipe: Recipe, command: str | None = None) -> str:
    header = f"# Resolved recipe (every default filled in).\n# {command}\n" if command else "# Resolved recipe\n"
    return header + yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def reference_rows() -> list[tuple[str, str, str]]:
    """(key, default, help) for every recipe key, for the README's recipe reference and `rlbench recipes --keys`."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
                continue
            default = "required" if field.is_required() else field.get_default(call_default_factory=True)
            rows.append((f"{prefix}{name}", "null" if default is None else str(default), field.description or ""))

    walk(Recipe, "")
    return rows
