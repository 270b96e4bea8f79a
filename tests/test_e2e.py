"""End to end through the real CLI on the CPU testbed: build base, train a few steps, eval, compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlbench_cli.cli import app
from rlbench_cli.records import read_jsonl
from rlbench_cli.training.context import METRIC_KEYS

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _train_eval_compare(results: Path, model: str | None) -> None:
    """`model` None: the recipe's own `model.path: testbed` (the default base, built on first use)."""
    overrides = [] if model is None else [f"model.path={model}"]
    invoke("train", str(REPO / "recipes" / "tiny" / "grpo.yaml"), "--output", str(results), "--max-steps", "2",
           "rollout.prompts_per_batch=4", "optim.mini_batch_prompts=2", "optim.micro_batch_size=16", *overrides)
    run = results / "tiny-grpo-s0"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["steps"] == 2
    for key in ("git_commit", "versions", "hardware", "torch_threads", "seeds", "data", "model", "started_at",
                "ended_at", "final_model_sha256"):
        assert key in manifest, key
    assert manifest["versions"]["trl"] == "1.16.0" and manifest["data"]["sha256"]
    assert (run / "recipe.yaml").read_text().startswith("# Resolved recipe")
    assert (run / "train.log").stat().st_size > 0
    assert (run / "model" / "model.safetensors").exists() and (run / "model" / "rlbench.json").exists()
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(set(METRIC_KEYS) <= set(r) for r in rows)

    invoke("eval", str(run), "--k", "2", "--limit", "8", "--results", str(results), "--workers", "1")
    # a base folder has no recipe: the tiny model gets the testbed's benchmarks and template, as `testbed` does
    base_args = ["testbed"] if model is None else [model, "--benchmarks", "testbed_easy,testbed_medium,testbed_hard",
                                                   "--template", "plain"]
    invoke("eval", *base_args, "--k", "2", "--limit", "8", "--results", str(results), "--workers", "1")
    summary = json.loads((run / "eval" / "testbed_hard" / "summary.json").read_text())
    assert summary["settings"]["k"] == 2 and summary["settings"]["prompt_template"] == "plain"
    assert summary["data"]["n_problems"] == 8 and 0.0 <= summary["metrics"]["mean@k"] <= 1.0
    base_runs = [p for p in results.iterdir() if p.name.startswith("base-")]
    assert len(base_runs) == 1
    assert (base_runs[0] / "eval" / "testbed_hard" / "summary.json").exists()

    out = invoke("compare", str(results), "--format", "markdown")
    assert "Base" in out and "GRPO" in out and "Testbed-Hard" in out


def test_train_eval_compare_on_a_tiny_model(tmp_path: Path, tiny_random_model_dir: Path) -> None:
    """The same path on an untrained ~100k-parameter model (seconds): what `make test` runs."""
    _train_eval_compare(tmp_path / "results", str(tiny_random_model_dir))


@pytest.mark.build
def test_train_eval_compare_on_the_testbed(tmp_path: Path) -> None:
    """The default testbed base, built cold when the cache lacks it (minutes: `make test-build`)."""
    _train_eval_compare(tmp_path / "results", None)


def test_seeds_option_plans_one_run_per_seed() -> None:
    out = invoke("train", str(REPO / "recipes" / "tiny" / "grpo.yaml"), "--seeds", "0,1,2", "--dry-run")
    for seed in (0, 1, 2):
        assert f"tiny-grpo-s{seed}" in out
