"""What the wave-2 rollout code (training/rollout_signals.py, ref_reset.py) relies on in the pinned TRL. Fails
loudly if an upgrade changes it: the temperature schedule re-installs TRL's fused LM head, ReMax decodes greedily
through TRL's own generation path, the reference reset copies weights with TRL's sync helper."""

from __future__ import annotations

import inspect

import torch


def test_fused_head_is_an_instance_attribute_and_can_be_reinstalled(tiny_random_model_dir) -> None:
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_random_model_dir)
    ids = torch.tensor([[1, 5, 6, 7]])
    labels = ids.clone()
    logits = model(ids).logits[:, :-1]

    def logp_at(temperature: float) -> torch.Tensor:
        return torch.log_softmax(logits / temperature, -1).gather(-1, ids[:, 1:, None])[..., 0]

    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    assert "forward" in model.__dict__  # rollout_signals.apply_temperature pops it to reinstall
    out1 = model(ids, labels=labels, fused_lm_head=True).log_probs[:, -3:]
    model.__dict__.pop("forward")
    add_fused_lm_head(model, temperature=0.5, outputs=("log_probs", "entropy"))
    out2 = model(ids, labels=labels, fused_lm_head=True).log_probs[:, -3:]
    assert torch.allclose(out1, logp_at(1.0), atol=1e-5) and torch.allclose(out2, logp_at(0.5), atol=1e-5)
    assert model(ids).logits.shape == (1, 4, model.config.vocab_size)  # the plain forward still works


def test_private_methods_used_by_the_wave2_code() -> None:
    from trl import GRPOTrainer
    from trl.trainer.callbacks import SyncRefModelCallback

    params = inspect.signature(GRPOTrainer._generate_single_turn).parameters
    assert list(params)[1:5] == ["prompt_ids", "images", "multimodal_fields", "num_generations"]
    assert list(inspect.signature(GRPOTrainer._tokenize_prompts).parameters)[1:] == ["prompts"]
    params = inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters
    assert {"batch_size", "compute_entropy"} <= set(params)
    assert callable(SyncRefModelCallback.sync_target_model)
    # GVPO's _prepare_inputs replicates TRL's buffering with a group shuffle: TRL's must still look like this
    prep = inspect.getsource(GRPOTrainer._prepare_inputs)
    for piece in ("generate_every = self.args.steps_per_generation * self.num_iterations", "shuffle_sequence_dict",
                  "split_tensor_dict(generation_batch, self.args.steps_per_generation)",
                  "self._buffered_inputs[self._step % self.args.steps_per_generation]"):
        assert piece in prep, piece
    from transformers import Trainer

    assert "self._prepare_inputs(" in inspect.getsource(Trainer.training_step)  # GRPOTrainer calls super()
    src = inspect.getsource(GRPOTrainer.__init__)
    assert "self.generation_config = GenerationConfig(" in src and "self.generation_kwargs = generation_kwargs" in src
