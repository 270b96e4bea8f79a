"""Warming the grader up once, in the process that forks the pool's workers, so no worker starts cold.

Math-Verify parses LaTeX with an ANTLR parser whose prediction cache (DFA) fills as inputs are seen: in a fresh
process the first few dozen answers parse several times slower than later ones (measured with
bench/bench_grader.py: ~1 CPU-second over the first 24 real completions, ~0.2 s once warm). Every pool worker,
and every replacement of a worker killed at the per-answer limit, would pay that again. Instead the forkserver
imports this module (`pool._context`), which grades a small fixed set of typical answers; workers forked from it
inherit the filled cache (copy-on-write). The answers below cover the grammar's common paths: numbers,
fractions, roots, powers, tuples, intervals, sets, matrices, relations, text, degrees and percentages.

Run (prints the CPU time it takes):  python -m rlbench_cli.evaluation.grader.warmup
"""

from __future__ import annotations

import time

WARMUP_ANSWERS = (
    "42", "-7", "3.14", "\\frac{1}{2}", "\\dfrac{3}{4}", "-\\frac{5}{12}", "\\sqrt{2}", "3\\sqrt{13}",
    "\\frac{\\sqrt{3}}{2}", "2\\pi", "\\frac{\\pi}{6}", "e^{2}", "x^2+1", "2x-3", "(x-1)(x+2)", "a+b",
    "\\left( 3, \\frac{\\pi}{2} \\right)", "(1,2)", "[0, 1)", "(-\\infty, 2] \\cup [3, \\infty)", "\\{1, 2, 3\\}",
    "\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "x=5", "y = 2x + 1", "x \\le 3", "1 < x < 2", "90^\\circ",
    "30\\%", "\\$18.90", "10 \\text{ cm}^2", "\\text{(C)}", "\\sin x", "\\log_2 8", "5!", "\\binom{5}{2}",
    "3+4i", "\\sum_{k=1}^{n} k", "a_{1}", "1,000", "4.5\\times10^{33}", "\\infty", "\\tan^{-1}(1)",
)


def warm_up() -> float:
    """Grade each warm-up answer against itself and a wrong one with both graders; returns CPU seconds spent."""
    import logging

    from rlbench_cli.evaluation.grader.pool import grade_answer

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    t0 = time.process_time()
    for ans in WARMUP_ANSWERS:
        for completion in (f"So the answer is $\\boxed{{{ans}}}$.", f"Thus the result is ${ans} + 1$."):
            for grader in ("rlbench", "math_verify"):
                grade_answer(completion, ans, grader=grader)
    return time.process_time() - t0


# Imported by the forkserver (`pool._context` preloads this module): warm it before it forks workers. Then freeze
# what it holds out of the garbage collector's reach: a worker's collections would otherwise walk (and write to)
# every inherited object, copying the forkserver's pages into each worker.
if __name__ != "__main__":
    warm_up()
    import gc

    gc.freeze()

if __name__ == "__main__":
    print(f"grader warm-up: {warm_up():.2f} CPU-seconds for {len(WARMUP_ANSWERS)} answers")
