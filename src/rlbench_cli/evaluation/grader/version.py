"""Grader names and versions recorded in every summary (`eval.grader`), so numbers from two graders never mix."""

from __future__ import annotations

MATH_VERIFY_VERSION = "0.9.0"
GRADER_VERSION = f"rlbench-grader/2+math-verify-{MATH_VERIFY_VERSION}"
PAPER_GRADER_VERSION = f"math-verify-{MATH_VERIFY_VERSION}/minimal-rl-call"
GRADER_HELP = (
    "Answer checker. rlbench: Math-Verify plus rlbench's extraction, normalisation, multi-answer sets and "
    "tolerance (scores higher on outside tests, accepts no known wrong answer). math_verify: plain Math-Verify "
    "exactly as the reference paper called it, for apples-to-apples against published tables."
)


def grader_version(grader: str) -> str:
    return PAPER_GRADER_VERSION if grader == "math_verify" else GRADER_VERSION


def grader_name_of(grader_block: dict) -> str:
    """The grader a summary's `grader` block names (summaries from before the setting: by its version)."""
    name = grader_block.get("name")
    if name:
        return str(name)
    return "math_verify" if str(grader_block.get("version", "")).startswith("math-verify-") else "rlbench"
