"""The policy every runner trains: loading it (and its tokenizer), its LoRA adapter config, and saving the final
model into the run folder (Hugging Face format plus rlbench.json with the prompt template the evaluation uses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlbench_cli.config import Recipe
from rlbench_cli.records import atomic_write_json
from rlbench_cli.training.context import RunContext


def torch_dtype(recipe: Recipe) -> Any:
    """The weights dtype of `model.dtype`; 'auto' is float32 on CPU (bf16 there is slower and changes numbers)."""
    import torch

    chosen = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
              "float16": torch.float16}[recipe.model.dtype]
    if chosen == "auto" and not torch.cuda.is_available():
        chosen = torch.float32
    return chosen


def load_policy(model_path: str, recipe: Recipe) -> tuple[Any, Any]:
    """Load the policy and tokenizer (trust_remote_code only if the recipe sets it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"trust_remote_code": recipe.model.trust_remote_code, "revision": recipe.model.revision}
    tokenizer = AutoTokenizer.from_pretrained(model_path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(recipe), **kwargs)
    return model, tokenizer


def peft_config(recipe: Recipe) -> Any:
    """peft's LoraConfig for `model.lora`, or None when LoRA is off."""
    if not recipe.model.lora.enabled:
        return None
    from peft import LoraConfig

    lora = recipe.model.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def write_model_folder(run: RunContext, model: Any, tokenizer: Any, model_path: str,
                       state_dict: dict[str, Any] | None = None) -> Path:
    """Weights + tokenizer into run/model, and rlbench.json (prompt template, base model, run) last."""
    out = run.model_dir
    model.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(out)
    atomic_write_json(out / "rlbench.json", {"prompt_template": run.recipe.data.prompt_template,
                                             "base_model": model_path, "run": run.dir.name})
    return out


def save_final_model(trainer: Any, tokenizer: Any, run: RunContext, model_path: str) -> Path:
    """Save a trainer's policy into run/model (merged LoRA if any); every process joins, the main one writes."""
    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # LoRA: save merged weights (merging needs unpartitioned weights)
        model, state_dict = model.merge_and_unload(), None
    else:  # under DeepSpeed ZeRO-3 parameters are partitioned: every rank joins the gather
        state_dict = accelerator.get_state_dict(trainer.model)
    if accelerator.is_main_process:
        write_model_folder(run, model, tokenizer, model_path, state_dict=state_dict)
    accelerator.wait_for_everyone()
    return run.model_dir
