"""EM-RL rewards, EM-FT loss and EM-INF logit adjustment against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlbench_cli.algorithms.entropy import em_ft_loss, em_inf_adjust, em_rl_rewards, token_entropy


def t(x):  # noqa: ANN001, ANN201
    return torch.tensor(x, dtype=torch.float64)


def test_token_entropy() -> None:
    assert token_entropy(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))
    assert token_entropy(torch.tensor([[0.0, -1e9]])).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("variant", "reduce", "expected"), [
    ("token", "mean", [-1.5, 0.0]),   # -(1 + 2) / 2; the empty row gets 0
    ("token", "sum", [-3.0, 0.0]),
    ("sequence", "mean", [-2.0, 0.0]),  # (-1 - 3) / 2
    ("sequence", "sum", [-4.0, 0.0]),
])
def test_em_rl_rewards(variant, reduce, expected) -> None:  # noqa: ANN001
    mask = t([[1, 1, 0], [0, 0, 0]])
    kw = {"entropies": t([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])} if variant == "token" else {
        "logps": t([[-1.0, -3.0, -9.0], [-5.0, -5.0, -5.0]])}
    assert em_rl_rewards(mask, variant=variant, reduce=reduce, **kw).tolist() == expected


def test_em_rl_rejects_missing_inputs() -> None:
    with pytest.raises(ValueError):
        em_rl_rewards(t([[1]]), variant="token", logps=t([[-1.0]]))
    with pytest.raises(ValueError):
        em_rl_rewards(t([[1]]), variant="tokens", entropies=t([[1.0]]))


def test_em_ft_loss_is_the_masked_entropy_with_gradient() -> None:
    logits = torch.zeros(1, 2, 3, dtype=torch.float64, requires_grad=True)
    ent = token_entropy(logits)
    loss = em_ft_loss(ent, t([[1, 0]]))
    assert loss[0, 0].item() == pytest.approx(math.log(3)) and loss[0, 1].item() == 0.0
    loss.sum().backward()
    assert logits.grad is not None


def test_em_inf_one_adam_step_moves_each_logit_by_lr() -> None:
    # Adam's first step is lr * sign(grad): the larger logit goes up, the smaller down (entropy falls)
    out = em_inf_adjust(torch.tensor([[0.0, 1.0]]), threshold=0.0, kl_weight=0.0, lr=0.1, steps=1)
    assert torch.allclose(out, torch.tensor([[-0.1, 1.1]]), atol=1e-6)
    assert token_entropy(out) < token_entropy(torch.tensor([[0.0, 1.0]]))


def test_em_inf_threshold_and_row_independence() -> None:
    sharp = torch.tensor([[0.0, 20.0]])  # entropy ~ 4e-8 < threshold: left alone
    assert torch.equal(em_inf_adjust(sharp, threshold=0.1), sharp)
    flat = torch.tensor([[0.0, 1.0, 0.5]])
    alone = em_inf_adjust(flat, threshold=0.1, steps=3)
    batch = em_inf_adjust(torch.cat([flat, torch.tensor([[0.0, 20.0, 0.0]])]), threshold=0.1, steps=3)
    assert torch.allclose(batch[0], alone[0]) and torch.equal(batch[1], torch.tensor([0.0, 20.0, 0.0]))
    # a large KL weight keeps the distribution near the original
    near = em_inf_adjust(flat, threshold=0.0, kl_weight=1e6, lr=0.1, steps=3)
    far = em_inf_adjust(flat, threshold=0.0, kl_weight=0.0, lr=0.1, steps=3)
    assert token_entropy(far) < token_entropy(near) + 1e-9
