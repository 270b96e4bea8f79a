"""Outcome-reward advantage estimators (RAFT, Reinforce, Reinforce-Rej, GRPO, Dr. GRPO, RLOO, GPG).

One scalar advantage per response, computed from the rewards of its group (the n responses to one prompt),
plus a row mask `keep` saying which responses enter the loss and its token normaliser. Sources:
"A Minimalist Approach to LLM Reasoning" (arXiv 2504.11343) and its public code RLHFlow/Minimal-RL
(`verl/trainer/ppo/core_algos.py`: compute_raft_outcome_advantage, compute_reinforce_rej_outcome_advantage,
compute_grpo_outcome_advantage, compute_rloo_outcome_advantage); see docs/reference.md §1-2.

Conventions: `rewards` is (N,) with N = G * group_size and each group's rows contiguous (TRL's order);
NaN marks a missing reward: such a row gets advantage 0, keep False, and is ignored in group statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from rlbench_cli.errors import UserError

FILTER_MODES = ("zero", "drop")


@dataclass
class AdvantageResult:
    advantages: torch.Tensor  # (N,) one scalar per response (copied to every token by the caller)
    keep: torch.Tensor  # (N,) bool: rows that enter the loss and its token normaliser
    # frac_all_correct, frac_all_wrong, frac_all_equal, kept_frac, n_groups, n_invalid
    stats: dict[str, float]
    group_size: int = field(default=1)  # needed by local_slice to check that no group is split


# ---------------------------------------------------------------------------------------------------------
# group statistics over valid (non-NaN) rows


def _valid_and_filled(grouped_rewards: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    r = grouped_rewards.to(torch.float64)
    v = ~torch.isnan(r) if valid is None else valid.to(torch.bool) & ~torch.isnan(r)
    return torch.where(v, r, torch.zeros_like(r)), v


def _group_mean(r: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked per-group mean (G, 1) and valid count (G, 1)."""
    k = v.sum(dim=1, keepdim=True)
    mean = (r * v).sum(dim=1, keepdim=True) / k.clamp(min=1)
    return mean, k


def _all_equal(r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(G,) True where every valid reward of the group is the same (a group of one or none counts)."""
    big = torch.finfo(r.dtype).max
    hi = torch.where(v, r, torch.full_like(r, -big)).amax(dim=1)
    lo = torch.where(v, r, torch.full_like(r, big)).amin(dim=1)
    return (hi <= lo) | (v.sum(dim=1) <= 1)


# ---------------------------------------------------------------------------------------------------------
# estimators: (G, n) rewards -> (G, n) advantages; rows that are not valid get 0


def raft_advantage(grouped_rewards: torch.Tensor, *, valid: torch.Tensor | None = None,
                   correct: torch.Tensor | None = None, std_eps: float = 1e-6) -> torch.Tensor:
    """RAFT / RAFT++: A = 1[correct] (rejection sampling: only accepted samples are reinforced).

    Minimal-RL code (core_algos.compute_raft_outcome_advantage): A = max(r, 0), i.e. 1[correct] when the
    correct reward is 1, for both {0, 1} and {-1, 1}. The paper's 1[r = max_i r_i] would also keep every
    response of an all-wrong group; the code's rule is used (docs/reference.md §1). Without `correct`, falls back
    to the code's max(r, 0).
    """
    r, v = _valid_and_filled(grouped_rewards, valid)
    a = correct.to(torch.float64) if correct is not None else r.clamp(min=0.0)
    return torch.where(v, a, torch.zeros_like(a))


def reinforce_advantage(grouped_rewards: torch.Tensor, *, valid: torch.Tensor | None = None,
                        correct: torch.Tensor | None = None, std_eps: float = 1e-6) -> torch.Tensor:
    """Vanilla Reinforce: A = r, no baseline (paper §2)."""
    r, v = _valid_and_filled(grouped_rewards, valid)
    return torch.where(v, r, torch.zeros_like(r))


def reinforce_rej_advantage(grouped_rewards: torch.Tensor, *, valid: torch.Tensor | None = None,
                            correct: torch.Tensor | None = None, std_eps: float = 1e-6) -> torch.Tensor:
    """Reinforce-Rej: A = r if the group's valid rewards are not all equal, else 0.

    Minimal-RL core_algos.compute_reinforce_rej_outcome_advantage zeroes the advantage where the group's
    std is 0. Difference: verl keeps A = r for a group of one (its std is set to 1); here a group with a
    single valid reward counts as all-equal (it carries no contrast) and gets 0.
    """
    r, v = _valid_and_filled(grouped_rewards, valid)
    eq = _all_equal(r, v).unsqueeze(1)
    return torch.where(v & ~eq, r, torch.zeros_like(r))


def grpo_advantage(grouped_rewards: torch.Tensor, *, valid: torch.Tensor | None = None,
                   correct: torch.Tensor | None = None, std_eps: float = 1e-6) -> torch.Tensor:
    """GRPO: A = (r - mean_g) / (std_g + std_eps), std unbiased (ddof=1), as torch.std in
    Minimal-RL core_algos.compute_grpo_outcome_advantage. A group of one gets 0 (verl: r / (1 + eps))."""
    r, v = _valid_and_filled(grouped_rewards, valid)
    mean, k = _group_mean(r, v)
    var = (((r - mean) ** 2) * v).sum(dim=1, keepdim=True) / (k - 1).clamp(min=1)
    a = (r - mean) / (var.sqrt() + std_eps)
    keep_rows = v & ~_all_equal(r, v).unsqueeze(1)  # exact 0 for all-equal groups and groups of one
    return torch.where(keep_rows, a, torch.zeros_like(a))


def dr_grpo_advantage(grouped_rewards: torch.Tensor, *, valid: torch.Tensor | None = None,
                      correct: torch.Tensor | None = None, std_eps: float = 1e-6) -> torch.Tensor:
    """Dr. GRPO (arXiv 2503.20783): A = r - mean_g (no std division)."""
    r, v = _valid_and_filled(grouped_rewards, valid)
    mean, _ = _group_mean(r, v)
    keep_rows = v & ~_all_equal(r, v).unsqueeze(1)
    return torch.where(keep_rows, r - mean, torch.zeros_like(r))


def rloo_advantage(grouped_rewards: torch.Tensor, *, valid: torch.Tensor | None = None,
                   correct: torch.Tensor | None = None, std_eps: float = 1e-6) -> torch.Tensor:
    """RLOO (arXiv 2402.14740): A_i = r_i - mean_{j != i} r_j = k/(k-1) (r_i - mean_g); group of one -> 0.
    Same as Minimal-RL core_algos.compute_rloo_outcome_advantage."""
    r, v = _valid_and_filled(grouped_rewards, valid)
    mean, k = _group_mean(r, v)
    a = (r - mean) * k / (k - 1).clamp(min=1)
    keep_rows = v & ~_all_equal(r, v).unsqueeze(1)
    return torch.where(keep_rows, a, torch.zeros_like(a))


def gpg_advantage(grouped_rewards: torch.Tensor, *, valid: torch.Tensor | None = None,
                  correct: torch.Tensor | None = None, std_eps: float = 1e-6,
                  num_items: int | None = None) -> torch.Tensor:
    """GPG (arXiv 2504.02546): A = alpha (r - mean_g), alpha = (responses in the batch) / (responses with
    nonzero advantage), alpha = 1 if none. The batch count defaults to the valid rows; pass `num_items` to
    count something else (e.g. the global batch when only a slice is given)."""
    a = dr_grpo_advantage(grouped_rewards, valid=valid, std_eps=std_eps)
    _, v = _valid_and_filled(grouped_rewards, valid)
    n_batch = int(v.sum()) if num_items is None else int(num_items)
    n_nonzero = int((a != 0).sum())
    alpha = n_batch / n_nonzero if n_nonzero > 0 else 1.0
    return a * alpha


ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {
    "raft": raft_advantage,
    "reinforce": reinforce_advantage,
    "reinforce_rej": reinforce_rej_advantage,
    "grpo": grpo_advantage,
    "dr_grpo": dr_grpo_advantage,
    "rloo": rloo_advantage,
    "gpg": gpg_advantage,
}


# ---------------------------------------------------------------------------------------------------------


def compute_advantages(rewards: torch.Tensor, correct: torch.Tensor, group_size: int, estimator: str, *,
                       std_eps: float = 1e-6, drop_all_wrong: bool = False, drop_all_correct: bool = False,
                       filter_mode: str = "zero", num_items: int | None = None) -> AdvantageResult:
    """Per-response advantages and the row mask for one rollout batch.

    `filter_mode` says what happens to the rows an estimator rejects (RAFT: incorrect responses; every other
    baseline estimator: groups whose valid rewards are all equal, whose advantage is 0 anyway):
    "zero" (Minimal-RL code: advantage 0, row kept, so its tokens stay in the token-mean denominator) or
    "drop" (the paper's wording: keep False, the row leaves the loss and its normaliser).
    Vanilla `reinforce` rejects nothing. `drop_all_wrong` / `drop_all_correct` drop whole groups whose valid
    responses are all incorrect / all correct, for any estimator ("Reinforce + remove all-wrong", §1).
    `num_items` is passed to `gpg` as the batch count in alpha.
    """
    if estimator not in ESTIMATORS:
        raise UserError(f"unknown advantage estimator {estimator!r}", where="algorithm.estimator",
                        fix=f"use one of: {', '.join(ESTIMATORS)}")
    if filter_mode not in FILTER_MODES:
        raise UserError(f"unknown filter_mode {filter_mode!r}", where="algorithm.filter_mode",
                        fix="use 'zero' (public code) or 'drop' (paper)")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    rewards = torch.as_tensor(rewards)
    correct = torch.as_tensor(correct).to(torch.bool)
    if rewards.ndim != 1 or correct.shape != rewards.shape:
        raise ValueError(f"rewards and correct must be (N,) of equal shape, got {tuple(rewards.shape)} "
                         f"and {tuple(correct.shape)}")
    n_rows = rewards.shape[0]
    if n_rows % group_size != 0:
        raise ValueError(f"{n_rows} rewards is not a multiple of group_size {group_size}")
    n_groups = n_rows // group_size

    r = rewards.to(torch.float64).reshape(n_groups, group_size)
    c = correct.reshape(n_groups, group_size)
    valid = ~torch.isnan(r)
    filled = torch.where(valid, r, torch.zeros_like(r))

    kwargs = {"valid": valid, "correct": c, "std_eps": std_eps}
    if estimator == "gpg":
        kwargs["num_items"] = num_items
    adv = ESTIMATORS[estimator](r, **kwargs)

    has_valid = valid.any(dim=1)
    all_correct = has_valid & (c | ~valid).all(dim=1)
    all_wrong = has_valid & (~c | ~valid).all(dim=1)
    all_equal = _all_equal(filled, valid)

    keep = valid.clone()
    if drop_all_wrong:
        keep &= ~all_wrong.unsqueeze(1)
    if drop_all_correct:
        keep &= ~all_correct.unsqueeze(1)
    if filter_mode == "drop":
        if estimator == "raft":
            keep &= c
        elif estimator != "reinforce":
            keep &= ~all_equal.unsqueeze(1)
    adv = torch.where(keep, adv, torch.zeros_like(adv))

    n_with_valid = max(int(has_valid.sum()), 1)
    stats = {
        "frac_all_correct": float(all_correct.sum()) / n_with_valid,
        "frac_all_wrong": float(all_wrong.sum()) / n_with_valid,
        "frac_all_equal": float((all_equal & has_valid).sum()) / n_with_valid,
        "kept_frac": float(keep.sum()) / max(n_rows, 1),
        "n_groups": float(n_groups),
        "n_invalid": float((~valid).sum()),
    }
    return AdvantageResult(advantages=adv.reshape(-1).to(torch.float32), keep=keep.reshape(-1), stats=stats,
                           group_size=group_size)


def local_slice(result: AdvantageResult, process_index: int, num_processes: int, *,
                allow_split_groups: bool = False) -> AdvantageResult:
    """This process's contiguous slice of a global AdvantageResult (TRL's process_slice order).

    Raises ValueError when the batch does not divide evenly or a group would straddle two processes
    (pass allow_split_groups=True where that is intended: the advantages were computed globally, so a
    split group is still correct, but per-process group statistics would not be).
    """
    n_rows = result.advantages.shape[0]
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index {process_index} out of range for {num_processes} processes")
    if n_rows % num_processes != 0:
        raise ValueError(f"{n_rows} rows do not split evenly over {num_processes} processes")
    per = n_rows // num_processes
    if not allow_split_groups and per % result.group_size != 0:
        raise ValueError(f"{per} rows per process would split groups of {result.group_size} across processes")
    sl = slice(process_index * per, (process_index + 1) * per)
    return replace(result, advantages=result.advantages[sl], keep=result.keep[sl], stats=dict(result.stats))


def overlong_penalty(lengths: torch.Tensor, max_len: int, cache_len: int,
                     factor: float = 1.0) -> torch.Tensor:
    """DAPO soft overlong punishment (arXiv 2503.14476, eq. 13), added to the reward:

        0                                   if L <= max_len - cache_len
        (max_len - cache_len - L) / cache_len  if max_len - cache_len < L <= max_len
        -1                                  if L > max_len
    times `factor` (verl's overlong_penalty_factor).
    """
    if cache_len <= 0 or cache_len > max_len:
        raise ValueError(f"cache_len must be in (0, max_len], got {cache_len} with max_len {max_len}")
    length = torch.as_tensor(lengths).to(torch.float32)
    expected = max_len - cache_len
    pen = ((expected - length) / cache_len).clamp(min=-1.0, max=0.0)
    return pen * factor
