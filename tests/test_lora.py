"""LoRA (`model.lora.enabled`): the adapter config, and tiny CPU runs where only the adapter trains.

A LoRA update of rank r changes each adapted weight by B·A (rank <= r) and leaves every other tensor alone;
the saved model is merged (plain Hugging Face weights, no adapter files) and loads with AutoModelForCausalLM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tiny_recipe, train_dict

from rlbench_cli.config import ALGORITHMS, recipe_from_dict

RANK = 2
ADAPTED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # peft "all-linear"


def _lora(enabled: bool = True, **extra) -> dict:
    return {"lora": {"enabled": enabled, "r": RANK, "alpha": 4, "dropout": 0.0, **extra}}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_peft_config_follows_recipe(algorithm: str, tmp_path: Path) -> None:
    from rlbench_cli.training.policy import peft_config

    data = tiny_recipe(algorithm, tmp_path, tmp_path, model=_lora(target_modules=["q_proj", "v_proj"]))
    cfg = peft_config(recipe_from_dict(data, "test"))
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (RANK, 4, 0.0)
    assert set(cfg.target_modules) == {"q_proj", "v_proj"} and cfg.task_type == "CAUSAL_LM"
    off = tiny_recipe(algorithm, tmp_path, tmp_path, model=_lora(enabled=False))
    assert peft_config(recipe_from_dict(off, "test")) is None


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "raft", "ppo", "sft", "dpo"])
def test_lora_run_trains_only_the_adapter(algorithm: str, tiny_random_model_dir: Path,
                                          tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    optim = {"lr": 5e-2, "max_steps": 3, **({"micro_batch_size": 2} if algorithm in ("sft", "dpo") else {})}
    data = tiny_recipe(algorithm, tiny_random_model_dir, tmp_path / "results", model=_lora(), optim=optim)
    run = train_dict(data)
    merged_dir = run / "model"
    assert not (merged_dir / "adapter_config.json").exists()  # merged, not an adapter folder
    model = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert not hasattr(model, "peft_config")

    base, merged = _weights(tiny_random_model_dir), _weights(merged_dir)
    assert set(base) == set(merged)
    # Iterative DPO merges each iteration's adapter before the next one starts (a new reference policy), so its
    # update is a sum of rank-r terms, one per iteration (the rows' cumulative `samples` changes per iteration).
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rank = RANK * (len({r["samples"] for r in rows}) if algorithm == "dpo" else 1)
    changed = 0
    for name, before in base.items():
        delta = (merged[name].float() - before.float())
        if not name.endswith(".weight") or not any(m in name for m in ADAPTED):
            assert torch.equal(merged[name], before), f"{name} changed but is not LoRA-adapted"
            continue
        if delta.abs().max() > 0:
            changed += 1
            sv = torch.linalg.svdvals(delta.double())
            # beyond rank r only float32 rounding of W + B·A remains (a full fine-tune is full rank)
            assert sv[rank] <= 1e-3 * sv[0], (name, rank, sv[: rank + 2].tolist())
    assert changed > 0, "no adapted weight changed: the adapter did not train"
