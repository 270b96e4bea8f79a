"""Throughput of the HF eval backend (seeded Gumbel-max sampling) vs a bare `model.generate(do_sample=True)`.

Run:  . .venv/bin/activate && python bench/bench_generation.py [--prompts 32] [--max-new-tokens 64] [--reps 3]

Uses the cached testbed base model if it has been built (`build_base_model()`), else a random tiny Llama with
the char tokenizer. Both sides get the same prompts, batch size, temperature 1.0 and top_p 1.0; tokens/s
counts generated tokens up to and including EOS. Prints both figures and their ratio (median of --reps timed
runs after one warm-up). The gap is the per-row, per-step seeded noise draw that makes samples
batch-independent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _model_dir(tmp: Path) -> tuple[Path, str]:
    from rlbench_cli.testbed.model import TestbedConfig, config_hash, default_cache_dir

    cached = default_cache_dir() / "testbed" / config_hash(TestbedConfig())
    if (cached / "testbed.json").exists():
        return cached, f"testbed base model ({cached})"
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlbench_cli.testbed.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=96, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return tmp, "random tiny Llama (testbed base model not built)"


def _bare_generate(model: Any, tok: Any, prompts: list[str], batch_size: int, max_new_tokens: int) -> int:
    """Plain transformers sampling; returns the number of generated tokens (up to and including EOS)."""
    import torch

    n_tokens = 0
    for start in range(0, len(prompts), batch_size):
        enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            n_tokens += next((j + 1 for j, t in enumerate(row) if t == tok.eos_token_id), len(row))
    return n_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from rlbench_cli.evaluation.benchmarks import load_benchmark
    from rlbench_cli.evaluation.generate import HFBackend, sample_seed
    from rlbench_cli.prompts import render_prompt

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, what = _model_dir(Path(tmp))
        backend = HFBackend(model_dir, device="cpu", batch_size=args.batch_size)
    problems = load_benchmark("testbed_easy", limit=args.prompts).problems
    prompts = [render_prompt(p.problem, "plain") for p in problems]
    seeds = [sample_seed(0, "bench", i) for i in range(len(prompts))]
    backend.tokenizer.padding_side = "left"

    def ours() -> int:
        comps = backend.generate(prompts, seeds, temperature=1.0, top_p=1.0,
                                 max_new_tokens=args.max_new_tokens)
        return sum(c.n_tokens for c in comps)

    def bare() -> int:
        return _bare_generate(backend.model, backend.tokenizer, prompts, args.batch_size, args.max_new_tokens)

    rates: dict[str, list[float]] = {"hf backend (seeded)": [], "bare generate": []}
    for name, fn in (("hf backend (seeded)", ours), ("bare generate", bare)):
        torch.manual_seed(0)
        fn()  # warm-up
        for _ in range(args.reps):
            t0 = time.perf_counter()
            n = fn()
            rates[name].append(n / (time.perf_counter() - t0))
    print(f"model: {what}; {args.prompts} prompts, batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}, torch threads {torch.get_num_threads()}")
    med = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in rates.items():
        print(f"  {name:22s} {med[name]:9.1f} tokens/s  (runs: {', '.join(f'{x:.0f}' for x in r)})")
    print(f"  ratio hf backend / bare: {med['hf backend (seeded)'] / med['bare generate']:.2f}")


if __name__ == "__main__":
    main()
