"""Wave-2 advantage estimators and reward shaping: OPO, Lite-PPO, ReMax, GFPO, REINFORCE++ (with and without group
baseline), KL in the reward (k1) and RiskPO's bundle advantage.

Pure tensor functions; provenance (repository, commit, function) and every paper-vs-code choice is in
docs/algorithms.md. Conventions as in `advantages.py`: grouped tensors are (G, n) with each prompt's n responses in
one row; `valid` (G, n) bool marks rows that have a reward (others get 0 and do not enter group statistics).
Per-token tensors are (N, T) with `mask` (N, T) marking response tokens. Tests: tests/test_baselines.py.
"""

from __future__ import annotations

import torch


def _prep(grouped: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    r = grouped.to(torch.float64)
    v = ~torch.isnan(r) if valid is None else valid.to(torch.bool) & ~torch.isnan(r)
    return torch.where(v, r, torch.zeros_like(r)), v


def opo_advantage(grouped_rewards: torch.Tensor, lengths: torch.Tensor, *,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """OPO (arXiv 2505.23585): b = sum_i |o_i| r_i / sum_i |o_i| over the group's valid responses, A = r - b.

    No std division. A group of one gets b = r, so A = 0 (microsoft/LMOps opo code has no special case; later verl
    sets b = 0 there instead). Zero-length responses weigh nothing; a group whose lengths are all 0 gets A = 0.
    """
    r, v = _prep(grouped_rewards, valid)
    w = torch.where(v, lengths.to(torch.float64).reshape(r.shape), torch.zeros_like(r))
    total = w.sum(dim=1, keepdim=True)
    b = (w * r).sum(dim=1, keepdim=True) / total.clamp(min=1e-12)
    a = torch.where(total > 0, r - b, torch.zeros_like(r))
    return torch.where(v, a, torch.zeros_like(a))


def opo_batch_advantage(grouped_rewards: torch.Tensor, lengths: torch.Tensor, *,
                        valid: torch.Tensor | None = None) -> torch.Tensor:
    """OPO's batch-level baseline (microsoft/LMOps compute_opo_outcome_advantage, value_baseline="optimal_batch",
    "the optimal reward baseline for Reinforce++"): b = sum |o_i| r_i / sum |o_i| over every valid response of the
    batch, A = r - b, no std division and no token whitening (LMOps returns these scores as the advantages)."""
    r, v = _prep(grouped_rewards, valid)
    w = torch.where(v, lengths.to(torch.float64).reshape(r.shape), torch.zeros_like(r))
    total = w.sum()
    if total <= 0:
        return torch.zeros_like(r)
    return torch.where(v, r - (w * r).sum() / total, torch.zeros_like(r))


def lite_ppo_advantage(grouped_rewards: torch.Tensor, *, valid: torch.Tensor | None = None,
                       std_eps: float = 1e-6) -> torch.Tensor:
    """Lite-PPO (arXiv 2508.08221; ROLL reward_norm with norm_mean_type=group, norm_std_type=batch):
    A = (r - group mean) / (std of the raw rewards over the whole batch + eps), std unbiased (torch.std).
    A batch with one valid reward uses std 0."""
    r, v = _prep(grouped_rewards, valid)
    k = v.sum(dim=1, keepdim=True)
    mean = (r * v).sum(dim=1, keepdim=True) / k.clamp(min=1)
    n = int(v.sum())
    flat = r[v]
    std = flat.std(unbiased=True) if n > 1 else torch.zeros((), dtype=r.dtype)
    a = (r - mean) / (std + std_eps)
    return torch.where(v, a, torch.zeros_like(a))


def remax_advantage(grouped_rewards: torch.Tensor, greedy_rewards: torch.Tensor, *,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """ReMax (arXiv 2310.10505): A = r(x, y) - r(x, y_greedy), one greedy decode per prompt as the baseline
    (verl compute_remax_outcome_advantage: outcome reward minus the baseline). A missing (NaN) greedy reward
    gives baseline 0."""
    r, v = _prep(grouped_rewards, valid)
    b = greedy_rewards.to(torch.float64).reshape(-1, 1)
    b = torch.where(torch.isnan(b), torch.zeros_like(b), b)
    return torch.where(v, r - b, torch.zeros_like(r))


GFPO_METRICS = ("length", "reward_per_token")


def gfpo_keep(grouped_rewards: torch.Tensor, lengths: torch.Tensor, k: int, metric: str = "length", *,
              valid: torch.Tensor | None = None) -> torch.Tensor:
    """GFPO (arXiv 2508.09726) filter: the k responses of each group that score best on `metric` -> (G, n) bool.

    "length": shortest first; "reward_per_token": highest r / |o| first. Ties go to the earlier response (stable
    sort), rows without a reward are never kept. k >= n keeps every valid row.
    """
    if metric not in GFPO_METRICS:
        raise ValueError(f"unknown GFPO metric {metric!r}; use one of {GFPO_METRICS}")
    if k < 1:
        raise ValueError(f"GFPO keeps k >= 1 responses per group, got {k}")
    r, v = _prep(grouped_rewards, valid)
    length = lengths.to(torch.float64).reshape(r.shape)
    score = -length if metric == "length" else r / length.clamp(min=1.0)
    score = torch.where(v, score, torch.full_like(score, -float("inf")))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(r.shape[1]).expand_as(order).contiguous())
    return (rank < k) & v


def kl_shaped_rewards(rewards: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                      coef: float) -> torch.Tensor:
    """KL in the reward, sequence-level k1 ("A Comedy of Estimators", arXiv 2512.21852; verl apply_kl_penalty with
    kl_penalty=kl summed by outcome estimators; TRL RLOOTrainer beta):

        r~ = r - coef * sum_t (log pi_old(o_t) - log pi_ref(o_t))

    with log pi_old the sampling policy's log-probs (on-policy: no gradient). Per-token k1 may be negative and is
    not clamped. NaN rewards stay NaN."""
    m = mask.to(torch.float64)
    k1 = ((logp.detach().to(torch.float64) - ref_logp.detach().to(torch.float64)) * m).sum(dim=-1)
    return rewards.to(torch.float64) - coef * k1


def group_centred(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """r - group mean of the raw rewards (REINFORCE++-baseline's first step); NaN rewards count as 0."""
    r = torch.nan_to_num(rewards.to(torch.float64), nan=0.0).reshape(-1, group_size)
    return (r - r.mean(dim=1, keepdim=True)).reshape(-1)


def reinforce_pp_returns(rewards: torch.Tensor, mask: torch.Tensor, *, token_kl: torch.Tensor | None = None,
                         kl_coef: float = 0.0, gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++ token returns (N, T): the outcome reward r at the last response token, minus kl_coef * k1_t at
    every token (k1 = log pi_old - log pi_ref, clamped to +-10 as OpenRLHF compute_approx_kl), then return-to-go
    G_t = sum_{s >= t} gamma^(s-t) r_s. Zero outside the mask; NaN rewards count as 0."""
    m = mask.to(torch.float64)
    r = torch.nan_to_num(rewards.to(torch.float64), nan=0.0)
    token_r = torch.zeros_like(m)
    has = m.sum(dim=-1) > 0
    last = m.shape[-1] - 1 - torch.flip(m, dims=[-1]).argmax(dim=-1)  # index of the last valid token
    rows = torch.arange(m.shape[0])
    token_r[rows[has], last[has]] = r[has]
    if token_kl is not None and kl_coef:
        token_r = token_r - kl_coef * token_kl.detach().to(torch.float64).clamp(-10.0, 10.0) * m
    returns = torch.zeros_like(token_r)
    running = torch.zeros(m.shape[0], dtype=torch.float64)
    for t in reversed(range(m.shape[-1])):
        running = token_r[:, t] + gamma * running * m[:, t]  # padding never carries a return backwards
        returns[:, t] = running
    return returns * m


def whiten_tokens(x: torch.Tensor, mask: torch.Tensor,
                  moments: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(x - mean) / sqrt(max(var, 1e-8)) over the valid tokens (OpenRLHF's global token whitening), var biased.
    `moments` = (mean, var) over the global batch when x is one process's slice (see `token_moments`)."""
    m = mask.to(x.dtype)
    mean, var = token_moments(x, m) if moments is None else moments
    return (x - mean) * torch.rsqrt(torch.as_tensor(var, dtype=x.dtype).clamp(min=1e-8)) * m


def reinforce_pp_advantage(rewards: torch.Tensor, mask: torch.Tensor, group_size: int, *, baseline: bool,
                           token_kl: torch.Tensor | None = None, kl_coef: float = 0.0,
                           gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++ (arXiv 2501.03262; OpenRLHF experience_maker.compute_advantages_and_returns,
    models/utils.compute_reward): per-token advantages (N, T) for one whole batch.

    baseline=True (REINFORCE++-baseline) first subtracts the group mean of the raw rewards (a group of one then
    has nothing left); then `reinforce_pp_returns` (KL as a per-token reward, return-to-go) and `whiten_tokens`
    over all valid tokens of the batch.
    """
    r = group_centred(rewards, group_size) if baseline else rewards
    return whiten_tokens(reinforce_pp_returns(r, mask, token_kl=token_kl, kl_coef=kl_coef, gamma=gamma), mask)


def token_moments(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean and biased variance over all valid tokens."""
    m = mask.to(x.dtype)
    n = m.sum().clamp(min=1.0)
    mean = (x * m).sum() / n
    var = (((x - mean) ** 2) * m).sum() / n
    return mean, var


RISKPO_CREDIT = ("std", "sum_mean", "uniform", "score")


def riskpo_advantage(grouped_rewards: torch.Tensor, *, bundle: int = 5, alpha: float = 0.2, beta: float = 0.9,
                     mix_weight: float = 1.5, natural_baseline: bool = True, credit: str = "std",
                     eps: float = 1e-6) -> torch.Tensor:
    """RiskPO bundle advantage (arXiv 2510.00911; RTkenny/RiskPO @ 65ec40c9 verl/trainer/ppo/core_algos.py
    ::compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking, with norm_adv_by_std_in_grpo), (G, n) -> (G, n).

    `bundle` consecutive prompts form a bundle (a last, smaller bundle takes the rest); "paper" j is the j-th response
    of every prompt in it, scored S_j = sum of their rewards. q_a, q_b = torch.quantile of the bundle's S at alpha,
    beta (a bundle of one paper: q = S, std 1):
        A_RVaR = [(S - q_a)+ - (S - q_b)+ (+ q_a - q_b with the natural baseline)] / (beta - alpha + eps)
        mixing (mix_weight w > 0): A = (w * A_CVaR + A_RVaR) / (w + 1),  A_CVaR = -(q_a - S)+ / (alpha + eps)
        A /= std(S over the bundle's papers, unbiased) + eps
    then credited to paper j's responses: "std": A_j / (std of that prompt's rewards, 1 if <= 1e-3, + eps);
    "sum_mean": A_j (r - mean_prompt) / sum over the paper's responses of (r - mean_prompt), or A_j / (prompts in
    the bundle) when that sum is within 1e-6 of 0; "uniform": A_j; "score": 0.5 A_j for a response whose reward is
    > 0, else 1.5 A_j (the authors' credit_assign_mode "score"). Missing (NaN) rewards count as 0.
    The authors' quantile tracker only feeds logging in their code (its values reach meta_info after the advantage
    is computed), so the per-bundle batch quantiles used here are what their runs used.
    """
    if credit not in RISKPO_CREDIT:
        raise ValueError(f"unknown RiskPO credit mode {credit!r}; use one of {RISKPO_CREDIT}")
    if not 0 <= alpha < beta <= 1:
        raise ValueError(f"RiskPO needs 0 <= alpha < beta <= 1, got alpha={alpha}, beta={beta}")
    r = torch.nan_to_num(grouped_rewards.to(torch.float64), nan=0.0)
    out = torch.zeros_like(r)
    for start in range(0, r.shape[0], bundle):
        block = r[start:start + bundle]  # (B, n): B prompts, n papers
        s = block.sum(dim=0)
        if s.numel() == 1:
            qa = qb = s[0]
            sd = torch.ones((), dtype=s.dtype)
        else:
            qa, qb, sd = torch.quantile(s, alpha), torch.quantile(s, beta), s.std(unbiased=True)
        a = (s - qa).clamp(min=0) - (s - qb).clamp(min=0) + ((qa - qb) if natural_baseline else 0.0)
        a = a / (beta - alpha + eps)
        if mix_weight > 0:
            cvar = -(qa - s).clamp(min=0) / (alpha + eps)
            a = (mix_weight * cvar + a) / (mix_weight + 1)
        a = (a / (sd + eps)).unsqueeze(0).expand_as(block)
        if credit == "std":
            q_sd = block.std(dim=1, unbiased=True, keepdim=True) if block.shape[1] > 1 else torch.zeros(
                block.shape[0], 1, dtype=block.dtype)
            q_sd = torch.where(q_sd > 1e-3, q_sd, torch.ones_like(q_sd))
            out[start:start + bundle] = a / (q_sd + eps)
        elif credit == "sum_mean":
            ratio = block - block.mean(dim=1, keepdim=True)
            total = ratio.sum(dim=0, keepdim=True)  # per paper, over the bundle's prompts
            share = torch.where(total.abs() > 1e-6, ratio / torch.where(total.abs() > 1e-6, total, 1.0),
                                torch.full_like(ratio, 1.0 / block.shape[0]))
            out[start:start + bundle] = a * share
        elif credit == "score":
            out[start:start + bundle] = a * torch.where(block > 0, 0.5, 1.5)
        else:
            out[start:start + bundle] = a
    return out
