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
Prints answers/s for both and their wall-clock ratio; CPU seconds of both (rlbench: parent + workers) and the
throughput ratio they imply on 2 idle cores (on a shared, loaded machine wall clock mostly measures the
scheduler); p50/p99/max latency per answer (one answer at a time; rlbench's through a fresh pool, so the limit
applies); the pool's timeouts (answers over the per-answer limit); and how often the two graders agree.
Both graders start warm: rlbench's workers fork from a forkserver that graded `grader/warmup.py`'s answers;
plain Math-Verify runs in a fresh spawned process per set that graded the same answers first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

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


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc); 0 where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _baseline(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Plain Math-Verify in this (fresh) process: the same warm-up answers as rlbench's workers get, then each
    answer timed. Runs in its own spawned process per set, so no set warms the next."""
    import logging

    from rlbench_cli.evaluation.grader import sll
    from rlbench_cli.evaluation.grader.warmup import WARMUP_ANSWERS

    # Importing warmup graded with rlbench's grader, which makes latex2sympy parse SLL-first (grader/sll.py):
    # plain Math-Verify parses as it ships.
    sll.uninstall()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    t0 = time.process_time()
    for ans in WARMUP_ANSWERS:
        for completion in (f"So the answer is $\\boxed{{{ans}}}$.", f"Thus the result is ${ans} + 1$."):
            paper_math_verify_score(completion, ans)
    warm_cpu = time.process_time() - t0
    lat, verdicts = [], []
    cpu0, t_all = time.process_time(), time.perf_counter()
    for c, g in pairs:
        t0 = time.perf_counter()
        verdicts.append(bool(paper_math_verify_score(c, g)))
        lat.append(time.perf_counter() - t0)
    return {"wall": time.perf_counter() - t_all, "cpu": time.process_time() - cpu0, "lat": lat,
            "verdicts": verdicts, "warm_cpu": warm_cpu}


def _run_baseline(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as p:
        return p.apply(_baseline, (pairs,))


def bench_set(name: str, pairs: list[tuple[str, str]], timeout_s: float) -> None:
    import logging

    from rlbench_cli.evaluation.grader import GRADER_VERSION, GradeItem, Grader

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    items = [GradeItem(c, g) for c, g in pairs]
    with Grader(workers=2, timeout_s=timeout_s) as pool:
        t0 = time.perf_counter()
        pool.grade_many([GradeItem("\\boxed{1}", "1")])  # start (and warm) the workers outside the timing
        t_start = time.perf_counter() - t0
        pids = pool.worker_pids()
        cpu_w0 = [_cpu_s(pid) for pid in pids]
        cpu_p0, t0 = time.process_time(), time.perf_counter()
        ours = pool.grade_many(items)
        t_ours = time.perf_counter() - t0
        cpu_parent = time.process_time() - cpu_p0
        cpu_workers = [_cpu_s(pid) - c for pid, c in zip(pids, cpu_w0, strict=True)]
        restarts = pool.stats["restarts"]
    lat_ours = []
    with Grader(workers=2, timeout_s=timeout_s) as pool:  # a fresh pool: no verdicts of the batch above cached
        pool.grade_many([GradeItem("\\boxed{1}", "1")])
        for it in items:  # latency per answer: one answer at a time through the pool (limit enforced)
            t0 = time.perf_counter()
            pool.grade_many([it])
            lat_ours.append(time.perf_counter() - t0)
    b = _run_baseline(pairs)
    base, t_base, lat_base = b["verdicts"], b["wall"], b["lat"]
    n = len(pairs)
    agree = sum(a.correct == x for a, x in zip(ours, base, strict=True))
    cpu_ours = cpu_parent + sum(cpu_workers)
    # On 2 idle cores the pool's wall time is at least its busiest worker's CPU time and half the total.
    est_ours = max(max(cpu_workers), cpu_ours / 2)
    print(f"\n== {name}: {n} answers; {GRADER_VERSION}")
    print(f"rlbench Grader(workers=2):      {n / t_ours:7.1f} answers/s  ({t_ours:.2f} s, "
          f"{sum(v.correct for v in ours)} correct, {sum(v.timed_out for v in ours)} over the {timeout_s:g} s limit, "
          f"{restarts} worker restarts; pool start {t_start:.2f} s)")
    print(f"plain Math-Verify, 1 process:   {n / t_base:7.1f} answers/s  ({t_base:.2f} s, {sum(base)} correct)")
    print(f"throughput ratio (wall clock): {t_base / t_ours:.2f}x")
    print(f"CPU seconds: rlbench {cpu_ours:.2f} (parent {cpu_parent:.2f}, workers "
          f"{', '.join(f'{c:.2f}' for c in cpu_workers)}) vs plain Math-Verify {b['cpu']:.2f} "
          f"(warm-up before timing: {b['warm_cpu']:.2f} s, same answers as rlbench's forkserver)")
    print(f"CPU per answer ratio: {b['cpu'] / max(cpu_ours, 1e-9):.2f}x; "
          f"throughput ratio on 2 idle cores, estimated from CPU time: {b['cpu'] / max(est_ours, 1e-9):.2f}x")
    for label, lat in (("rlbench (pool, 1 by 1)", lat_ours), ("plain Math-Verify", lat_base)):
        print(f"latency per answer, {label:21s} p50 {1000 * _pct(lat, 50):7.1f} ms  p99 {1000 * _pct(lat, 99):7.1f} ms"
              f"  max {1000 * max(lat):7.1f} ms")
    print(f"agreement on `correct`: {agree / n:.3f} ({n - agree} differ)")
    for (_, g), v, x in zip(pairs, ours, base, strict=True):
        if v.correct != x:
            print(f"  differs: gold={g!r} rlbench={v.correct} ({v.pred!r:.40}) math_verify={x}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "benchmarks")
    ap.add_argument("--completions", type=Path, action="append",
                    help="JSONL of real completions (repeatable; default: every bench/data/*completions.jsonl)")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-answer limit of the pool (s)")
    args = ap.parse_args()
    bench_set("gold-like pairs from the real benchmarks", build_pairs(args.data_dir, args.n), args.timeout)
    files = args.completions or sorted((HERE / "data").glob("*completions.jsonl"))
    for path in files:
        bench_set(f"real completions ({path.name})", load_completions(path), args.timeout)
    if not files:
        print("\n(no real completions: run bench/make_grader_completions.py to add them)")


if __name__ == "__main__":
    main()
