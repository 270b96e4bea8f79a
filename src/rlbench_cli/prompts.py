"""Prompt templates shared by training and evaluation, so every algorithm sees exactly the same prompts.

- `paper`: the reference paper's system prompt and suffix, rendered with the model's chat template.
- `plain`: "Problem: ...\\nSolution:" for base models without a chat template (the CPU testbed uses it).
- `raw`: the problem text as is.
"""

from __future__ import annotations

from typing import Any

PAPER_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
PAPER_SUFFIX = " Let's think step by step and output the final answer within \\boxed{}."

TEMPLATES = ("paper", "plain", "raw")


def strip_suffix(problem: str) -> str:
    """Remove the paper's suffix if a data file already appended it (MATH train in verl format does)."""
    return problem[: -len(PAPER_SUFFIX)] if problem.endswith(PAPER_SUFFIX) else problem


def paper_messages(problem: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": PAPER_SYSTEM},
        {"role": "user", "content": strip_suffix(problem) + PAPER_SUFFIX},
    ]


def render_prompt(problem: str, template: str, tokenizer: Any | None = None) -> str:
    """The exact prompt string given to the model (generation continues right after it)."""
    if template == "plain":
        return f"Problem: {strip_suffix(problem)}\nSolution:"
    if template == "raw":
        return problem
    if template == "paper":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "prompt template 'paper' needs a tokenizer with a chat template; "
                "use template 'plain' for base models without one"
            )
        return tokenizer.apply_chat_template(paper_messages(problem), tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt template {template!r}; choose one of {', '.join(TEMPLATES)}")
