"""Fails loudly if a TRL upgrade changes what rlbench's GRPOTrainer overrides rely on (see training/rl.py)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRL_PIN = "1.16.0"


def test_trl_is_pinned_exactly_and_installed_at_the_pin() -> None:
    import trl

    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(rf'"trl=={re.escape(TRL_PIN)}"', pyproject), "pyproject must pin trl exactly"
    assert trl.__version__ == TRL_PIN, (
        f"trl {trl.__version__} installed but rlbench was verified against {TRL_PIN}; "
        "re-check RLBenchGRPOTrainer's overrides before moving the pin"
    )


# Private methods rlbench overrides or calls, with the leading parameters it passes.
EXPECTED = {
    "_generate_and_score_completions": ["self", "inputs"],
    "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
    "_compute_loss": ["self", "model", "inputs"],
    "_generate": ["self", "prompts"],
    "_get_per_token_logps_and_entropies": ["self", "model", "input_ids", "attention_mask", "logits_to_keep",
                                           "batch_size", "compute_entropy"],
    "_prepare_inputs": ["self", "generation_batch"],
    "get_train_dataloader": ["self"],
    "_get_train_sampler": ["self", "dataset"],  # dynamic sampling swaps in resampling.PromptStream
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_private_methods_keep_their_signatures(name: str) -> None:
    from trl import GRPOTrainer

    method = getattr(GRPOTrainer, name, None)
    assert method is not None, f"GRPOTrainer.{name} is gone: training/rl.py overrides it"
    params = list(inspect.signature(method).parameters)
    assert params[: len(EXPECTED[name])] == EXPECTED[name], f"GRPOTrainer.{name} signature changed: {params}"


def test_rollout_dict_keys_and_shapes(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    """Run TRL's own _generate_and_score_completions once and check every key/shape rl.py reads or writes."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

    tok = AutoTokenizer.from_pretrained(tiny_random_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_random_model_dir)
    ds = Dataset.from_list([{"prompt": f"Problem: {i}+1\nSolution:", "answer": str(i + 1)} for i in range(4)])
    seen: dict[str, torch.Tensor] = {}

    def reward(prompts, completions, answer, **kw):
        return [1.0 if "1" in c else -1.0 for c in completions]

    class Probe(GRPOTrainer):
        def _calculate_rewards(self, *args, **kwargs):
            seen["rewards"] = super()._calculate_rewards(*args, **kwargs)
            return seen["rewards"]

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", num_generations=4,
                      per_device_train_batch_size=8, max_completion_length=6, beta=1.0, max_steps=1,
                      logging_steps=1, save_strategy="no", steps_per_generation=1, gradient_accumulation_steps=1)
    trainer = Probe(model=model, args=args, train_dataset=ds, processing_class=tok, reward_funcs=[reward])
    batch = [ds[i // 4] for i in range(8)]  # 2 prompts x 4 generations, TRL's order
    out = trainer._generate_and_score_completions(batch)
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages",
                "num_items_in_batch", "ref_per_token_logps"):
        assert key in out, f"TRL rollout dict lost {key!r}"
    b, t = out["completion_ids"].shape
    assert out["advantages"].shape == (b,)
    assert out["completion_mask"].shape == (b, t)
    assert out["ref_per_token_logps"].shape == (b, t)
    assert seen["rewards"].shape == (b, 1), "rewards_per_func must be (N_total, n_reward_funcs)"
    assert float(out["num_items_in_batch"]) == float(out["completion_mask"].sum())
    # rl.py adds a per-row keep vector: TRL's buffering must carry it through shuffle and split.
    out["rb_keep"] = torch.arange(b, dtype=torch.float32)
    chunks = split_tensor_dict(shuffle_sequence_dict(out), 2)
    assert sorted(torch.cat([c["rb_keep"] for c in chunks]).tolist()) == list(range(b))
    assert trainer.num_generations == 4 and trainer.processing_class.pad_token_id == tok.pad_token_id


def test_vllm_importance_sampling_keys_rlbench_relies_on() -> None:
    """rl.py passes these GRPOConfig fields and reads `importance_sampling_ratio`, which TRL's rollout writes and its
    own loss multiplies into the per-token policy loss (the behaviour rlbench's `_compute_loss` reproduces)."""
    import dataclasses

    from trl import GRPOConfig, GRPOTrainer

    fields = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    assert fields["vllm_importance_sampling_correction"] is True
    assert fields["vllm_importance_sampling_mode"] == "sequence_mask"
    assert fields["vllm_importance_sampling_clip_max"] == 3.0
    rollout = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert 'output["importance_sampling_ratio"] = vllm_importance_sampling_ratio' in rollout
    assert "self.use_vllm and self.vllm_importance_sampling_correction" in rollout
    loss = inspect.getsource(GRPOTrainer._compute_loss)
    assert 'per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]' in loss
    # The KL term is added after the correction, so it is not weighted (rlbench does the same).
    assert loss.index('inputs["importance_sampling_ratio"]') < loss.index("per_token_loss + self.beta * per_token_kl")
