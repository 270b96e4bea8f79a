"""Dump the rlbench grader's verdict on every bench answer, to check that a speed-up changed no verdict.

Grades in this process (no pool, no time limit), so the verdicts are the grader's own, not the scheduler's:
run it once with the old source on PYTHONPATH, once with the new, and compare the two files. `--workers N`
grades through the pool instead (a generous 60 s limit), to check the pool hands every verdict back to its answer.

Run:  PYTHONPATH=<src> python bench/grader_verdicts.py OUT.json [--data-dir ../shared/benchmarks] [--workers 2]
      python bench/grader_verdicts.py --compare OLD.json NEW.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_grader import build_pairs, load_completions  # noqa: E402


def dump(out: Path, data_dir: Path, n: int, workers: int = 0) -> None:
    from rlbench_cli.evaluation.grader.pool import GradeItem, Grader, grade_answer

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    sets = {"gold-like": build_pairs(data_dir, n)}
    for path in sorted((HERE / "data").glob("*completions.jsonl")):
        sets[path.name] = load_completions(path)
    res: dict[str, list[list[object]]] = {}
    for name, pairs in sets.items():
        t0 = time.process_time()
        if workers:
            with Grader(workers=workers, timeout_s=60) as pool:
                verdicts = pool.grade_many([GradeItem(c, g) for c, g in pairs])
        else:
            verdicts = [grade_answer(c, g) for c, g in pairs]
        res[name] = [[v.correct, v.pred, v.error] for v in verdicts]
        print(f"{name}: {len(pairs)} answers, {time.process_time() - t0:.2f} CPU-s", file=sys.stderr)
    out.write_text(json.dumps(res), encoding="utf-8")


def compare(old: Path, new: Path) -> int:
    a, b = json.loads(old.read_text(encoding="utf-8")), json.loads(new.read_text(encoding="utf-8"))
    n_diff = 0
    for name in a:
        pairs = list(zip(a[name], b[name], strict=True))
        diffs = [i for i, (x, y) in enumerate(pairs) if x[0] != y[0]]
        other = sum(x != y for x, y in pairs) - len(diffs)  # same verdict, another pred or error text
        n_diff += len(diffs)
        print(f"{name}: {len(a[name])} answers, {len(diffs)} verdicts differ {diffs[:20]}; "
              f"{other} more differ in pred/error only")
    return n_diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?")
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("OLD", "NEW"))
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "benchmarks")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--workers", type=int, default=0, help="grade through a pool of this many workers")
    args = ap.parse_args()
    if args.compare:
        sys.exit(1 if compare(*args.compare) else 0)
    if args.out is None:
        ap.error("give OUT.json or --compare OLD NEW")
    dump(args.out, args.data_dir, args.n, args.workers)


if __name__ == "__main__":
    main()
