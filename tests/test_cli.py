"""The CLI contract: --help everywhere, no torch at startup, shipped recipes validate and dry-run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rlbench_cli.cli import app

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["compare"], ["grade"], ["recipes"], ["validate"],
                                     ["env"], ["testbed"], ["testbed", "build"], ["testbed", "show"]])
def test_help_works_for_every_command(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_and_validate_do_not_import_torch() -> None:
    recipe = RECIPES[0] if RECIPES else None
    code = (
        "import sys\n"
        "from rlbench_cli.cli import main\n"
        f"sys.argv = ['rlbench', 'validate', {str(recipe)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    if recipe is None:
        pytest.skip("no recipes shipped yet")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "rlbench_cli.cli", "--help"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    assert "| torch" not in out.stderr


def test_there_are_shipped_recipes() -> None:
    names = {p.stem for p in (REPO / "recipes" / "tiny").glob("*.yaml")}
    assert {"grpo", "raft", "raft_pp", "reinforce", "reinforce_rej", "sft", "ppo", "dpo"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_recipe_validates_and_dry_runs(recipe: Path) -> None:
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# rlbench train "), f"{recipe} must open with the command that runs it"
    assert str(recipe.relative_to(REPO)) in first
    data = yaml.safe_load(recipe.read_text())
    assert data.get("description"), "recipes need a one-line description for `rlbench recipes`"
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Batch arithmetic" in result.output


def test_recipes_lists_each_shipped_recipe() -> None:
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0
    for recipe in RECIPES:
        assert recipe.stem in result.output


def test_recipe_keys_reference_is_complete_in_readme() -> None:
    from rlbench_cli.config import reference_rows

    readme = (REPO / "README.md").read_text()
    missing = [key for key, _, _ in reference_rows() if f"`{key}`" not in readme]
    assert not missing, f"README recipe reference lacks: {missing}"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["validate", "does/not/exist.yaml"], "recipe file not found"),
        (["train", "does/not/exist.yaml", "--dry-run"], "recipe file not found"),
        (["train", "recipes/tiny/grpo.yaml", "optim.lrr=1", "--dry-run"], "did you mean 'lr'"),
        (["train", "recipes/tiny/grpo.yaml", "optim.lr=abc", "--dry-run"], "optim.lr"),
        (["train", "recipes/tiny/grpo.yaml", "optim.lr=-1", "--dry-run"], "greater than 0"),
        (["train", "recipes/tiny/grpo.yaml", "algorithm.name=grpoo", "--dry-run"], "algorithm.name"),
        (["train", "recipes/tiny/grpo.yaml", "nokeyvalue", "--dry-run"], "KEY=VALUE"),
        (["train", "recipes/tiny/grpo.yaml", "--launcher", "slurm", "--dry-run"], "unknown launcher"),
        (["eval", "--shard", "5/2"], "bad shard"),
        (["compare", "no/such/folder"], "results folder not found"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(args: list[str], needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "rlbench_cli.cli", *args], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr


def test_override_is_type_checked_like_the_file(tmp_path: Path) -> None:
    from rlbench_cli.config import load_recipe

    r = load_recipe(REPO / "recipes" / "tiny" / "grpo.yaml", ["optim.lr=2e-5", "rollout.n=16", "seed=7"])
    assert (r.optim.lr, r.rollout.n, r.seed) == (2e-5, 16, 7)
    assert r.run_name == f"{r.name}-s7"
