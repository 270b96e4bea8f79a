"""Helpers for tests that train: tiny recipes as dicts, run them in-process, hash weights."""

from __future__ import annotations

import hashlib
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any
from unittest.mock import patch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))  # makes toy_reward importable as reward.function


def tiny_recipe(algorithm: str, model_dir: Path, out_dir: Path, **sections: Any) -> dict[str, Any]:
    """A recipe dict that trains `algorithm` for 2 optimizer steps on testbed prompts with the toy reward."""
    n = 1 if algorithm == "ppo" else 4
    recipe: dict[str, Any] = {
        "name": f"t-{algorithm}",
        "seed": 0,
        "torch_threads": 1,
        "model": {"path": str(model_dir)},
        "data": {"source": "testbed", "split": "sft" if algorithm == "sft" else "train",
                 "prompt_template": "plain", "max_prompts": 32},
        "algorithm": {"name": algorithm},
        "rollout": {"prompts_per_batch": 4, "n": n, "max_new_tokens": 8},
        "optim": {"lr": 1e-3, "mini_batch_prompts": 2, "max_steps": 2,
                  "micro_batch_size": 2 * n if algorithm not in ("sft", "dpo", "ppo") else 2},
        "reward": {"function": "toy_reward:has_digit_one"},
        "eval": {"benchmarks": ["testbed_easy"], "k": 2, "max_new_tokens": 8, "limit": 4},
        "output": {"dir": str(out_dir)},
    }
    for key, value in sections.items():
        recipe.setdefault(key, {}).update(value) if isinstance(value, dict) else recipe.__setitem__(key, value)
    return recipe


def train_dict(data: dict[str, Any]) -> Path:
    from rlbench_cli.config import recipe_from_dict
    from rlbench_cli.training.run import run_training

    return run_training(recipe_from_dict(data, "test"), command="pytest", overwrite=True)


def weights_hash(model_dir: Path) -> str:
    return hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()


def metrics_without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("wall_time", "tokens_per_s")} for r in rows]


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr). Any other exception fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with patch.object(sys, "argv", ["rlbench", *args]), redirect_stdout(out), redirect_stderr(err):
        try:
            from rlbench_cli.cli import main

            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()
