"""Entropy minimisation ("The Unreasonable Effectiveness of Entropy Minimization in LLM Reasoning", arXiv
2505.15134): the EM-RL rewards, the EM-FT loss and EM-INF's test-time logit adjustment.

- EM-RL: reward = -(mean token entropy) of the response (token variant) or its mean token log-prob (sequence
  variant), both from the sampling policy; no labels. The authors' code (chotkrin/EM_PT emrl_*_manager.py) uses
  means; the paper writes sums; `reduce` offers both.
- EM-FT: minimise the per-response mean token entropy of self-sampled outputs by gradient descent.
- EM-INF: at each decoding step, a few Adam steps on a copy of the logits z minimising H(softmax z) +
  kl_weight * KL(p_orig || softmax z), stopping once H < threshold (shivamag125/EM_PT
  eval/utils/em_inf_utils.py::min_entropy_inference). No weights change.
- EM-INF's adaptive-temperature variant (same file, AdaptiveTemperatureProcessor): bisect each step's temperature
  until the entropy is within `tol` of target_ratio x the original entropy.
Tests: tests/test_entropy.py.
"""

from __future__ import annotations

from typing import Any

import torch

EM_RL_VARIANTS = ("token", "sequence")
EM_REDUCE = ("mean", "sum")


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def em_rl_rewards(mask: torch.Tensor, *, variant: str = "token", entropies: torch.Tensor | None = None,
                  logps: torch.Tensor | None = None, reduce: str = "mean") -> torch.Tensor:
    """EM-RL reward per response (N,): token variant -reduce_t H_t, sequence variant reduce_t log pi(y_t).

    reduce "mean" (authors' code) or "sum" (paper). An empty response gets 0."""
    if variant not in EM_RL_VARIANTS:
        raise ValueError(f"unknown EM-RL variant {variant!r}; use one of {EM_RL_VARIANTS}")
    if reduce not in EM_REDUCE:
        raise ValueError(f"unknown EM-RL reduction {reduce!r}; use one of {EM_REDUCE}")
    x = entropies if variant == "token" else logps
    if x is None:
        raise ValueError(f"EM-RL {variant} variant needs {'entropies' if variant == 'token' else 'logps'}")
    m = mask.to(torch.float64)
    x = x.detach().to(torch.float64)
    total = (x * m).sum(-1)
    value = total if reduce == "sum" else total / m.sum(-1).clamp(min=1.0)
    return -value if variant == "token" else value


def em_ft_loss(entropies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """EM-FT per-token loss (B, T): the token entropy itself (with gradient), zero outside the mask; aggregated
    per sequence then over sequences ((1/N) sum_i (1/|y_i|) sum_t H_t, the paper's objective)."""
    m = mask.to(torch.bool)
    return torch.where(m, entropies, torch.zeros_like(entropies))


def em_inf_adjust(logits: torch.Tensor, *, threshold: float = 0.1, kl_weight: float = 0.001, lr: float = 0.1,
                  steps: int = 3) -> torch.Tensor:
    """EM-INF: adjust next-token logits (B, V) to lower their entropy, rows independently.

    Adam (lr) on a copy z of the logits for at most `steps` steps, loss H(softmax z) + kl_weight *
    KL(p_orig || softmax z) summed over rows; a row whose entropy is already below `threshold` stops changing
    (the authors stop the whole loop; rows are independent here, so a batch gives each row the result it would get
    alone). Returns the adjusted logits (no gradient).
    """
    with torch.enable_grad():
        orig = logits.detach().float()
        p_orig = torch.softmax(orig, dim=-1)
        z = orig.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        active = token_entropy(orig) >= threshold
        for _ in range(steps):
            if not bool(active.any()):
                break
            opt.zero_grad()
            log_q = torch.log_softmax(z, dim=-1)
            ent = -(log_q.exp() * log_q).sum(-1)
            kl = (p_orig * (torch.log(p_orig.clamp(min=1e-30)) - log_q)).sum(-1)
            loss = ((ent + kl_weight * kl) * active.float()).sum()
            loss.backward()
            before = z.detach().clone()
            opt.step()
            with torch.no_grad():
                z[~active] = before[~active]  # frozen rows keep their logits (Adam would still move them)
                active = active & (token_entropy(z.detach()) >= threshold)
    return z.detach().to(logits.dtype)


def _bisect_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p + 1e-9)).sum(-1)  # the authors' entropy (+1e-9 inside the log)


def adaptive_temperature(scores: torch.Tensor, *, target_ratio: float = 0.85, t_min: float = 0.01,
                         t_max: float = 1.0, tol: float = 0.1, max_iter: int = 100,
                         threshold: float = 1e-5) -> torch.Tensor:
    """EM-INF adaptive temperature (shivamag125/EM_PT eval/utils/em_inf_utils.py::AdaptiveTemperatureProcessor):
    scores (B, V) / T per row, T found by bisection on [t_min, t_max].

    target = max(threshold, target_ratio * H(softmax scores)); while H > threshold, up to max_iter times:
    T = midpoint, H_T = H(softmax(scores / T)); stop when |H_T - target| < tol, else raise t_min (H_T < target) or
    lower t_max. The last midpoint is used if the loop runs out; a row already at or below `threshold` keeps T = 1.
    The authors' processor sees one sequence per call (vLLM); rows are independent here for the same reason.
    Defaults: their math script (adaptive_temp_eval.sh: ratio 0.85, threshold 1e-5, [0.01, 1], tol 0.1, 100)."""
    x = scores.detach().float()
    h0 = _bisect_entropy(torch.softmax(x, dim=-1))
    target = torch.clamp(target_ratio * h0, min=threshold)
    lo = torch.full_like(h0, t_min)
    hi = torch.full_like(h0, t_max)
    temp = torch.ones_like(h0)
    active = h0 > threshold
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        mid = (lo + hi) / 2
        h = _bisect_entropy(torch.softmax(x / mid.unsqueeze(-1), dim=-1))
        temp = torch.where(active, mid, temp)
        done = (h - target).abs() < tol
        lo = torch.where(active & ~done & (h < target), mid, lo)
        hi = torch.where(active & ~done & (h >= target), mid, hi)
        active = active & ~done
    return (x / temp.unsqueeze(-1)).to(scores.dtype)


def make_adaptive_temperature_processor(**settings: Any) -> Any:
    """A transformers LogitsProcessor applying `adaptive_temperature` to each step's scores."""
    from transformers import LogitsProcessor

    class AdaptiveTemperatureProcessor(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            return adaptive_temperature(scores, **settings)

    return AdaptiveTemperatureProcessor()


def make_entropy_processor(em_inf: dict[str, Any]) -> Any:
    """The processor an eval's `em_inf` settings ask for: mode adaptive_temp, else EM-INF's logit descent."""
    settings = dict(em_inf)
    if settings.pop("mode", "logits") == "adaptive_temp":
        return make_adaptive_temperature_processor(**settings)
    return make_em_inf_processor(**settings)


def make_em_inf_processor(*, threshold: float, kl_weight: float, lr: float, steps: int) -> Any:
    """A transformers LogitsProcessor applying `em_inf_adjust` to each step's scores (put it before sampling)."""
    from transformers import LogitsProcessor

    class EMInfProcessor(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            finite = torch.isfinite(scores)
            adjusted = em_inf_adjust(torch.where(finite, scores, torch.full_like(scores, -1e9)),
                                     threshold=threshold, kl_weight=kl_weight, lr=lr, steps=steps)
            return torch.where(finite, adjusted, scores)

    return EMInfProcessor()

