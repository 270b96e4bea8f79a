"""Policy / value / KL losses and aggregation, checked on hand-computed values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from rlbench_cli.algorithms.losses import (
    aggregate_loss,
    gae,
    kl_exact,
    kl_penalty,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from rlbench_cli.errors import UserError


def _leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("adv_shape", ["row", "token"])
def test_ratio_one_gives_minus_a_value_and_gradient(level, adv_shape):
    logp = _leaf([[-1.0, -2.0, -0.5], [-0.3, -0.7, -1.1]])
    old = logp.detach().clone()
    a_row = torch.tensor([2.0, -1.5], dtype=torch.float64)
    adv = a_row if adv_shape == "row" else a_row.unsqueeze(-1).expand(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss, stats = policy_loss(logp, old, adv, mask, ratio_level=level, dual_clip_c=3.0)
    expected = -a_row.unsqueeze(-1).expand(2, 3)
    assert torch.allclose(loss, expected)
    loss.sum().backward()
    assert torch.allclose(logp.grad, expected)
    assert stats["clip_frac"] == 0 and stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["approx_kl"] == pytest.approx(0.0)


def test_none_level_is_minus_a_logp_with_gradient_minus_a():
    logp = _leaf([[-1.0, -2.0], [-0.5, -0.25]])
    old = torch.tensor([[-3.0, -0.1], [-0.5, -9.0]], dtype=torch.float64)  # far off-policy: ignored
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = policy_loss(logp, old, adv, mask, ratio_level="none")
    assert torch.allclose(loss, torch.tensor([[1.0, 2.0], [-1.0, 0.0]], dtype=torch.float64))
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.0, -1.0], [2.0, 0.0]], dtype=torch.float64))
    assert stats["clip_frac"] == 0 and stats["dual_clip_frac"] == 0
    loss2, _ = policy_loss(logp.detach(), None, adv, mask, ratio_level="none")
    assert torch.allclose(loss2, loss.detach())


def test_token_clipping_fires_exactly_where_expected():
    ratios = [0.5, 1.0, 1.5]
    logp = _leaf([[math.log(r) for r in ratios]] * 2)
    old = torch.zeros(2, 3, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    loss, stats = policy_loss(logp, old, adv, torch.ones(2, 3), ratio_level="token", dual_clip_c=3.0)
    # A=+1: max(-rho, -clip(rho)); A=-1: max(rho, clip(rho))
    assert torch.allclose(loss, torch.tensor([[-0.5, -1.0, -1.2], [0.8, 1.0, 1.5]], dtype=torch.float64))
    loss.sum().backward()
    # clipped tokens (A=+1, rho=1.5) and (A=-1, rho=0.5) get no gradient; others d/dlogp (-A rho) = -A rho
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -1.0, 0.0], [0.0, 1.0, 1.5]], dtype=torch.float64))
    assert stats["clip_frac"].item() == pytest.approx(2 / 6)
    assert stats["clip_frac_low"].item() == pytest.approx(1 / 6)
    assert stats["clip_frac_high"].item() == pytest.approx(1 / 6)
    assert stats["dual_clip_frac"].item() == 0
    assert stats["ratio_mean"].item() == pytest.approx(1.0)


def test_clip_higher_asymmetric():
    logp = torch.log(torch.tensor([[1.25, 1.3]], dtype=torch.float64))
    loss, stats = policy_loss(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
                              clip_low=0.2, clip_high=0.28)
    assert torch.allclose(loss, torch.tensor([[-1.25, -1.28]], dtype=torch.float64))
    assert stats["clip_frac_high"].item() == pytest.approx(0.5)


@pytest.mark.parametrize(("adv", "c", "expected", "dual_frac"), [
    (-1.0, 3.0, 3.0, 1.0),   # bounded at c|A|
    (-2.0, 3.0, 6.0, 1.0),
    (-1.0, None, 5.0, 0.0),  # no dual clip: unbounded
    (1.0, 3.0, -1.2, 0.0),   # positive advantages are never dual-clipped
])
def test_dual_clip(adv, c, expected, dual_frac):
    logp = _leaf([[math.log(5.0)]])
    loss, stats = policy_loss(logp, torch.zeros(1, 1), torch.tensor([adv]), torch.ones(1, 1), dual_clip_c=c)
    assert loss.item() == pytest.approx(expected)
    assert stats["dual_clip_frac"].item() == dual_frac
    loss.sum().backward()
    if dual_frac or adv > 0:
        assert logp.grad.item() == 0.0


def test_gspo_sequence_ratio_is_geometric_mean():
    tok_ratios = [1.2, 1.0, 0.9]
    logp = _leaf([[math.log(r) for r in tok_ratios] + [5.0]])  # last token masked: must not count
    old = torch.zeros(1, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    s = (1.2 * 1.0 * 0.9) ** (1 / 3)
    loss, stats = policy_loss(logp, old, torch.tensor([1.0]), mask, ratio_level="sequence")
    assert torch.allclose(loss, torch.tensor([[-s, -s, -s, 0.0]], dtype=torch.float64))
    assert stats["ratio_mean"].item() == pytest.approx(s)
    loss.sum().backward()
    # token-level trick: each token's gradient is -A * s (value of sg[s] * pi/sg[pi])
    assert torch.allclose(logp.grad, torch.tensor([[-s, -s, -s, 0.0]], dtype=torch.float64))


def test_gspo_clips_whole_sequence():
    logp = _leaf([[math.log(2.0), math.log(2.0)], [math.log(1.1), math.log(1.0 / 1.1)]])
    loss, stats = policy_loss(logp, torch.zeros(2, 2), torch.tensor([1.0, 1.0]), torch.ones(2, 2),
                              ratio_level="sequence")
    assert torch.allclose(loss, torch.tensor([[-1.2, -1.2], [-1.0, -1.0]], dtype=torch.float64))
    assert stats["clip_frac_high"].item() == pytest.approx(0.5)
    loss.sum().backward()
    assert torch.allclose(logp.grad[0], torch.zeros(2, dtype=torch.float64))


def test_approx_kl_and_mask():
    logp = torch.tensor([[-1.0, -2.0, -50.0]])
    old = torch.tensor([[-1.5, -1.0, 0.0]])
    loss, stats = policy_loss(logp, old, torch.tensor([1.0]), torch.tensor([[1, 1, 0]]))
    assert stats["approx_kl"].item() == pytest.approx(((-1.5 + 1.0) + (-1.0 + 2.0)) / 2)
    assert loss[0, 2].item() == 0.0


@pytest.mark.parametrize(("kwargs", "exc"), [
    ({"ratio_level": "word"}, UserError),
    ({"dual_clip_c": 1.0}, UserError),
])
def test_policy_loss_bad_options(kwargs, exc):
    with pytest.raises(exc):
        policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), **kwargs)


def test_policy_loss_needs_old_logp_for_ratio():
    with pytest.raises(ValueError):
        policy_loss(torch.zeros(1, 1), None, torch.ones(1), torch.ones(1, 1), ratio_level="token")


LOSS = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])


@pytest.mark.parametrize(("mode", "kwargs", "expected"), [
    ("token_mean", {}, 21 / 6),
    ("token_mean", {"normalizer": 12}, 21 / 12),
    ("seq_mean_token_mean", {}, (2.5 + 5.5) / 2),
    ("seq_mean_token_mean", {"normalizer": 4}, (2.5 + 5.5) / 4),
    ("seq_mean_token_sum_norm", {}, 21 / (2 * 4)),
    ("seq_mean_token_sum_norm", {"max_len": 10}, 21 / (2 * 10)),
])
def test_aggregate_modes(mode, kwargs, expected):
    assert aggregate_loss(LOSS, MASK, mode, **kwargs).item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_aggregate_dropped_row_counts_nowhere(mode):
    loss = torch.cat([LOSS, torch.full((1, 4), 100.0)])
    mask = torch.cat([MASK, torch.zeros(1, 4, dtype=MASK.dtype)])
    assert aggregate_loss(loss, mask, mode).item() == pytest.approx(aggregate_loss(LOSS, MASK, mode).item())


def test_aggregate_bad_mode():
    with pytest.raises(UserError):
        aggregate_loss(LOSS, MASK, "token-mean")


def test_kl_penalty_kinds():
    logp = torch.log(torch.tensor([0.5]))
    ref = torch.log(torch.tensor([0.25]))
    d = math.log(2.0)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(d)
    assert kl_penalty(logp, ref, "abs").item() == pytest.approx(d)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * d * d)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + d - 1.0)
    assert kl_penalty(logp, ref).item() == pytest.approx(0.5 + d - 1.0)
    far = kl_penalty(torch.tensor([0.0]), torch.tensor([20.0]), "low_var_kl")
    assert far.item() == 10.0
    assert kl_penalty(torch.tensor([0.0]), torch.tensor([20.0]), "k3").item() > 1e8
    x = torch.linspace(-3, 3, 13)
    assert (kl_penalty(x, torch.zeros(13), "k3") >= 0).all()
    with pytest.raises(UserError):
        kl_penalty(logp, ref, "kl")


@pytest.mark.parametrize(("pi", "ref", "expected"), [
    ((0.5, 0.5), (0.5, 0.5), 0.0),
    ((0.999, 0.001), (0.5, 0.5), 0.999 * math.log(0.999 / 0.5) + 0.001 * math.log(0.001 / 0.5)),  # 0.6852
    ((0.75, 0.25, 0.0), (0.25, 0.25, 0.5), 0.75 * math.log(3.0)),  # a token pi never takes adds nothing
    ((0.5, 0.5), (0.9, 0.1), 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5.0)),
])
def test_kl_exact_hand_computed(pi, ref, expected):
    logp = torch.log(torch.tensor([pi]))
    ref_logp = torch.log(torch.tensor([ref]))
    assert kl_exact(logp, ref_logp).item() == pytest.approx(expected, abs=1e-6)


def test_clamped_k3_underestimates_a_sharp_policy_and_k1_does_not():
    """The expectation of each sampled estimator under pi, against the exact KL (the bias kl_exact's doc states)."""
    pi, ref = torch.tensor([0.999, 0.001]), torch.tensor([0.5, 0.5])
    exact = kl_exact(pi.log(), ref.log()).item()
    k3_clamped = (pi * kl_penalty(pi.log(), ref.log(), "low_var_kl")).sum().item()
    k3 = (pi * kl_penalty(pi.log(), ref.log(), "k3")).sum().item()
    k1 = (pi * kl_penalty(pi.log(), ref.log(), "k1")).sum().item()
    assert exact == pytest.approx(0.999 * math.log(1.998) + 0.001 * math.log(0.002), abs=1e-6)  # 0.6852
    assert k3 == pytest.approx(exact, abs=1e-5) and k1 == pytest.approx(exact, abs=1e-6)
    assert k3_clamped == pytest.approx(0.999 * (0.5 / 0.999 - math.log(0.5 / 0.999) - 1) + 0.001 * 10.0, abs=1e-6)
    assert k3_clamped < 0.3 * exact


def test_masked_mean_and_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -7.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert masked_mean(x, m).item() == pytest.approx(2.5)
    assert torch.allclose(masked_mean(x, m, dim=-1), torch.tensor([2.0, 4.0]))
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0
    w = masked_whiten(x, m)
    vals = w[m.bool()]
    assert vals.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert vals.var(unbiased=True).item() == pytest.approx(1.0, abs=1e-5)
    assert masked_mean(masked_whiten(x, m, shift_mean=False), m).item() == pytest.approx(2.5, abs=1e-5)


@pytest.mark.parametrize(("gamma", "lam", "adv", "ret"), [
    (1.0, 1.0, [0.5, 0.4, 0.3], [1.0, 1.0, 1.0]),  # returns = reward-to-go
    (0.9, 0.8, [0.21712, 0.246, 0.3], [0.71712, 0.846, 1.0]),
])
def test_gae_by_hand(gamma, lam, adv, ret):
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    a, r = gae(rewards, values, torch.ones(1, 3), gamma, lam, whiten=False)
    assert torch.allclose(a, torch.tensor([adv]), atol=1e-6)
    assert torch.allclose(r, torch.tensor([ret]), atol=1e-6)
    # right padding with garbage values/rewards changes nothing on the masked tokens
    a2, r2 = gae(torch.tensor([[0.0, 0.0, 1.0, 9.0]]), torch.tensor([[0.5, 0.6, 0.7, 3.0]]),
                 torch.tensor([[1, 1, 1, 0]]), gamma, lam, whiten=False)
    assert torch.allclose(a2[:, :3], a, atol=1e-6) and torch.allclose(r2[:, :3], r, atol=1e-6)
    assert a2[0, 3] == 0 and r2[0, 3] == 0


def test_gae_whitened():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.1, 0.2, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    raw, ret = gae(rewards, values, mask, whiten=False)
    w, ret_w = gae(rewards, values, mask)
    assert torch.allclose(ret, ret_w)
    sel = mask.bool()
    expected = (raw[sel] - raw[sel].mean()) / raw[sel].std(unbiased=True)
    assert torch.allclose(w[sel], expected, atol=1e-4)
    assert w[1, 2] == 0


@pytest.mark.parametrize(("v", "old", "ret", "loss", "frac"), [
    ([1.0, 2.0], [0.0, 2.0], [0.0, 3.0], 0.5, 0.0),   # clipped prediction is closer: unclipped loss wins
    ([1.0], [0.0], [2.0], 0.5 * 2.25, 1.0),          # clipped to 0.5, further from 2: clip active
])
def test_value_loss(v, old, ret, loss, frac):
    val = torch.tensor([v], requires_grad=True)
    out, cf = value_loss(val, torch.tensor([old]), torch.tensor([ret]), torch.ones(1, len(v)), clip=0.5)
    assert out.item() == pytest.approx(loss)
    assert cf.item() == pytest.approx(frac)
    out.backward()
    if frac == 1.0:
        assert val.grad.abs().sum().item() == 0.0
