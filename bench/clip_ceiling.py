"""How much of a rollout the PPO clip could act on: the share of sampled tokens whose probability is below
1/(1+eps) (default eps 0.2, so p < 0.833), in correct samples (what RAFT/RAFT++ train on) and in all samples.

A positive-advantage token is clipped only when its ratio exceeds 1+eps, which a token sampled with p >= 1/(1+eps)
cannot do; so this share bounds RAFT++'s clip fraction at the start of a run. If it is well above the measured
clip fraction, the policy's step per update is what is small, not the room to clip (issue 11, "the clip engages").

Run:  python bench/clip_ceiling.py [MODEL ...] [--prompts 64] [--n 8] [--split train] [--seed 0] [--eps 0.2]
      MODEL: `testbed` (default version, built on first use), `testbed:v1`, a model folder or a run folder.
Samples as the tiny recipes do (temperature 1.0, top_p 1.0, 80 new tokens, the plain prompt template) from the
first PROMPTS problems of the testbed split, and grades with the testbed's boxed-integer check.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def measure(model_dir: str, prompts: int, n: int, split: str, seed: int, eps: float) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlbench_cli.prompts import render_prompt
    from rlbench_cli.testbed.model import extract_boxed_int
    from rlbench_cli.testbed.versions import generate_split

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    rows = generate_split(split, prompts)
    limit = 1 / (1 + eps)
    counts = {"correct_tokens": 0, "correct_eligible": 0, "all_tokens": 0, "all_eligible": 0, "correct": 0}
    for start in range(0, len(rows), 16):
        batch = rows[start : start + 16]
        enc = tok([render_prompt(r["problem"], "plain") for r in batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=80,
                                 num_return_sequences=n, output_scores=True, return_dict_in_generate=True,
                                 pad_token_id=tok.pad_token_id)
        seqs = out.sequences[:, enc["input_ids"].shape[1]:]
        probs = torch.stack([torch.softmax(s, -1) for s in out.scores], 1).gather(-1, seqs.unsqueeze(-1))[..., 0]
        for j, ids in enumerate(seqs.tolist()):
            length = ids.index(tok.eos_token_id) + 1 if tok.eos_token_id in ids else len(ids)
            eligible = int((probs[j, :length] < limit).sum())
            counts["all_tokens"] += length
            counts["all_eligible"] += eligible
            if extract_boxed_int(tok.decode(ids[:length], skip_special_tokens=True)) == batch[j // n]["answer"]:
                counts["correct"] += 1
                counts["correct_tokens"] += length
                counts["correct_eligible"] += eligible
    return {
        "samples": len(rows) * n,
        "accuracy": counts["correct"] / (len(rows) * n),
        "eligible_in_correct": counts["correct_eligible"] / max(counts["correct_tokens"], 1),
        "eligible_in_all": counts["all_eligible"] / max(counts["all_tokens"], 1),
    }


def main() -> None:
    from kl_to_base import resolve_model_dir  # bench/ is on sys.path when this file runs as a script

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=["testbed"])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--split", default="train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eps", type=float, default=0.2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    for name in args.models:
        r = measure(resolve_model_dir(name), args.prompts, args.n, args.split, args.seed, args.eps)
        print(f"{Path(name).name}: {r['samples']} samples, accuracy {100 * r['accuracy']:.1f}%; tokens with "
              f"p < {1 / (1 + args.eps):.3f}: {100 * r['eligible_in_correct']:.2f}% of correct samples' tokens, "
              f"{100 * r['eligible_in_all']:.2f}% of all")


if __name__ == "__main__":
    main()
