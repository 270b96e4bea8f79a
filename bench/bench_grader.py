"""Grader throughput and latency: rlbench's Grader (2 worker processes) vs plain Math-Verify in one process,
called exactly as the reference paper's code does (Minimal-RL verl/utils/reward_score/math_verify.py: math_metric
with gold LatexExtractionConfig, pred (ExprExtractionConfig, LatexExtractionConfig), gold wrapped in \\boxed{}).

Run:  python bench/bench_grader.py [--n 600] [--data-dir ../shared/benchmarks]
          [--completions bench/data/smollm2_math500_completions.jsonl]

Two input sets, each graded by both, in one run:
- gold-like pairs from the real benchmarks: the gold boxed (correct), the gold with its last integer bumped
  (wrong), the gold re-formatted ($...$, \\dfrac, thousands separators, a trailing \\text{} unit);
- real completions of a real model (SmolLM2-135M-Instruct on MATH500, made by bench/make_grader_completions.py),
  where most answers are wrong and need the full comparison.
Prints answers/s for both and their ratio, p50/p99/max latency per answer (one answer at a time; rlbench's through
its pool, so the limit applies), the
pool's timeouts (answers over the per-answer limit), and how often the two graders agree.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


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


def load_completions(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [(r["completion"], r["gold"]) for r in rows]


def paper_math_verify_score(completion: str, gold: str) -> float:
    """Minimal-RL's compute_score, verbatim in behaviour (signal timeouts on: this runs on the main thread)."""
    from math_verify.metric import math_metric
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    verify_func = math_metric(gold_extraction_target=(LatexExtractionConfig(),),
                              pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()))
    try:
        score, _ = verify_func(["\\boxed{" + gold + "}"], [completion])
    except Exception:  # noqa: BLE001 - the paper's wrapper scores any failure 0
        score = 0.0
    return score


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1] if len(xs) >= 2 else (xs[0] if xs else 0.0)


def bench_set(name: str, pairs: list[tuple[str, str]], timeout_s: float) -> None:
    import logging

    from rlbench_cli.evaluation.grader import GRADER_VERSION, GradeItem, Grader

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    items = [GradeItem(c, g) for c, g in pairs]
    with Grader(workers=2, timeout_s=timeout_s) as pool:
        pool.grade_many([GradeItem("\\boxed{1}", "1")])  # start the workers outside the timing
        t0 = time.perf_counter()
        ours = pool.grade_many(items)
        t_ours = time.perf_counter() - t0
        lat_ours = []
        for it in items:  # latency per answer: one answer at a time through the pool (limit enforced)
            t0 = time.perf_counter()
            pool.grade_many([it])
            lat_ours.append(time.perf_counter() - t0)
    lat_base, base = [], []
    t_all = time.perf_counter()
    for c, g in pairs:
        t0 = time.perf_counter()
        base.append(bool(paper_math_verify_score(c, g)))
        lat_base.append(time.perf_counter() - t0)
    t_base = time.perf_counter() - t_all
    agree = sum(a.correct == b for a, b in zip(ours, base, strict=True))
    print(f"\n== {name}: {len(pairs)} answers; {GRADER_VERSION}")
    print(f"rlbench Grader(workers=2):      {len(pairs) / t_ours:7.1f} answers/s  ({t_ours:.1f} s, "
          f"{sum(v.correct for v in ours)} correct, {sum(v.timed_out for v in ours)} over the {timeout_s:g} s limit)")
    print(f"plain Math-Verify, 1 process:   {len(pairs) / t_base:7.1f} answers/s  ({t_base:.1f} s, "
          f"{sum(base)} correct)")
    print(f"throughput ratio: {t_base / t_ours:.2f}x")
    for label, lat in (("rlbench (pool, 1 by 1)", lat_ours), ("plain Math-Verify", lat_base)):
        print(f"latency per answer, {label:21s} p50 {1000 * _pct(lat, 50):7.1f} ms  p99 {1000 * _pct(lat, 99):7.1f} ms"
              f"  max {1000 * max(lat):7.1f} ms")
    print(f"agreement on `correct`: {agree / len(pairs):.3f} ({len(pairs) - agree} differ)")
    for (_, g), v, b in zip(pairs, ours, base, strict=True):
        if v.correct != b:
            print(f"  differs: gold={g!r} rlbench={v.correct} ({v.pred!r:.40}) math_verify={b}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "benchmarks")
    ap.add_argument("--completions", type=Path, default=HERE / "data" / "smollm2_math500_completions.jsonl")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-answer limit of the pool (s)")
    args = ap.parse_args()
    bench_set("gold-like pairs from the real benchmarks", build_pairs(args.data_dir, args.n), args.timeout)
    comps = load_completions(args.completions)
    if comps:
        bench_set(f"real completions ({args.completions.name})", comps, args.timeout)
    else:
        print(f"\n(no {args.completions}: run bench/make_grader_completions.py to add real completions)")


if __name__ == "__main__":
    main()
