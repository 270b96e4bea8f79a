"""Grader throughput and agreement: rlbench's Grader (2 worker processes) vs calling Math-Verify directly.

Run:  . .venv/bin/activate && python bench/bench_grader.py [--n 600] [--data-dir ../shared/benchmarks]

Pairs are gold answers of the real benchmarks with model-like completions: the gold boxed (correct), the
gold with its last integer bumped (wrong), and the gold re-formatted ($...$, \\dfrac, thousands separators,
a trailing \\text{} unit). Prints answers/s for both and the rate at which they agree on `correct`.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path


def _variants(gold: str) -> list[str]:
    out = [f"So the answer is $\\boxed{{{gold}}}$."]
    nums = list(re.finditer(r"\d+", gold))
    if nums:
        m = nums[-1]
        out.append(f"Hence \\boxed{{{gold[:m.start()]}{int(m.group()) + 1}{gold[m.end():]}}}.")
    fancy = gold.replace("\\frac", "\\dfrac")
    if re.fullmatch(r"\d{4,}", gold):
        fancy = f"{int(gold):,}".replace(",", "{,}")
    out.append(f"The final answer is \\boxed{{{fancy} \\text{{ units}}}}")
    return out


def build_pairs(data_dir: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    from rlbench_cli.evaluation.benchmarks import REAL_BENCHMARKS, load_benchmark

    pairs = [(c, p.gold) for name in REAL_BENCHMARKS
             for p in load_benchmark(name, data_dir=data_dir).problems
             if not p.meta.get("is_multiple_answer") for c in _variants(p.gold)]
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def direct_math_verify(pairs: list[tuple[str, str]]) -> list[bool]:
    """The baseline: Math-Verify on the raw completion, gold wrapped in \\boxed{}, one process."""
    from math_verify import parse, verify

    return [bool(verify(parse(f"\\boxed{{{g}}}"), parse(c))) for c, g in pairs]


def main() -> None:
    from rlbench_cli.evaluation.grader import GRADER_VERSION, GradeItem, Grader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    default_data = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
    ap.add_argument("--data-dir", type=Path, default=default_data)
    args = ap.parse_args()
    pairs = build_pairs(args.data_dir, args.n)
    print(f"{len(pairs)} pairs; {GRADER_VERSION}")

    with Grader(workers=2, timeout_s=10) as g:
        g.grade_many([GradeItem("\\boxed{1}", "1")])  # start the workers outside the timing
        t0 = time.perf_counter()
        ours = g.grade_many([GradeItem(c, gold) for c, gold in pairs])
        t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = direct_math_verify(pairs)
    t_base = time.perf_counter() - t0

    agree = sum(a.correct == b for a, b in zip(ours, base, strict=True))
    print(f"Grader(workers=2):        {len(pairs) / t_ours:7.1f} answers/s  ({t_ours:.1f} s, "
          f"{sum(v.correct for v in ours)} correct, {sum(v.timed_out for v in ours)} timeouts)")
    print(f"math_verify direct (1p):  {len(pairs) / t_base:7.1f} answers/s  ({t_base:.1f} s, "
          f"{sum(base)} correct)")
    print(f"agreement: {agree / len(pairs):.3f} ({len(pairs) - agree} differ)")
    diffs = [(c[-60:], gold, v.correct, b) for (c, gold), v, b in zip(pairs, ours, base, strict=True)
             if v.correct != b]
    for d in diffs[:12]:
        print("  differs:", d)


if __name__ == "__main__":
    main()
