"""Wave-2 policy losses (CISPO, SAPO, GMPO, KL-Cov, Clip-Cov, GVPO): values and gradients computed by hand from the
formulas in docs/algorithms.md."""

from __future__ import annotations

import math

import pytest
import torch

from rlbench_cli.algorithms.losses import policy_loss
from rlbench_cli.algorithms.policy_losses import (
    POLICY_LOSSES,
    cispo_loss,
    clip_cov_loss,
    gmpo_loss,
    gvpo_loss,
    kl_cov_loss,
    sapo_loss,
)


def leaf(x):  # noqa: ANN001, ANN201
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def t(x):  # noqa: ANN001, ANN201
    return torch.tensor(x, dtype=torch.float64)


def test_table_matches_the_recipe_schema() -> None:
    from rlbench_cli.config import POLICY_LOSS_NAMES

    assert set(POLICY_LOSS_NAMES) - {"em_ft"} <= set(POLICY_LOSSES)  # em_ft is the entropy itself (entropy.py)


def test_cispo_weight_is_clipped_and_detached() -> None:
    logp = leaf([[-1.0, -1.0, -1.0]])
    old = t([[-1.0 - math.log(1.5), -1.0 - math.log(0.5), -1.0]])  # rho = 1.5, 0.5, 1
    loss, stats = cispo_loss(logp, old, t([1.0]), t([[1, 1, 1]]), clip_low=1.0, clip_high=0.2)
    w = t([[1.2, 0.5, 1.0]])  # upper cap 1.2; no lower bound
    assert torch.allclose(loss, w * 1.0)  # -w * A * logp with logp = -1
    loss.sum().backward()
    assert torch.allclose(logp.grad, -w)  # gradient -w * A on log pi: the clipped token keeps a gradient
    assert stats["clip_frac"].item() == pytest.approx(1 / 3)
    # with a lower bound 0.2: rho 0.5 -> 0.8
    loss2, _ = cispo_loss(leaf([[-1.0, -1.0, -1.0]]), old, t([1.0]), t([[1, 1, 1]]), clip_low=0.2, clip_high=0.2)
    assert torch.allclose(loss2, t([[1.2, 0.8, 1.0]]))


def test_cispo_mask() -> None:
    loss, _ = cispo_loss(leaf([[-1.0, -2.0]]), t([[-1.0, -2.0]]), t([2.0]), t([[1, 0]]))
    assert loss.tolist() == [[2.0, 0.0]]


def test_sapo_gate() -> None:
    # rho = 1: value -(2 / tau) A, gradient -A (the plain policy gradient)
    logp = leaf([[-1.0, -1.0]])
    loss, _ = sapo_loss(logp, t([[-1.0, -1.0]]), t([[1.0, -1.0]]), t([[1, 1]]), tau_pos=1.0, tau_neg=1.05)
    assert torch.allclose(loss, t([[-2.0, 2 / 1.05]]))
    loss.sum().backward()
    assert torch.allclose(logp.grad, t([[-1.0, 1.0]]))
    # rho = 2, A = 1, tau 1: -sigmoid(1) * 4
    logp = leaf([[math.log(2.0)]])
    loss, _ = sapo_loss(logp, t([[0.0]]), t([1.0]), t([[1]]))
    assert loss.item() == pytest.approx(-4 / (1 + math.exp(-1)))
    loss.sum().backward()
    s = 1 / (1 + math.exp(-1))
    assert logp.grad.item() == pytest.approx(-4 * s * (1 - s) * 2.0)  # 4 sigma (1 - sigma) rho A


@pytest.mark.parametrize(("d", "mask", "adv", "expected"), [
    ([0.6, -0.2], [1, 1], 1.0, -math.exp(0.1)),    # min(d, clip): [0.4, -0.2]
    ([0.6, -0.2], [1, 1], -1.0, math.exp(0.2)),    # max(d, clip): [0.6, -0.2] (no clip against A < 0 here)
    ([-0.6, 0.2], [1, 1], 1.0, -math.exp(-0.2)),   # min: [-0.6, 0.2]
    ([-0.6, 0.2], [1, 1], -1.0, math.exp(-0.1)),   # max: [-0.4, 0.2]
    ([0.6, -0.2], [1, 0], 1.0, -math.exp(0.4)),    # masked token out of the mean
])
def test_gmpo_sign_aware_log_clip(d, mask, adv, expected) -> None:  # noqa: ANN001
    old = t([[-1.0, -1.0]])
    logp = leaf([[-1.0 + d[0], -1.0 + d[1]]])
    loss, _ = gmpo_loss(logp, old, t([adv]), t([mask]), clip_low=0.4, clip_high=0.4)
    for j, m in enumerate(mask):
        assert loss[0, j].item() == pytest.approx(expected if m else 0.0)


def test_gmpo_gradient_only_through_unclipped_tokens() -> None:
    logp = leaf([[-0.4, -1.2]])  # d = [0.6, -0.2], A = 1: the first token is clipped
    loss, _ = gmpo_loss(logp, t([[-1.0, -1.0]]), t([1.0]), t([[1, 1]]))
    loss[0, 0].backward()  # one token carries the sequence loss
    ratio = math.exp(0.1)
    assert torch.allclose(logp.grad, t([[0.0, -ratio / 2]]))


def _cov_case():  # noqa: ANN202
    # A per token [[1, 1], [-1, -1]]; logp [[-.1, -2], [-.5, -3]] (mean -1.4) -> cov [[1.3, -.6], [-.9, 1.6]]
    logp = leaf([[-0.1, -2.0], [-0.5, -3.0]])
    return logp, t([1.0, -1.0]), t([[1, 1], [1, 1]])


def test_kl_cov_penalises_the_top_covariance_token() -> None:
    logp, adv, mask = _cov_case()
    old = t([[-0.1, -2.0], [-0.5, -3.5]])  # log rho 0.5 on the top-covariance token (1, 1)
    loss, stats = kl_cov_loss(logp, old, adv, mask, cov_ratio=0.25, cov_kl_coef=1.0)  # k = 1 of 4
    assert torch.allclose(loss, t([[-1.0, -1.0], [1.0, math.exp(0.5) + 0.5]]))
    assert stats["clip_frac"].item() == pytest.approx(0.25)
    none, _ = kl_cov_loss(logp, old, adv, mask, cov_ratio=0.0)
    assert torch.allclose(none, t([[-1.0, -1.0], [1.0, math.exp(0.5)]]))  # no clipping anywhere
    # at least one token is picked however small the ratio (max(1, floor(N r)))
    tiny, _ = kl_cov_loss(logp, old, adv, mask, cov_ratio=1e-9)
    assert torch.allclose(tiny, loss)


def test_clip_cov_detaches_a_covariance_token_not_clipped_by_ppo() -> None:
    logp, adv, mask = _cov_case()
    old = t([[-0.1, -2.0], [-0.5, -2.5]])  # rho e^-.5 at (1, 1): PPO clips it (A < 0, rho < 0.8)
    loss, _ = clip_cov_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2, cov_ratio=2e-4)
    # candidates with 1 < cov < 5 not clipped by PPO: only (0, 0) -> detached
    assert torch.allclose(loss, t([[0.0, -1.0], [1.0, 0.8]]))
    loss.sum().backward()
    assert logp.grad[0, 0].item() == 0.0 and logp.grad[0, 1].item() != 0.0


def test_gvpo_regression_to_the_centred_reward() -> None:
    logp = leaf([[-0.8], [-1.0]])
    old = t([[-1.0], [-1.0]])  # log ratio [0.2, 0]
    loss, _ = gvpo_loss(logp, old, t([0.5, -0.5]), t([[1], [1]]), group_size=2, gvpo_beta=0.1)
    # s = [.02, 0], s_bar .01 -> (s - s_bar) - A = [-.49, .49]; L = .5 * .49^2 / (n - 1)
    assert torch.allclose(loss, t([[0.5 * 0.49 ** 2], [0.5 * 0.49 ** 2]]))
    loss.sum().backward()
    assert torch.allclose(logp.grad, t([[0.1 * -0.49], [0.1 * 0.49]]))  # beta (diff) / (n - 1), s_bar detached
    with pytest.raises(ValueError):
        gvpo_loss(logp, old, t([0.5, -0.5]), t([[1], [1]]), group_size=1)
    with pytest.raises(ValueError):
        gvpo_loss(leaf([[-1.0]] * 3), t([[-1.0]] * 3), t([0.0] * 3), t([[1]] * 3), group_size=2)


def test_ppo_entry_is_the_first_wave_loss() -> None:
    logp, old = leaf([[-0.5, -1.0]]), t([[-1.0, -1.0]])
    a, _ = POLICY_LOSSES["ppo"](logp, old, t([1.0]), t([[1, 1]]), clip_low=0.2, clip_high=0.2)
    b, _ = policy_loss(logp, old, t([1.0]), t([[1, 1]]))
    assert torch.equal(a, b)
