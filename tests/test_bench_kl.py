"""bench/kl_to_base.py on tiny random models: a policy is at KL 0 from itself, and at a positive exact KL from a
perturbed copy, which k1 (unbiased on the policy's own samples) estimates to within its sampling noise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "kl_to_base.py"


def _bench():
    spec = importlib.util.spec_from_file_location("kl_to_base", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kl_to_itself_is_zero(tiny_random_model_dir):
    r = _bench().measure(str(tiny_random_model_dir), str(tiny_random_model_dir), prompts=4, n=2, split="train",
                         seed=0)
    assert r["samples"] == 8 and r["tokens_per_response"] > 0
    assert r["kl_exact"] == pytest.approx(0.0, abs=1e-6)
    assert r["k1"] == pytest.approx(0.0, abs=1e-6) and r["k3_clamped"] == pytest.approx(0.0, abs=1e-6)


def test_kl_to_a_perturbed_copy_is_positive(tiny_random_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_random_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        model.lm_head.weight.add_(0.5 * torch.randn_like(model.lm_head.weight))
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_random_model_dir).save_pretrained(tmp_path)
    r = _bench().measure(str(tmp_path), str(tiny_random_model_dir), prompts=8, n=4, split="train", seed=0)
    assert r["kl_exact"] > 0.01
    # k1's per-token mean over >= 32 sampled responses; a sign or indexing bug would put it far off
    assert r["k1"] == pytest.approx(r["kl_exact"], rel=0.5)
