"""Policy, value and KL losses as pure tensor functions, plus loss aggregation and masked statistics.

Shapes: per-token tensors are (B, T); `mask` is (B, T) bool or 0/1 (1 = a response token in the loss).
Formulas follow verl as forked by RLHFlow/Minimal-RL (`verl/trainer/ppo/core_algos.py`: compute_policy_loss,
compute_policy_loss_vanilla, agg_loss, kl_penalty, compute_gae_advantage_return, compute_value_loss;
`verl/utils/torch_functional.py`: masked_mean, masked_whiten), later verl's compute_policy_loss_gspo for
GSPO, and TRL's GRPOTrainer for the Dr. GRPO normaliser. Losses are returned per token, not yet aggregated.
"""

from __future__ import annotations

import torch

from rlbench_cli.errors import UserError

RATIO_LEVELS = ("none", "token", "sequence")
AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
KL_KINDS = ("k1", "k2", "k3", "low_var_kl", "abs")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(x * mask) / sum(mask) (over `dim`, or everything); 0 where the mask is empty."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1e-8)
    return (x * m).sum(dim=dim) / m.sum(dim=dim).clamp(min=1e-8)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True,
                  eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries, var unbiased (Bessel) as verl's masked_var;
    with shift_mean=False the mean is added back. A single masked entry falls back to the biased var."""
    m = mask.to(x.dtype)
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)
    n = m.sum()
    if n > 1:
        var = var * n / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out + mean if not shift_mean else out


def _as_token_adv(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    a = advantages.to(like.dtype)
    if a.ndim == 1:
        a = a.unsqueeze(-1)
    return a.expand_as(like)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor | None, advantages: torch.Tensor,
                mask: torch.Tensor, *, ratio_level: str = "token", clip_low: float = 0.2,
                clip_high: float = 0.2,
                dual_clip_c: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token policy-gradient loss (B, T), zero outside the mask, and detached statistics.

    ratio_level:
      "none"     -> -A log pi (RAFT, GPG: no ratio, no clip; verl compute_policy_loss_vanilla).
      "token"    -> PPO clipped surrogate, rho = exp(logp - old_logp) per token:
                    L = max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high))
                    and, with dual_clip_c = c (verl default 3.0, arXiv 1912.09729), for A < 0:
                    L = min(L, -A c)   (verl compute_policy_loss).
      "sequence" -> GSPO (arXiv 2507.18071): s = exp(masked mean of logp - old_logp) per sequence (the
                    geometric mean of the token ratios), used per token as s_t = sg[s] pi_t / sg[pi_t] so
                    its value is s and its gradient s grad log pi_t, clipped at the sequence level like
                    "token" (verl compute_policy_loss_gspo; log s clamped at 10 as there).
    `old_logp` may be None for "none" (ratio statistics then read 1 / 0).
    Stats (masked means over tokens): clip_frac (clipping active on either side), clip_frac_low (rho <
    1 - clip_low with A < 0), clip_frac_high (rho > 1 + clip_high with A > 0), dual_clip_frac, ratio_mean,
    approx_kl (old -> new: mean of old_logp - logp, verl's ppo_kl).
    """
    if ratio_level not in RATIO_LEVELS:
        raise UserError(f"unknown ratio_level {ratio_level!r}", where="algorithm.ratio_level",
                        fix=f"use one of: {', '.join(RATIO_LEVELS)}")
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise UserError(f"dual_clip_c must be > 1, got {dual_clip_c}", where="algorithm.dual_clip_c",
                        fix="use 3.0 (verl default) or leave it unset to disable dual clipping")
    if old_logp is None:
        if ratio_level != "none":
            raise ValueError(f"ratio_level {ratio_level!r} needs old_logp")
        old_logp = logp.detach()
    m = mask.to(torch.bool)
    adv = _as_token_adv(advantages, logp)
    log_ratio = logp - old_logp
    zeros = torch.zeros_like(logp)
    false = torch.zeros_like(m)

    if ratio_level == "none":
        loss = -adv * logp
        ratio = torch.exp(log_ratio.detach())
        low = high = dual = false
    else:
        if ratio_level == "token":
            ratio = torch.exp(log_ratio)
        else:
            seq_log_ratio = masked_mean(log_ratio, m, dim=-1).detach().unsqueeze(-1)
            ratio = torch.exp((logp - logp.detach() + seq_log_ratio).clamp(max=10.0))
        loss1 = -adv * ratio
        loss2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
        loss = torch.maximum(loss1, loss2)
        r = ratio.detach()
        low = (r < 1.0 - clip_low) & (adv < 0)
        high = (r > 1.0 + clip_high) & (adv > 0)
        dual = false
        if dual_clip_c is not None:
            loss3 = -adv * dual_clip_c
            dual = (adv < 0) & (loss.detach() > loss3)
            loss = torch.where(adv < 0, torch.minimum(loss, loss3), loss)

    loss = torch.where(m, loss, zeros)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((low | high).to(logp.dtype), m),
            "clip_frac_low": masked_mean(low.to(logp.dtype), m),
            "clip_frac_high": masked_mean(high.to(logp.dtype), m),
            "dual_clip_frac": masked_mean(dual.to(logp.dtype), m),
            "ratio_mean": masked_mean(ratio.detach(), m),
            "approx_kl": masked_mean(-log_ratio.detach(), m),
        }
    return loss, stats


def aggregate_loss(per_token_loss: torch.Tensor, mask: torch.Tensor, mode: str, *,
                   normalizer: float | torch.Tensor | None = None,
                   max_len: int | None = None) -> torch.Tensor:
    """Reduce a (B, T) loss to a scalar.

    "token_mean":              sum(L * mask) / normalizer, normalizer = mask.sum() by default; pass the whole
                               mini-batch's token count when accumulating gradients over micro-batches
                               (verl agg_loss "token-mean"; Minimal-RL default).
    "seq_mean_token_mean":     mean over sequences of each sequence's token mean (original GRPO; verl
                               "seq-mean-token-mean").
    "seq_mean_token_sum_norm": sum(L * mask) / (n_seq * max_len), max_len = T by default (Dr. GRPO, as TRL's
                               loss_type="dr_grpo").
    For the seq_* modes n_seq = `normalizer` if given, else the number of rows with any masked token, so a
    dropped row (all-zero mask) counts in no denominator.
    """
    if mode not in AGG_MODES:
        raise UserError(f"unknown loss aggregation {mode!r}", where="algorithm.loss_agg",
                        fix=f"use one of: {', '.join(AGG_MODES)}")
    m = mask.to(per_token_loss.dtype)
    total = per_token_loss * m
    if mode == "token_mean":
        denom = m.sum() if normalizer is None else torch.as_tensor(normalizer, dtype=per_token_loss.dtype)
        return total.sum() / torch.clamp(denom, min=1e-8)
    n_seq = (m.sum(dim=-1) > 0).sum() if normalizer is None else normalizer
    n_seq = torch.clamp(torch.as_tensor(n_seq, dtype=per_token_loss.dtype), min=1.0)
    if mode == "seq_mean_token_mean":
        seq = total.sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)
        return seq.sum() / n_seq
    length = per_token_loss.shape[-1] if max_len is None else max_len
    return total.sum() / (n_seq * length)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "low_var_kl") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL divergence"):

    "k1": logp - ref_logp;  "abs": |logp - ref_logp|;  "k2": 0.5 (logp - ref_logp)^2;
    "k3": exp(ref_logp - logp) - (ref_logp - logp) - 1;  "low_var_kl": k3 with ref_logp - logp first clamped
    to [-20, 20] and the result to [-10, 10] (current verl core_algos.kl_penalty_forward; Minimal-RL scripts use it
    with coefficient 0.001). The inner clamp keeps the gradient finite: without it exp overflows past ~88 and the
    outer clamp's zero gradient times inf is NaN (the Minimal-RL fork had only the outer clamp).
    """
    if kind not in KL_KINDS:
        raise UserError(f"unknown KL estimator {kind!r}", where="algorithm.kl_kind",
                        fix=f"use one of: {', '.join(KL_KINDS)}")
    diff = logp - ref_logp
    if kind == "k1":
        return diff
    if kind == "abs":
        return diff.abs()
    if kind == "k2":
        return 0.5 * diff.square()
    if kind == "k3":
        return torch.exp(-diff) + diff - 1.0
    log_ratio = (-diff).clamp(min=-20.0, max=20.0)  # ref_logp - logp
    return (torch.exp(log_ratio) - log_ratio - 1.0).clamp(min=-10.0, max=10.0)


def kl_exact(logp_all: torch.Tensor, ref_logp_all: torch.Tensor) -> torch.Tensor:
    """Exact KL(pi || pi_ref) at each position from full log-probability rows (..., V): sum_v pi (log pi - log pi_ref).

    What the sampled estimators above estimate. Clamped k3 ("low_var_kl") is biased low once the policy is sharp: the
    KL then sits in rare tokens with pi << pi_ref, whose k3 terms the clamp at 10 cuts (pi = (.999, .001) against
    pi_ref = (.5, .5): exact 0.685, clamped k3's expectation 0.202). Cheap only for a small vocabulary.
    """
    pi = logp_all.exp()
    return torch.where(pi > 0, pi * (logp_all - ref_logp_all), torch.zeros_like(pi)).sum(-1)  # 0 log 0 = 0


def gae(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 1.0, *, whiten: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (arXiv 1506.02438), verl compute_gae_advantage_return:

        delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lam A_{t+1},   returns = A + V
    then A is whitened over the masked tokens of the whole batch (verl does this; whiten=False skips it).
    Masked-out positions are skipped in the recursion (as later verl), which for right padding equals the
    Minimal-RL loop when the critic's values there are 0. Both outputs are zero outside the mask.
    """
    m = mask.to(values.dtype)
    r = token_rewards.to(values.dtype) * m
    v = values.detach() * m
    with torch.no_grad():
        n_t = r.shape[-1]
        adv = torch.zeros_like(v)
        next_v = torch.zeros_like(v[:, 0])
        last = torch.zeros_like(v[:, 0])
        for t in reversed(range(n_t)):
            delta = r[:, t] + gamma * next_v - v[:, t]
            cur = delta + gamma * lam * last
            next_v = v[:, t] * m[:, t] + (1 - m[:, t]) * next_v
            last = cur * m[:, t] + (1 - m[:, t]) * last
            adv[:, t] = last
        returns = (adv + v) * m
        if whiten:
            adv = masked_whiten(adv, m)
        adv = adv * m
    return adv, returns


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss (verl compute_value_loss, cliprange_value 0.5):

        V_clip = clamp(V, V_old - clip, V_old + clip)
        loss = 0.5 * masked_mean(max((V - R)^2, (V_clip - R)^2))
    clip_frac = masked mean of [(V_clip - R)^2 > (V - R)^2].
    """
    v_clip = torch.maximum(torch.minimum(values, old_values + clip), old_values - clip)
    l1 = (values - returns) ** 2
    l2 = (v_clip - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(l1, l2), mask)
    clip_frac = masked_mean((l2 > l1).to(values.dtype), mask).detach()
    return loss, clip_frac
