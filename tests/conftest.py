"""Shared fixtures. Tests never touch the network: HF_HUB_OFFLINE is set before any HF import."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"


def require_shared_benchmarks() -> Path:
    if not (SHARED_BENCHMARKS / "math500.jsonl").exists():
        pytest.skip(f"real benchmark files not found at {SHARED_BENCHMARKS} (../shared is absent on this machine)")
    return SHARED_BENCHMARKS


@pytest.fixture(scope="session")
def tiny_random_model_dir(tmp_path_factory) -> Path:
    """An untrained ~100k-parameter Llama with the char tokenizer, saved in HF format (built in ~1 s)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlbench_cli.testbed.tokenizer import build_char_tokenizer

    out = tmp_path_factory.mktemp("tiny_random_model")
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
