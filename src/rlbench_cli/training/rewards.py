"""The training reward: the same grader as the evaluation, mapped to the recipe's correct / incorrect values.

`make_reward_fn` returns a TRL-style reward function f(prompts, completions, completion_ids, answer, **kw).
A custom 'module:function' reward is loaded only when the recipe names one, and that is printed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from rlbench_cli.config import Recipe
from rlbench_cli.errors import UserError


def load_custom_function(spec: str) -> Callable[..., Any]:
    if ":" not in spec:
        raise UserError(f"reward.function {spec!r} must be 'module:function'", where="reward.function")
    module_name, func_name = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
        func = getattr(module, func_name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot load {spec!r} ({e})", where="reward.function",
                        fix="make the module importable (PYTHONPATH) and check the function name") from None
    if not callable(func):
        raise UserError(f"{spec!r} is not callable", where="reward.function")
    return func


class GraderReward:
    """Reward = reward.correct if the grader accepts the completion's answer, else reward.incorrect.

    Holds a Grader (worker processes) for the whole run; call close() at the end.
    """

    __name__ = "correctness"

    def __init__(self, recipe: Recipe) -> None:
        from rlbench_cli.evaluation.grader import Grader

        self.correct_value = recipe.reward.correct
        self.incorrect_value = recipe.reward.incorrect
        self.grader = Grader(workers=recipe.reward.grader_workers, timeout_s=recipe.reward.grader_timeout_s)
        self.grader.__enter__()
        self.timeouts = 0

    def __call__(self, prompts: list[Any], completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
        from rlbench_cli.evaluation.grader import GradeItem

        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        verdicts = self.grader.grade_many([GradeItem(completion=t, gold=g) for t, g in zip(texts, answer, strict=True)])
        self.timeouts += sum(v.timed_out for v in verdicts)
        return [self.correct_value if v.correct else self.incorrect_value for v in verdicts]

    def close(self) -> None:
        self.grader.__exit__(None, None, None)


def make_reward_fn(recipe: Recipe, console: Any = None) -> GraderReward | Callable[..., Any]:
    if recipe.reward.function:
        if console is not None:
            console.print(f"[yellow]Running custom reward code from the recipe: {recipe.reward.function}[/]")
        return load_custom_function(recipe.reward.function)
    return GraderReward(recipe)
