"""Checks the grader's shortcut before `verify` (grader/numeric.py) against Math-Verify itself on many pairs: every
pair the shortcut decides (surely unequal) must be one that `verify` calls unequal.

Pairs: random pairs of the real benchmarks' golds (MATH500, Minerva Math, OlympiadBench; parsed as rlbench parses a
gold), and each gold against the answers Math-Verify extracts from the real completions in bench/data/. A pair that
`verify` takes longer than --timeout seconds on is counted as undetermined (its verdict is the pool's limit's).

Run:  python bench/check_shortcut.py [--data-dir ../shared/benchmarks] [--pairs 20000] [--timeout 5]
Prints the pairs tried, how many the shortcut decided, disagreements (must be 0) and the CPU time both took.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_grader import load_completions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/benchmarks"))
    ap.add_argument("--pairs", type=int, default=20000, help="random gold-gold pairs")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from math_verify import verify

    from rlbench_cli.evaluation.benchmarks import REAL_BENCHMARKS, load_benchmark
    from rlbench_cli.evaluation.grader.mathverify import mv_extract_completion, mv_parse
    from rlbench_cli.evaluation.grader.normalize import normalize_with_unit
    from rlbench_cli.evaluation.grader.numeric import surely_unequal

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    golds = sorted({p.gold for name in REAL_BENCHMARKS for p in load_benchmark(name, data_dir=args.data_dir).problems})
    parsed = {g: mv_parse(normalize_with_unit(g)[0]) for g in golds}
    parsed = {g: v for g, v in parsed.items() if v}
    keys = sorted(parsed)
    rng = random.Random(args.seed)
    pairs = [(rng.choice(keys), rng.choice(keys)) for _ in range(args.pairs)]
    answers: list[list] = []
    for path in sorted((HERE / "data").glob("*completions.jsonl")):
        for completion, _ in load_completions(path):
            raw = mv_extract_completion(completion)
            if raw and (p := mv_parse(normalize_with_unit(raw)[0])):
                answers.append(p)
    gold_answer_pairs = [(parsed[g], a) for g in rng.sample(keys, min(200, len(keys))) for a in answers]
    all_pairs = [(parsed[a], parsed[b]) for a, b in pairs] + gold_answer_pairs

    decided = disagree = undetermined = 0
    t_short = t_verify = 0.0
    for g, p in all_pairs:
        t0 = time.process_time()
        sure = surely_unequal(g, p)
        t_short += time.process_time() - t0
        if not sure:
            continue
        decided += 1
        t0 = time.process_time()
        try:
            ok = verify(g, p, timeout_seconds=args.timeout, raise_on_error=False)
        except Exception:  # noqa: BLE001 - Math-Verify's own timeout
            undetermined += 1
            continue
        finally:
            t_verify += time.process_time() - t0
        if ok:
            disagree += 1
            print(f"DISAGREES: gold {[str(x) for x in g]} answer {[str(x) for x in p]}")
    print(f"{len(all_pairs)} pairs ({len(pairs)} gold-gold, {len(gold_answer_pairs)} gold-answer from "
          f"{len(answers)} real answers); shortcut decided {decided}; verify agreed on "
          f"{decided - disagree - undetermined}, disagreed on {disagree}, undetermined (over {args.timeout:g} s) "
          f"{undetermined}; CPU: shortcut {t_short:.1f} s on all pairs, verify {t_verify:.1f} s on the decided ones")
    sys.exit(1 if disagree else 0)


if __name__ == "__main__":
    main()
