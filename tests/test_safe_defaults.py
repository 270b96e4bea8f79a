"""Safe defaults: recipes are data, not code. YAML is loaded safely, model code from the hub runs only when
`model.trust_remote_code` is set (and that is printed), and recipe code runs only when `reward.function` names
it (and that is printed).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from rlbench_cli.config import Recipe, load_recipe

MINIMAL = "name: t\nalgorithm: {name: grpo}\n"


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:subprocess.check_output [['touch', '{marker}']]",
        "!!python/name:os.system",
        "!!python/module:os",
        "!!python/object:argparse.Namespace {{x: 1}}",
    ],
)
@pytest.mark.parametrize("where", ["file", "override"])
def test_python_yaml_tags_are_rejected_and_never_run(tmp_path: Path, payload: str, where: str) -> None:
    marker = tmp_path / "pwned"
    value = payload.format(marker=marker)
    recipe = tmp_path / "r.yaml"
    if where == "file":
        recipe.write_text(MINIMAL + f"description: {value}\n")
        code, out, err = run_cli("validate", str(recipe))
    else:
        recipe.write_text(MINIMAL)
        code, out, err = run_cli("train", str(recipe), f"description={value}", "--dry-run")
    assert code == 2 and "unsupported YAML tag" in err and "Traceback" not in err
    assert not marker.exists()


def test_defaults_run_no_outside_code(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MINIMAL)
    r = load_recipe(recipe)
    assert r.model.trust_remote_code is False
    assert r.reward.function is None
    assert Recipe.model_fields["model"].default_factory().trust_remote_code is False  # type: ignore[misc]


def _sentinel_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A reward module that leaves a file behind when imported."""
    marker = tmp_path / "imported"
    (tmp_path / "rb_sentinel_reward.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n"
        "def reward(prompts, completions, **kw):\n    return [0.0] * len(completions)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("rb_sentinel_reward", None)
    return marker


@pytest.mark.parametrize(
    ("extra", "notices"),
    [
        ("", []),
        ("model: {trust_remote_code: true}\n", ["trust_remote_code is on"]),
        ("reward: {function: 'rb_sentinel_reward:reward'}\n",
         ["Custom reward code", "rb_sentinel_reward:reward"]),
        ("model: {trust_remote_code: true}\nreward: {function: 'rb_sentinel_reward:reward'}\n",
         ["trust_remote_code is on", "rb_sentinel_reward:reward"]),
    ],
    ids=["defaults", "trust-remote-code", "reward-function", "both"],
)
def test_dry_run_and_validate_say_what_would_run_and_run_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, notices: list[str]
) -> None:
    marker = _sentinel_module(tmp_path, monkeypatch)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MINIMAL + extra)
    code, out, err = run_cli("train", str(recipe), "--dry-run")
    assert code == 0, err
    flat = " ".join(out.split())
    for notice in notices:
        assert notice in flat
    if not notices:
        assert "would run" not in flat
    code, out, err = run_cli("validate", str(recipe))
    assert code == 0, err
    assert not marker.exists()  # neither command imported the recipe's reward module
    assert "rb_sentinel_reward" not in sys.modules


def test_reward_code_runs_only_when_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from rlbench_cli.training import rewards

    marker = _sentinel_module(tmp_path, monkeypatch)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MINIMAL + "reward: {grader_workers: 0}\n")

    class FakeGrader:  # the built-in grader, without its worker processes
        def __init__(self, recipe: Any) -> None:
            self.recipe = recipe

    monkeypatch.setattr(rewards, "GraderReward", FakeGrader)
    fn = rewards.make_reward_fn(load_recipe(recipe), Console(file=io.StringIO()))
    assert isinstance(fn, FakeGrader) and not marker.exists()

    recipe.write_text(MINIMAL + "reward: {function: 'rb_sentinel_reward:reward'}\n")
    console = Console(file=io.StringIO(), width=200)
    fn = rewards.make_reward_fn(load_recipe(recipe), console)
    assert marker.exists() and fn(["p"], ["c", "d"]) == [0.0, 0.0]
    assert "rb_sentinel_reward:reward" in console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("trust", [False, True])
def test_train_prints_and_records_trust_remote_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    trust: bool) -> None:
    seen: list[bool] = []

    def runner(recipe: Any, ctx: Any, console: Any, *, rows: list, model_path: str, resume: bool) -> Path:
        seen.append(recipe.model.trust_remote_code)
        return ctx.model_dir

    monkeypatch.setattr("rlbench_cli.training.run.runner_for", lambda algorithm: runner)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"problem": "1+1=", "answer": "2"}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MINIMAL + f"model: {{path: {model}, trust_remote_code: {str(trust).lower()}}}\n"
                      f"data: {{source: jsonl, path: {data}}}\noutput: {{dir: {tmp_path / 'results'}}}\n")
    code, out, err = run_cli("train", str(recipe))
    assert code == 0, err
    assert seen == [trust]
    assert ("trust_remote_code is on" in " ".join(out.split())) is trust
    manifest = json.loads((tmp_path / "results" / "t-s0" / "manifest.json").read_text())
    assert manifest.get("trust_remote_code", False) is trust


@pytest.mark.parametrize("trust", [False, True])
def test_load_policy_passes_trust_remote_code_through(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      trust: bool) -> None:
    import transformers

    from rlbench_cli.training.policy import load_policy

    calls: list[dict[str, Any]] = []

    class Tok:
        pad_token = "p"
        eos_token = "e"
        padding_side = "right"

    def fake(kind: str):
        def from_pretrained(path: str, **kwargs: Any) -> Any:
            calls.append({"kind": kind, **kwargs})
            return Tok() if kind == "tokenizer" else object()
        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake("tokenizer"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake("model"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MINIMAL + f"model: {{trust_remote_code: {str(trust).lower()}}}\n")
    load_policy("some/model", load_recipe(recipe))
    assert [c["kind"] for c in calls] == ["tokenizer", "model"]
    assert all(c["trust_remote_code"] is trust for c in calls)
