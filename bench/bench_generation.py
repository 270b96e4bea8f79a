"""Throughput of the HF eval backend (seeded counter-based sampling) vs a bare `model.generate(do_sample=True)`.

Run:  . .venv/bin/activate && python bench/bench_generation.py [--model testbed|smollm2-135m|PATH] [--prompts 32]
      [--max-new-tokens 64] [--reps 3] [--legacy]

`testbed` uses the cached testbed base model if built, else a random tiny Llama with the char tokenizer (plain
prompts from testbed_easy). `smollm2-135m` (49,152-token vocabulary) uses the paper's prompt on MATH500 problems
(../shared/benchmarks, else the test fixtures). Both sides get the same model, prompts, batch size, temperature 1.0
and top_p 1.0; tokens/s counts generated tokens up to and including EOS. Prints both figures and their ratio
(median of --reps timed runs, the two sides alternating, after one warm-up each), and the peak RSS. `--legacy` adds
the sampler rlbench used before (a per-row generator reseeded every step and a vocabulary-sized Gumbel draw), to
show what the counter-based sampler saves.
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
    from rlbench_cli.testbed.model import config_hash, default_cache_dir, default_config

    cached = default_cache_dir() / "testbed" / config_hash(default_config())  # the default version (v2)
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


def _legacy_processor(seeds: list[int], prompt_len: int, temperature: float):
    """The pre-counter-based sampler: per row, reseed a generator and draw vocabulary-sized Gumbel noise."""
    import torch
    from transformers import LogitsProcessor

    from rlbench_cli.evaluation.generate import sample_seed

    class Legacy(LogitsProcessor):
        gen = torch.Generator()

        def __call__(self, input_ids, scores):  # noqa: ANN001, ANN204
            step = input_ids.shape[1] - prompt_len
            scaled = scores.float() / temperature
            noise = torch.empty_like(scaled)
            for row, seed in enumerate(seeds):
                self.gen.manual_seed(sample_seed(seed, "gumbel", step))
                u = torch.rand(scaled.shape[-1], generator=self.gen, dtype=torch.float64)
                noise[row] = (-torch.log(-torch.log(u.clamp_(min=torch.finfo(torch.float64).tiny)))).float()
            return scaled + noise

    return Legacy()


def _patched_legacy(generate_module: Any):
    """Context manager: the HF backend with the legacy processor swapped in."""
    from contextlib import contextmanager

    @contextmanager
    def swap():
        original = generate_module._make_processor
        generate_module._make_processor = lambda seeds, prompt_len, t, top_p: _legacy_processor(seeds, prompt_len, t)
        try:
            yield
        finally:
            generate_module._make_processor = original

    return swap()


def _bare_generate(model: Any, tok: Any, prompts: list[str], batch_size: int, max_new_tokens: int) -> int:
    """Plain transformers sampling; returns the number of generated tokens (up to and including EOS)."""
    import torch

    n_tokens = 0
    for start in range(0, len(prompts), batch_size):
        enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            n_tokens += next((j + 1 for j, t in enumerate(row) if t == tok.eos_token_id), len(row))
    return n_tokens


def _prompts(model: str, n: int, tokenizer: Any) -> list[str]:
    from rlbench_cli.evaluation.benchmarks import load_benchmark
    from rlbench_cli.prompts import render_prompt

    if model == "testbed":
        return [render_prompt(p.problem, "plain") for p in load_benchmark("testbed_easy", limit=n).problems]
    repo = Path(__file__).resolve().parents[1]
    shared = repo.parent / "shared" / "benchmarks"
    data_dir = shared if (shared / "math500.jsonl").exists() else repo / "tests" / "fixtures" / "bench"
    problems = load_benchmark("math500", data_dir=data_dir, limit=n).problems
    return [render_prompt(p.problem, "paper", tokenizer) for p in problems]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="testbed", help="testbed, smollm2-135m or a model folder")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--legacy", action="store_true", help="also time the old per-row Gumbel sampler")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--json", action="store_true", help="print one JSON summary line (for gpu_check.sh)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import resource

    import torch

    from rlbench_cli.evaluation import generate as generate_module
    from rlbench_cli.evaluation.generate import HFBackend, sample_seed

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "testbed":
            model_dir, what = _model_dir(Path(tmp))
        elif Path(args.model).is_dir():
            model_dir, what = Path(args.model), str(args.model)
        else:
            from rlbench_cli.models import build_real_model

            model_dir, what = build_real_model(args.model), args.model
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        backend = HFBackend(model_dir, device=device, batch_size=args.batch_size)
    prompts = _prompts(args.model, args.prompts, backend.tokenizer)
    seeds = [sample_seed(0, "bench", i) for i in range(len(prompts))]
    backend.tokenizer.padding_side = "left"

    def ours() -> int:
        comps = backend.generate(prompts, seeds, temperature=1.0, top_p=1.0,
                                 max_new_tokens=args.max_new_tokens)
        return sum(c.n_tokens for c in comps)

    def legacy() -> int:
        with _patched_legacy(generate_module):
            return ours()

    def bare() -> int:
        return _bare_generate(backend.model, backend.tokenizer, prompts, args.batch_size, args.max_new_tokens)

    sides = {"hf backend (seeded)": ours, "bare generate": bare}
    if args.legacy:
        sides["legacy per-row Gumbel"] = legacy
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for fn in sides.values():
        torch.manual_seed(0)
        fn()  # warm-up
    for _ in range(args.reps):  # alternate, so load drift on a shared machine hits every side alike
        for name, fn in sides.items():
            t0 = time.perf_counter()
            n = fn()
            rates[name].append(n / (time.perf_counter() - t0))
    med = {name: statistics.median(r) for name, r in rates.items()}
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if args.json:
        import json

        print(json.dumps({"model": what, "device": device, "tokens_per_s": med, "peak_rss_gib": peak_rss,
                          "ratio": med["hf backend (seeded)"] / med["bare generate"]}))
        return
    print(f"model: {what} on {device}; {len(prompts)} prompts, batch {args.batch_size}, "
          f"vocab {len(backend.tokenizer)}, "
          f"max_new_tokens {args.max_new_tokens}, torch threads {torch.get_num_threads()}")
    for name, r in rates.items():
        print(f"  {name:22s} {med[name]:9.1f} tokens/s  (runs: {', '.join(f'{x:.0f}' for x in r)})")
    print(f"  ratio hf backend / bare: {med['hf backend (seeded)'] / med['bare generate']:.3f}  (target >= 0.95)")
    if args.legacy:
        print(f"  ratio legacy / bare:     {med['legacy per-row Gumbel'] / med['bare generate']:.3f}")
    print(f"  peak RSS {peak_rss:.2f} GiB")


if __name__ == "__main__":
    main()
