"""Testbed v2's task: arithmetic chains of varying length, with two answer styles in the warm-start data.

A problem reads "Compute 37+8-5." as in v1. What changes (issue 11: a testbed on which RL visibly acts):

- Difficulty varies inside the RL train split: chains of 2 to 6 operands, so a tiny model gets some prompts
  right in all n samples (all-correct groups) and others never (all-wrong groups), as in real RLVR data.
- Answer length varies: the warm-start (SFT) data mixes a worked style (" 37+8=45. 45-5=40. \\boxed{40}", one
  sentence per step) with a direct style (" \\boxed{40}"). The base model therefore picks a style at random;
  worked answers are longer and more often right on long chains, direct answers are short and mostly wrong
  there. Which style, and how long an answer is, is something RL can change (and that the length findings can
  observe), and the style choice is entropy that RL can lose.
- Evaluation splits keep v1's names and shapes (easy 3, medium 4, hard 5 operands) but are new problems.

Splits are deterministic (string seeds) and disjoint by construction: every problem text is assigned to one pool
(evaluation / RL train / SFT) by a hash of its text and the task version.
"""

from __future__ import annotations

import hashlib

from rlbench_cli.testbed.task import SHAPES, Shape, draw_problems, solve

TASK_VERSION = "arith-chain-v3-styles"

TRAIN_SHAPES: dict[str, Shape] = {
    "2-operand": Shape(n_operands=2), **SHAPES, "6-operand": Shape(n_operands=6),
}
_TRAIN_MIX = tuple((d, 1.0) for d in TRAIN_SHAPES)
# Longer chains for evaluation only, added after v2 was measured (issue 11's headroom: trained arms pass 90% mean@16 on
# 3 and 4 operands). A new split name has its own seed, so every existing split stays as it was. 7 operands was
# probed and dropped: models trained on at most 6 stop after 5 steps there (base mean@16 3.7).
EVAL_ONLY_SHAPES: dict[str, Shape] = {"ops6": Shape(n_operands=6)}

# split -> (pool, default size, difficulty mix)
SPLITS: dict[str, tuple[str, int, tuple[tuple[str, float], ...]]] = {
    "sft": ("sft", 20000, _TRAIN_MIX),
    "train": ("train", 4000, _TRAIN_MIX),
    "easy": ("eval", 300, (("easy", 1.0),)),
    "medium": ("eval", 300, (("medium", 1.0),)),
    "hard": ("eval", 300, (("hard", 1.0),)),
    "ops6": ("eval", 300, (("ops6", 1.0),)),
}
EVAL_SPLITS = ("easy", "medium", "hard")
DIRECT_FRACTION = 0.5  # share of warm-start solutions written in the direct (answer-only) style

_POOL_BUCKETS = {"eval": range(0, 2), "train": range(2, 8), "sft": range(8, 20)}


def pool_of(problem: str) -> str:
    """The pool a problem text belongs to (hash of task version + text); this keeps the splits disjoint."""
    digest = hashlib.sha256(f"{TASK_VERSION}/{problem}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 20
    return next(pool for pool, rng in _POOL_BUCKETS.items() if bucket in rng)


def generate_split(split: str, n: int | None = None) -> list[dict]:
    """The first `n` problems of a v2 split (default: its standard size), always the same ones.

    Rows: {"id", "problem", "answer", "solution", "difficulty", "style"}. `solution` is the worked solution
    except in the SFT split, where a DIRECT_FRACTION of rows carry the direct style; `style` says which.
    """
    rows = []
    for row_id, difficulty, operands, ops, problem, direct in draw_problems(
        split, n, splits=SPLITS, shapes={**TRAIN_SHAPES, **SHAPES, **EVAL_ONLY_SHAPES},
        seed=f"rlbench-testbed/{TASK_VERSION}/{split}",
        pool_of=pool_of, where="testbed v2", extra=lambda rng: split == "sft" and rng.random() < DIRECT_FRACTION,
    ):
        solution, value = solve(operands, ops)
        rows.append({
            "id": row_id,
            "problem": problem,
            "answer": str(value),
            "solution": f"\\boxed{{{value}}}" if direct else solution,
            "difficulty": difficulty,
            "style": "direct" if direct else "worked",
        })
    return rows
