"""The testbed's synthetic, verifiable math task: chains of additions and subtractions of small integers.

A problem reads "Compute 37+8-5." (a 2-digit start, then 1-digit operands) and its worked solution evaluates
left to right, one step per sentence: " 37+8=45. 45-5=40. \\boxed{40}". Difficulty grows with the number of
steps (easy 2, medium 3, hard 4), so a tiny char-level model that gets each step right most of the time scores
lower on longer chains. (2-digit second operands were too slow to learn for a CPU warm-start of minutes.)

Splits are generated deterministically from string seeds. They are disjoint by construction: every problem
text is assigned to exactly one pool (evaluation / RL train / SFT) by a hash of its text, and the three
evaluation splits have different shapes (operand counts), so no text can appear in two splits whatever `n` is.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rlbench_cli.errors import UserError

TASK_VERSION = "arith-chain-v2"


@dataclass(frozen=True)
class Shape:
    """How one difficulty level draws a problem."""

    n_operands: int
    first: tuple[int, int] = (10, 99)  # range of the first operand
    rest: tuple[int, int] = (1, 9)  # range of every later operand


SHAPES: dict[str, Shape] = {
    "easy": Shape(n_operands=3),
    "medium": Shape(n_operands=4),
    "hard": Shape(n_operands=5),
}

# split -> (pool, default size, difficulty mix as (difficulty, weight) pairs)
SPLITS: dict[str, tuple[str, int, tuple[tuple[str, float], ...]]] = {
    "sft": ("sft", 20000, (("easy", 1.0), ("medium", 1.0), ("hard", 1.0))),
    "train": ("train", 4000, (("easy", 1.0), ("medium", 1.0), ("hard", 1.0))),
    "easy": ("eval", 300, (("easy", 1.0),)),
    "medium": ("eval", 300, (("medium", 1.0),)),
    "hard": ("eval", 300, (("hard", 1.0),)),
}

EVAL_SPLITS = ("easy", "medium", "hard")

# Hash buckets (out of 20) per pool: eval gets 2/20 of the problem space, train 6/20, sft the rest.
_POOL_BUCKETS = {"eval": range(0, 2), "train": range(2, 8), "sft": range(8, 20)}


def pool_of(problem: str) -> str:
    """The pool a problem text belongs to; this is what keeps the splits disjoint."""
    bucket = int.from_bytes(hashlib.sha256(problem.encode("utf-8")).digest()[:8], "big") % 20
    return next(pool for pool, rng in _POOL_BUCKETS.items() if bucket in rng)


def solve(operands: list[int], ops: list[str]) -> tuple[str, int]:
    """Worked solution (left-to-right evaluation) and the final value."""
    value = operands[0]
    steps = []
    for op, x in zip(ops, operands[1:], strict=True):
        new = value + x if op == "+" else value - x
        steps.append(f"{value}{op}{x}={new}.")
        value = new
    return " ".join(steps) + f" \\boxed{{{value}}}", value


def format_problem(operands: list[int], ops: list[str]) -> str:
    expr = str(operands[0]) + "".join(f"{op}{x}" for op, x in zip(ops, operands[1:], strict=True))
    return f"Compute {expr}."


def draw_operands(rng: random.Random, shape: Shape) -> tuple[list[int], list[str]]:
    """Draw operands and operators whose running value never goes negative (rejection sampling)."""
    while True:
        operands = [rng.randint(*shape.first)] + [rng.randint(*shape.rest) for _ in range(shape.n_operands - 1)]
        ops = [rng.choice("+-") for _ in range(shape.n_operands - 1)]
        value, ok = operands[0], True
        for op, x in zip(ops, operands[1:], strict=True):
            value = value + x if op == "+" else value - x
            ok = ok and value >= 0
        if ok:
            return operands, ops


def draw_problems(
    split: str, n: int | None, *, splits: dict[str, tuple[str, int, tuple[tuple[str, float], ...]]],
    shapes: dict[str, Shape], seed: str, pool_of: Callable[[str], str], where: str,
    extra: Callable[[random.Random], Any] | None = None,
) -> Iterator[tuple[str, str, list[int], list[str], str, Any]]:
    """The first `n` distinct problems of `split` that fall in its pool: (row id, difficulty, operands, ops, problem
    text, extra). `extra(rng)` draws a per-row value right after the operands (from the same stream, so it is part
    of what a version's data is). Every testbed version builds its rows from this one loop."""
    if split not in splits:
        raise UserError(f"unknown testbed split {split!r}", where=where, fix=f"use one of {', '.join(splits)}")
    pool, default_n, mix = splits[split]
    n = default_n if n is None else n
    if n < 0:
        raise UserError(f"number of problems must be >= 0, got {n}", where=f"testbed split {split}")
    rng = random.Random(seed)
    names = [d for d, _ in mix]
    weights = [w for _, w in mix]
    seen: set[str] = set()
    width = max(4, len(str(max(n - 1, 0))))  # ids of one split sort as text: easy-0007
    while len(seen) < n:
        difficulty = rng.choices(names, weights)[0]
        operands, ops = draw_operands(rng, shapes[difficulty])
        value = extra(rng) if extra is not None else None
        problem = format_problem(operands, ops)
        if problem in seen or pool_of(problem) != pool:
            continue
        seen.add(problem)
        yield f"{split}-{len(seen) - 1:0{width}d}", difficulty, operands, ops, problem, value


def generate_split(split: str, n: int | None = None) -> list[dict]:
    """The first `n` problems of a split (default: the split's standard size), always the same ones.

    Rows: {"id": "easy-0007", "problem", "answer" (integer as a string), "solution", "difficulty"}.
    """
    rows = []
    for row_id, difficulty, operands, ops, problem, _ in draw_problems(
        split, n, splits=SPLITS, shapes=SHAPES, seed=f"rlbench-testbed/{TASK_VERSION}/{split}", pool_of=pool_of,
        where="testbed",
    ):
        solution, value = solve(operands, ops)
        rows.append({"id": row_id, "problem": problem, "answer": str(value), "solution": solution,
                     "difficulty": difficulty})
    return rows
