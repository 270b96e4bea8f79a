"""Published numbers of reference papers, shown beside our runs by `rlbench compare --reference`.

Only "minimal-rl" exists: Xiong et al., "A Minimalist Approach to LLM Reasoning", arXiv 2504.11343, Table 1
(mean@16 at temperature 1.0, 4096 new tokens, Math-Verify grading; percentages). v1 gives per-benchmark
numbers for Qwen2.5-Math-7B; v2 gives only the Average (MATH500, Minerva Math, OlympiadBench) for both models.
Source of the values: docs/reference.md §1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlbench_cli.errors import UserError

# The protocol the published numbers were measured under (used to warn when our columns differ).
PAPER_PROTOCOL: dict[str, object] = {"k": 16, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4096}
PAPER_AVERAGE_BENCHMARKS: frozenset[str] = frozenset({"math500", "minerva_math", "olympiadbench"})
# The paper's code grades with plain Math-Verify (verl/utils/reward_score/math_verify.py of Minimal-RL).
PAPER_GRADER = "plain Math-Verify (eval.grader: math_verify)"


@dataclass(frozen=True)
class ReferenceRow:
    """One published row; values in percent, keyed by benchmark name or "average"."""

    label: str
    values: dict[str, float]


def _minimal_rl() -> list[ReferenceRow]:
    qwen, llama = "Qwen2.5-Math-7B", "LLaMA-3.2-3B-Instruct"
    v1 = {
        "Base": (41.3, 11.0, 18.6, 23.6),
        "RAFT": (77.4, 34.4, 37.8, 49.9),
        "RAFT++": (80.5, 35.8, 41.2, 52.5),
        "Iterative DPO": (75.7, 30.5, 38.3, 48.2),
        "Reinforce": (80.6, 36.1, 42.1, 52.9),
        "GRPO": (81.6, 36.7, 43.3, 53.9),
        "PPO": (79.6, 34.8, 41.1, 51.8),
    }
    v2 = {  # method: (Qwen2.5-Math-7B, LLaMA-3.2-3B-Instruct); None = not reported
        "Base": (23.6, 13.1),
        "Iterative DPO": (48.8, None),
        "Reinforce": (53.9, 24.2),
        "GRPO": (56.3, 28.4),
        "PPO": (52.5, 26.9),
        "RAFT": (52.3, 25.9),
        "RAFT++": (56.1, 27.6),
        "Reinforce-Rej": (56.4, 28.5),
    }
    rows = [
        ReferenceRow(
            f"[paper v1] {m} ({qwen})", {"math500": a, "minerva_math": b, "olympiadbench": c, "average": avg}
        )
        for m, (a, b, c, avg) in v1.items()
    ]
    for model, i in ((qwen, 0), (llama, 1)):
        rows += [
            ReferenceRow(f"[paper v2] {m} ({model})", {"average": vals[i]})
            for m, vals in v2.items()
            if vals[i] is not None
        ]
    return rows


REFERENCES = {"minimal-rl": _minimal_rl}


def paper_grader_warning(name: str, columns: list[Any]) -> list[str]:
    """A warning when a column beside the paper's rows was graded by another grader than the paper's."""
    other = sorted({c.header for c in columns if c.benchmark in PAPER_AVERAGE_BENCHMARKS
                    and c.settings.get("grader_name", "math_verify") != "math_verify"})
    if not other:
        return []
    return [f"reference {name!r}: the paper's rows were graded by {PAPER_GRADER}; {', '.join(other)} by another "
            "grader. For apples-to-apples: rlbench eval RUN --regrade --grader math_verify"]


def reference_rows(name: str) -> list[ReferenceRow]:
    """The published rows of reference `name`; UserError for an unknown name."""
    key = name.strip().lower()
    if key not in REFERENCES:
        raise UserError(
            f"unknown reference {name!r}",
            where="--reference",
            fix=f"use one of: {', '.join(sorted(REFERENCES))}",
        )
    return REFERENCES[key]()
