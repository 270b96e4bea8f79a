"""EM-RL rewards, EM-FT loss and EM-INF logit adjustment against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlbench_cli.algorithms.entropy import (
    adaptive_temperature,
    em_ft_loss,
    em_inf_adjust,
    em_rl_rewards,
    token_entropy,
)


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


def test_adaptive_temperature_bisects_to_the_target_entropy() -> None:
    # logits [0, 1]: H0 = 0.5822, target 0.85 * H0 = 0.4949. T = 0.505 gives H = 0.3695 (below the target by more
    # than tol 0.1: t_min = 0.505); T = (0.505 + 1) / 2 = 0.7525 gives H = 0.5132, within tol: stop there.
    out = adaptive_temperature(torch.tensor([[0.0, 1.0]]), target_ratio=0.85, t_min=0.01, t_max=1.0, tol=0.1)
    assert torch.allclose(out, torch.tensor([[0.0, 1.0 / 0.7525]]), atol=1e-6)
    # max_iter 1: the first midpoint is used even though it missed the target
    one = adaptive_temperature(torch.tensor([[0.0, 1.0]]), target_ratio=0.85, max_iter=1)
    assert torch.allclose(one, torch.tensor([[0.0, 1.0 / 0.505]]), atol=1e-6)
    # a step already at most `threshold` keeps T = 1; rows are independent
    sharp = torch.tensor([[0.0, 30.0]])
    both = adaptive_temperature(torch.cat([torch.tensor([[0.0, 1.0]]), sharp]), threshold=1e-5)
    assert torch.equal(both[1], sharp[0]) and torch.allclose(both[0], out[0], atol=1e-6)
    # uniform logits are temperature-invariant: the bisection runs out (max_iter) and returns the last midpoint
    flat = adaptive_temperature(torch.zeros(1, 4), max_iter=3)
    assert torch.equal(flat, torch.zeros(1, 4))


def test_em_inf_settings_follow_the_recipe_mode() -> None:
    from rlbench_cli.cli_support import em_inf_settings

    base = {"em_inf": True, "em_inf_mode": "logits", "em_inf_threshold": 0.3, "em_inf_kl_weight": 0.05,
            "em_inf_lr": 0.1, "em_inf_steps": 3, "em_inf_target_ratio": 0.85, "em_inf_t_min": 0.01,
            "em_inf_t_max": 1.0, "em_inf_tol": 0.1, "em_inf_max_iter": 100, "em_inf_min_entropy": 1e-5}
    assert em_inf_settings(base, None) == {"threshold": 0.3, "kl_weight": 0.05, "lr": 0.1, "steps": 3}
    assert em_inf_settings(base, False) is None
    assert em_inf_settings(base | {"em_inf_mode": "adaptive_temp"}, None) == {
        "mode": "adaptive_temp", "target_ratio": 0.85, "t_min": 0.01, "t_max": 1.0, "tol": 0.1, "max_iter": 100,
        "threshold": 1e-5}


def test_em_inf_defaults_are_the_authors_math_script() -> None:
    # shivamag125/EM_PT evaluation_scripts/em_inf_eval.sh (TASK=math) and eval_model_ckpt.sh: 0.3, 0.05, 0.1, 3
    from rlbench_cli.config import EvalConfig

    ev = EvalConfig()
    assert (ev.em_inf_threshold, ev.em_inf_kl_weight, ev.em_inf_lr, ev.em_inf_steps) == (0.3, 0.05, 0.1, 3)
