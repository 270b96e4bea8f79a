"""vLLM importance-sampling correction: rlbench's `_compute_loss` weights the policy term by the ratio TRL computes
between the trainer's and vLLM's log-probs, exactly as TRL's own loss does, and the recipe setting reaches TRL.

No vLLM is needed: the test builds the inputs TRL's `_generate_and_score_completions` would pass with
`use_vllm=True` (old log-probs, `importance_sampling_ratio` of shape (B, 1) or (B, T)) and compares the losses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlbench_cli.config import recipe_from_dict


def _recipe(model_dir: Path, out: Path, **rollout) -> object:
    return recipe_from_dict({
        "name": "vllm-is", "model": {"path": str(model_dir)}, "data": {"source": "testbed", "prompt_template": "plain"},
        "algorithm": {"name": "grpo", "kl_coef": 0.0, "log_kl": False},
        "rollout": {"prompts_per_batch": 2, "n": 2, "max_new_tokens": 5, **rollout},
        "optim": {"micro_batch_size": 4, "max_steps": 1}, "output": {"dir": str(out)},
    }, "test")


def test_recipe_settings_reach_grpo_config(tmp_path: Path, tiny_random_model_dir: Path) -> None:
    from rlbench_cli.training.context import RunContext
    from rlbench_cli.training.rl import grpo_config

    default = _recipe(tiny_random_model_dir, tmp_path)
    assert default.rollout.vllm_importance_sampling_correction is True  # on by default, like TRL
    cfg = grpo_config(default, RunContext(default, tmp_path, "t"), 1)
    assert (cfg.vllm_importance_sampling_correction, cfg.vllm_importance_sampling_mode,
            cfg.vllm_importance_sampling_clip_max) == (True, "sequence_mask", 3.0)
    off = _recipe(tiny_random_model_dir, tmp_path, vllm_importance_sampling_correction=False,
                  vllm_importance_sampling_mode="token_truncate", vllm_importance_sampling_cap=2.0)
    cfg = grpo_config(off, RunContext(off, tmp_path, "t"), 1)
    assert (cfg.vllm_importance_sampling_correction, cfg.vllm_importance_sampling_mode,
            cfg.vllm_importance_sampling_clip_max) == (False, "token_truncate", 2.0)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tiny_random_model_dir: Path):
    import torch
    from datasets import Dataset

    from rlbench_cli.training.context import RunContext
    from rlbench_cli.training.policy import load_policy
    from rlbench_cli.training.rl import RLBenchGRPOTrainer, grpo_config

    tmp = tmp_path_factory.mktemp("vllm_is")
    recipe = _recipe(tiny_random_model_dir, tmp)
    model, tok = load_policy(str(tiny_random_model_dir), recipe)
    torch.manual_seed(0)
    t = RLBenchGRPOTrainer(
        model=model, args=grpo_config(recipe, RunContext(recipe, tmp, "t"), 1),
        train_dataset=Dataset.from_list([{"prompt": "1+1=", "answer": "2"}] * 4), processing_class=tok,
        reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], rb_recipe=recipe,
    )
    t.model.train()
    t.current_gradient_accumulation_steps = 1  # set by Trainer.train(); one micro-batch per optimizer step here
    return t


def _inputs(trainer, ratio_shape: str):
    """What TRL's rollout returns with use_vllm and the correction on (4 rows, 3 prompt and 5 completion tokens)."""
    import torch

    g = torch.Generator().manual_seed(1)
    b, p, c = 4, 3, 5
    prompt_ids = torch.randint(3, 20, (b, p), generator=g)
    completion_ids = torch.randint(3, 20, (b, c), generator=g)
    completion_mask = torch.ones(b, c, dtype=torch.long)
    completion_mask[1, 3:] = 0  # a response that stopped early
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([prompt_ids, completion_ids], 1),
            torch.cat([torch.ones(b, p, dtype=torch.long), completion_mask], 1), c)
    # TRL computes old log-probs whenever vLLM IS is on; make them differ a little so the PPO ratio is not 1.
    old = logps + 0.05 * torch.randn(b, c, generator=g)
    shape = (b, 1) if ratio_shape == "sequence" else (b, c)
    ratio = torch.rand(shape, generator=g) * 2.5
    ratio[0] = 0.0  # a masked-out sequence (ratio above the cap in sequence_mask mode)
    return {
        "prompt_ids": prompt_ids, "prompt_mask": torch.ones(b, p, dtype=torch.long),
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5]), "num_items_in_batch": completion_mask.sum().float(),
        "old_per_token_logps": old, "importance_sampling_ratio": ratio,
    }


@pytest.mark.parametrize("ratio_shape", ["sequence", "token"])
def test_weighted_loss_matches_trls_own_loss(trainer, ratio_shape: str) -> None:
    from trl import GRPOTrainer

    inputs = _inputs(trainer, ratio_shape)
    ours = trainer._compute_loss(trainer.model, inputs)
    trainer.use_vllm = True  # TRL's loss applies the ratio only when it generated with vLLM
    try:
        theirs = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    finally:
        trainer.use_vllm = False
    assert trainer.loss_type == "dapo" and trainer.vllm_importance_sampling_correction
    assert abs(float(ours) - float(theirs)) < 1e-6, (float(ours), float(theirs))
    unweighted = trainer._compute_loss(trainer.model, {k: v for k, v in inputs.items()
                                                       if k != "importance_sampling_ratio"})
    assert abs(float(ours) - float(unweighted)) > 1e-4  # the weight changed the loss


def test_loss_is_linear_in_the_sequence_weights(trainer) -> None:
    """Loss(ratio) = Σ_b ratio_b · Loss(one-hot b): each sequence's term is scaled by its own ratio, nothing else."""
    import torch

    inputs = _inputs(trainer, "sequence")
    ratio = inputs["importance_sampling_ratio"]

    def loss_with(weights: torch.Tensor) -> float:
        return float(trainer._compute_loss(trainer.model, {**inputs, "importance_sampling_ratio": weights}))

    parts = [loss_with(torch.eye(4)[b].unsqueeze(1)) for b in range(4)]
    assert loss_with(ratio) == pytest.approx(sum(float(r) * x for r, x in zip(ratio.flatten(), parts, strict=True)),
                                             abs=1e-6)
    assert parts[0] != 0.0 and loss_with(torch.ones(4, 1)) == pytest.approx(sum(parts), abs=1e-6)
