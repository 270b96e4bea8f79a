"""Wave-2 policy losses: CISPO, SAPO, GMPO, KL-Cov, Clip-Cov and GVPO, beside the PPO/GSPO/vanilla loss of
`losses.policy_loss`.

Every function takes per-token log-probs of the current policy `logp` (B, T, with gradient), of the sampling policy
`old_logp` (B, T), advantages (B,) or (B, T) and `mask` (B, T), and returns (per-token loss (B, T) zero outside the
mask, detached stats). Sequence-level losses (GMPO, GVPO) put each sequence's loss on every one of its tokens, so
that a per-sequence token mean gives back the sequence loss (wave2_rules.FORCED_LOSS_AGG makes recipes record it).
`POLICY_LOSSES` is the name -> function table the runner dispatches on. Provenance: docs/algorithms.md.
Tests: tests/test_policy_losses.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rlbench_cli.algorithms.losses import masked_mean, policy_loss

Stats = dict[str, torch.Tensor]


def _adv(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    a = advantages.to(like.dtype)
    return (a.unsqueeze(-1) if a.ndim == 1 else a).expand_as(like)


def _stats(m: torch.Tensor, logp: torch.Tensor, log_ratio: torch.Tensor, clipped: torch.Tensor) -> Stats:
    with torch.no_grad():
        f = logp.dtype
        return {"clip_frac": masked_mean(clipped.to(f), m), "ratio_mean": masked_mean(torch.exp(log_ratio), m),
                "approx_kl": masked_mean(-log_ratio, m)}


def ppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
             ratio_level: str = "token", clip_low: float = 0.2, clip_high: float = 0.2,
             dual_clip_c: float | None = None, **_: Any) -> tuple[torch.Tensor, Stats]:
    """The first-wave loss (vanilla / PPO clip with dual clip / GSPO), see `losses.policy_loss`."""
    return policy_loss(logp, old_logp, advantages, mask, ratio_level=ratio_level, clip_low=clip_low,
                       clip_high=clip_high, dual_clip_c=dual_clip_c)


def cispo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
               clip_low: float = 1.0, clip_high: float = 0.2, **_: Any) -> tuple[torch.Tensor, Stats]:
    """CISPO (MiniMax-M1, arXiv 2506.13585; verl compute_policy_loss_cispo):

        L_t = -sg(clamp(rho_t, 1 - clip_low, 1 + clip_high)) * A * log pi_t

    The clipped weight carries no gradient, so every token keeps a gradient (unlike PPO, which zeroes clipped
    tokens). clip_low = 1 means no lower bound (verl example: clip_ratio_low=10). The bounds are relative
    (1 + eps); TRL's loss_type="cispo" reads epsilon_high as an absolute cap on rho instead.
    """
    m = mask.to(torch.bool)
    log_ratio = (logp - old_logp).detach().clamp(-20.0, 20.0)  # verl's overflow guard
    ratio = torch.exp(log_ratio)
    weight = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = -weight * _adv(advantages, logp) * logp
    clipped = (ratio > 1.0 + clip_high) | (ratio < 1.0 - clip_low)
    return torch.where(m, loss, torch.zeros_like(loss)), _stats(m, logp, log_ratio, clipped)


def sapo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              tau_pos: float = 1.0, tau_neg: float = 1.05, **_: Any) -> tuple[torch.Tensor, Stats]:
    """SAPO (arXiv 2511.20347; verl compute_policy_loss_sapo, TRL loss_type="sapo"): a soft gate instead of a clip,

        L_t = -f(rho_t) * A,   f(rho) = sigmoid(tau (rho - 1)) * 4 / tau,   tau = tau_pos if A > 0 else tau_neg

    whose gradient 4 sigma (1 - sigma) rho A equals the policy gradient at rho = 1 and decays smoothly away from it.
    log rho is clamped to +-20 as in verl. Aggregated per sequence then over sequences (FORCED_AGG).
    """
    m = mask.to(torch.bool)
    adv = _adv(advantages, logp)
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    tau = torch.where(adv > 0, torch.full_like(adv, tau_pos), torch.full_like(adv, tau_neg))
    gate = torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau
    loss = -gate * adv
    return torch.where(m, loss, torch.zeros_like(loss)), _stats(m, logp, log_ratio.detach(),
                                                                torch.zeros_like(m))


def gmpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              clip_low: float = 0.4, clip_high: float = 0.4, **_: Any) -> tuple[torch.Tensor, Stats]:
    """GMPO (arXiv 2507.20673; callsys/GMPO train_zero_math_gmpo.py, critic_type_modify == "gmpo"):

        d_t = log pi_t - log pi_old_t, clipped one-sided in log space by the sign of A:
        A >= 0: d~ = min(d, clamp(d, -clip_low, clip_high));   A < 0: d~ = max(d, clamp(d, -clip_low, clip_high))
        L_i = -A_i * exp(mean_t d~_t)   (the geometric mean of the clipped token ratios)

    Clipping happens per token before the mean (GSPO clips the sequence ratio after it). The per-sequence loss is
    put on each of its tokens (aggregate with seq_mean_token_mean: the mean over sequences, as the authors' code
    averages one-sample micro-batches).
    """
    m = mask.to(torch.bool)
    mf = m.to(logp.dtype)
    a_seq = advantages.to(logp.dtype)
    a_seq = a_seq if a_seq.ndim == 1 else a_seq[:, 0]
    d = logp - old_logp
    clamped = d.clamp(-clip_low, clip_high)
    pos = (a_seq >= 0).unsqueeze(-1).expand_as(d)
    d_clip = torch.where(pos, torch.minimum(d, clamped), torch.maximum(d, clamped))
    seq_ratio = torch.exp((d_clip * mf).sum(-1) / mf.sum(-1).clamp(min=1.0))
    seq_loss = -a_seq * seq_ratio
    loss = seq_loss.unsqueeze(-1).expand_as(logp)
    clipped = (d_clip.detach() != d.detach())
    return torch.where(m, loss, torch.zeros_like(loss)), _stats(m, logp, d.detach(), clipped)


def _token_cov(advantages: torch.Tensor, logp: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """c_t = (A_t - mean A) (log pi_t - mean log pi) over the valid tokens (means detached), -inf elsewhere."""
    a = advantages.detach()
    lp = logp.detach()
    cov = (a - masked_mean(a, m)) * (lp - masked_mean(lp, m))
    return torch.where(m, cov, torch.full_like(cov, -float("inf")))


def kl_cov_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                cov_ratio: float = 2e-3, cov_kl_coef: float = 1.0, **_: Any) -> tuple[torch.Tensor, Stats]:
    """KL-Cov ("The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617; PRIME-RL/Entropy-Mechanism-of-RL
    core_algos.compute_policy_loss_kl_cov), per micro-batch:

        the top max(1, floor(N * cov_ratio)) valid tokens by covariance c_t get  L_t = -A rho + coef |log rho|,
        every other token                                                   L_t = -A rho   (no clipping at all)

    `cov_ratio` is a fraction: the authors' k_percent 0.2 (percent) = 2e-3 for 7B; 2e-4 for 32B (verl's default).
    """
    m = mask.to(torch.bool)
    adv = _adv(advantages, logp)
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    loss = -adv * ratio
    n_valid = int(m.sum())
    picked = torch.zeros_like(m)
    if n_valid and cov_ratio > 0:
        k = max(1, int(n_valid * cov_ratio))
        idx = torch.topk(_token_cov(adv, logp, m).reshape(-1), k).indices
        picked.view(-1)[idx] = True
        loss = torch.where(picked, loss + cov_kl_coef * log_ratio.abs(), loss)
    return torch.where(m, loss, torch.zeros_like(loss)), _stats(m, logp, log_ratio.detach(), picked)


def clip_cov_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                  clip_low: float = 1.0, clip_high: float = 1.0, cov_ratio: float = 2e-4, cov_lb: float = 1.0,
                  cov_ub: float = 5.0, generator: torch.Generator | None = None,
                  **_: Any) -> tuple[torch.Tensor, Stats]:
    """Clip-Cov (same paper; core_algos.compute_policy_loss_clip_cov), per micro-batch:

        among valid tokens that PPO clip leaves alone and whose covariance lies in (cov_lb, cov_ub), pick
        max(1, floor(N * cov_ratio)) at random and detach them (loss x 0); every token otherwise has PPO's
        max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high)).

    The authors' scripts set clip_low = clip_high = 1 (PPO clip effectively off). The random pick uses `generator`
    (or torch's global generator, seeded by the Trainer).
    """
    m = mask.to(torch.bool)
    adv = _adv(advantages, logp)
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    l1 = -adv * ratio
    l2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    by_ppo = (l2 > l1) & m
    cov = _token_cov(adv, logp, m)
    cand = ((cov > cov_lb) & (cov < cov_ub) & m & ~by_ppo).reshape(-1).nonzero().flatten()
    dropped = torch.zeros_like(m)
    n_pick = max(int(cov_ratio * int(m.sum())), 1)
    if len(cand):
        perm = torch.randperm(len(cand), generator=generator)
        dropped.view(-1)[cand[perm[:n_pick]]] = True
    loss = torch.maximum(l1, l2) * (~dropped).to(logp.dtype)
    return torch.where(m, loss, torch.zeros_like(loss)), _stats(m, logp, log_ratio.detach(), dropped | by_ppo)


def gvpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              group_size: int, gvpo_beta: float = 0.1, **_: Any) -> tuple[torch.Tensor, Stats]:
    """GVPO (arXiv 2504.19599; jszkc/GVPO gvpo_core_algos.compute_policy_loss_gvpo), whole groups only:

        s_i = beta * sum_t (log pi_t - log pi_old_t)   (a sequence sum), s_bar = group mean of s (detached)
        L_i = 0.5 * [(s_i - s_bar) - (R_i - R_bar)]^2 / (n - 1)

    with `advantages` = R_i - R_bar (Dr. GRPO, no std). The anchor is the rollout policy (old_logp), not a frozen
    reference. The per-sequence loss is put on each token; the authors sum L_i over the micro-batch and divide by
    the accumulation steps (loss_agg seq_sum_token_mean). The runner keeps groups whole in each micro-batch
    (`RLBenchGRPOTrainer._prepare_inputs` shuffles whole groups).
    """
    if group_size < 2:
        raise ValueError("GVPO compares the responses of a group: group_size must be >= 2")
    m = mask.to(torch.bool)
    mf = m.to(logp.dtype)
    if logp.shape[0] % group_size:
        raise ValueError(f"GVPO needs whole groups in a micro-batch: {logp.shape[0]} rows, groups of {group_size}")
    a_seq = advantages.to(logp.dtype)
    a_seq = a_seq if a_seq.ndim == 1 else a_seq[:, 0]
    log_ratio = logp - old_logp
    s = gvpo_beta * (log_ratio * mf).sum(-1)
    s_bar = s.detach().view(-1, group_size).mean(dim=1, keepdim=True).expand(-1, group_size).reshape(-1)
    seq_loss = 0.5 * ((s - s_bar) - a_seq) ** 2 / (group_size - 1)
    loss = seq_loss.unsqueeze(-1).expand_as(logp)
    return torch.where(m, loss, torch.zeros_like(loss)), _stats(m, logp, log_ratio.detach(), torch.zeros_like(m))


POLICY_LOSSES: dict[str, Callable[..., tuple[torch.Tensor, Stats]]] = {
    "ppo": ppo_loss,
    "cispo": cispo_loss,
    "sapo": sapo_loss,
    "gmpo": gmpo_loss,
    "kl_cov": kl_cov_loss,
    "clip_cov": clip_cov_loss,
    "gvpo": gvpo_loss,
}

