"""The Python part of bench/gpu_check.sh: GRPO s/step and peak GPU memory (bf16, rlbench vs bare TRL) on the tiny
testbed model and on SmolLM2-135M, eval tokens/s (hf backend vs bare generate), and whether two same-seed runs
give identical metrics on the GPU. Prints one table.

Run (after gpu_check.sh installed the bundle): python bench/gpu_check.py --bundle DIR [--quick]
Needs CUDA: without it, it says so in one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _need_cuda() -> None:
    try:
        import torch
    except ImportError:
        sys.exit("error: torch is not installed; gpu_check needs the GPU machine's torch with CUDA")
    if not torch.cuda.is_available():
        print("error: no CUDA device visible (torch.cuda.is_available() is False); gpu_check runs on a GPU "
              "machine, e.g. `bash bench/gpu_check.sh run DIR` there", file=sys.stderr)
        sys.exit(2)


def smol_model(bundle: Path, work: Path) -> tuple[str, str]:
    """Real SmolLM2 weights if the bundle or the cache has them, else its architecture with random weights."""
    for candidate in (bundle / "smollm2-135m", bundle / "smollm2-135m-real"):
        if (candidate / "model.safetensors").is_file():
            return str(candidate), "SmolLM2-135M (real weights)"
    try:
        from rlbench_cli.models import build_real_model

        return str(build_real_model("smollm2-135m")), "SmolLM2-135M (real weights)"
    except Exception:  # noqa: BLE001 - the package is absent on the GPU machine: fall back below
        pass
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    arch = bundle / "smollm2-arch"  # config + tokenizer of the converted model (weights exceed the bundle)
    out = work / "smollm2-random"
    if not out.is_dir():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(arch), dtype=torch.bfloat16)
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(arch).save_pretrained(out)
        (out / "rlbench.json").write_text((arch / "rlbench.json").read_text())
    return str(out), "SmolLM2-135M architecture, random weights (real weights exceed the 64 MiB bundle)"


def arithmetic_data(path: Path, n: int = 256) -> Path:
    import random

    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(n):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            f.write(json.dumps({"problem": f"What is ${a}+{b}$?", "answer": str(a + b)}) + "\n")
    return path


def run_json(cmd: list[str], timeout: int) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {out.stderr.strip()[-800:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def same_seed_identical(model: str, recipe: str, sets: list[str], work: Path, steps: int) -> str:
    """Train twice with the same seed; compare metrics.jsonl without timing fields."""
    from rlbench_cli.records import read_jsonl

    runs = []
    for i in range(2):
        cmd = [sys.executable, "-m", "rlbench_cli.cli", "train", recipe, f"model.path={model}", *sets,
               f"optim.max_steps={steps}", f"output.run_name=same-seed-{i}", "--output", str(work / "same"),
               "--overwrite"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
        if out.returncode:
            return f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
        runs.append(read_jsonl(work / "same" / f"same-seed-{i}" / "metrics.jsonl"))
    volatile = {"wall_time", "tokens_per_s"}
    a, b = ([{k: v for k, v in r.items() if k not in volatile} for r in run] for run in runs)
    if a == b:
        return f"yes ({len(a)} steps)"
    diffs = [abs(x[k] - y[k]) for x, y in zip(a, b, strict=False) for k in x
             if isinstance(x.get(k), float) and isinstance(y.get(k), float)]
    return f"no (max |diff| {max(diffs, default=float('nan')):.2e})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "bench" / "gpu_bundle")
    ap.add_argument("--quick", action="store_true", help="fewer steps (a first look in about 3 minutes)")
    args = ap.parse_args()
    _need_cuda()
    import torch

    t_start = time.perf_counter()
    steps = 6 if args.quick else 10
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        testbed = args.bundle / "testbed"
        tiny = str(testbed) if (testbed / "config.json").is_file() else "testbed"
        smol, smol_label = smol_model(args.bundle, work)
        data = arithmetic_data(work / "arith.jsonl")
        bf16 = ["model.dtype=bfloat16"]
        smol_sets = [*bf16, f"data.path={data}", "data.max_prompts=256", "rollout.prompts_per_batch=8",
                     "rollout.n=8", "rollout.max_new_tokens=256", "optim.mini_batch_prompts=4",
                     "optim.micro_batch_size=16", "reward.grader_workers=4", "output.checkpoint_every=0"]
        benches = [
            ("tiny testbed", tiny, str(REPO / "recipes/tiny/grpo.yaml"), bf16),
            (smol_label, smol, str(REPO / "recipes/smol/grpo.yaml"), smol_sets),
        ]
        for label, model, recipe, sets in benches:
            cmd = [sys.executable, str(REPO / "bench/bench_rl_overhead.py"), "--json", "--model", model,
                   "--recipe", recipe, "--steps", str(steps), "--warmup", "2", "--repeats", "1",
                   *[x for kv in sets for x in ("--set", kv)]]
            try:
                r = run_json(cmd, timeout=600)
                rows.append((f"GRPO s/step, {label}", f"{r['rlbench_s_per_step']:.3f}", f"{r['trl_s_per_step']:.3f}",
                             f"{r['ratio']:.3f}"))
                mem = r["peak_cuda_gib"]
                rows.append((f"peak GPU memory GiB, {label}", f"{mem['rlbench']:.2f}", f"{mem['trl']:.2f}",
                             f"{mem['rlbench'] / mem['trl']:.3f}" if mem["trl"] else "-"))
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                rows.append((f"GRPO, {label}", "error", str(e)[:60], "-"))
        try:
            g = run_json([sys.executable, str(REPO / "bench/bench_generation.py"), "--json", "--model", smol,
                          "--device", "cuda", "--prompts", "64", "--batch-size", "64", "--max-new-tokens", "256",
                          "--reps", "2"], timeout=300)
            tps = g["tokens_per_s"]
            rows.append((f"eval tokens/s, {smol_label}", f"{tps['hf backend (seeded)']:.0f}",
                         f"{tps['bare generate']:.0f} (bare generate)", f"{g['ratio']:.3f}"))
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            rows.append(("eval tokens/s", "error", str(e)[:60], "-"))
        rows.append(("same-seed runs identical, tiny testbed",
                     same_seed_identical(tiny, str(REPO / "recipes/tiny/grpo.yaml"), bf16, work, 4), "-", "-"))
        rows.append((f"same-seed runs identical, {smol_label}",
                     same_seed_identical(smol, str(REPO / "recipes/smol/grpo.yaml"), smol_sets, work, 4), "-", "-"))

    import transformers
    import trl

    print(f"\nrlbench GPU check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, trl {trl.__version__}, bf16, {time.perf_counter() - t_start:.0f} s")
    widths = [max(len(r[i]) for r in [("item", "rlbench", "bare", "ratio"), *rows]) for i in range(4)]
    for r in [("item", "rlbench", "bare", "ratio"), tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
