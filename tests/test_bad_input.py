"""Bad input never crashes: malformed recipes, overrides and data files end in one `error:` line and exit 2.

Property tests (hypothesis) throw generated junk at `rlbench validate` and `rlbench train --dry-run`, run
in-process through `rlbench_cli.cli.main` for speed; a few subprocess cases prove the real exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MINIMAL = "name: t\nalgorithm: {name: grpo}\n"


def assert_user_error(code: int, out: str, err: str) -> str:
    assert code == 2, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert "Traceback" not in err + out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def _write(tmp: Path, content: str | bytes, name: str = "recipe.yaml") -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------- table of bad recipes

BOMB = "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}" if i else '"lol"'] * 9) + "]\n"
    for i in range(9)
)

RECIPE_CASES: list[tuple[str, str | bytes, list[str], tuple[str, ...]]] = [
    # (id, file content, overrides, fragments the message must contain)
    ("empty", "", [], ("recipe is empty",)),
    ("only-comment", "# nothing\n", [], ("recipe is empty",)),
    ("syntax", "name: t\nalgorithm: {name: grpo\n", [], ("YAML syntax error", "recipe.yaml:3:1")),
    ("tab-indent", "name: t\nalgorithm:\n\tname: grpo\n", [], ("YAML syntax error", "recipe.yaml:3:")),
    ("list-top", "- a\n- b\n", [], ("top level must be a mapping",)),
    ("scalar-top", "42\n", [], ("top level must be a mapping",)),
    ("unknown-key", MINIMAL + "optim: {lrr: 0.1}\n", [], ("unknown key 'optim.lrr'", "did you mean 'lr'")),
    ("unknown-section", MINIMAL + "rollut: {n: 2}\n", [], ("unknown key 'rollut'", "did you mean 'rollout'")),
    ("wrong-type", MINIMAL + "rollout: {n: many}\n", [], ("rollout.n", "integer")),
    ("section-not-mapping", MINIMAL + "optim: 5\n", [], ("optim",)),
    ("out-of-range", MINIMAL + "rollout: {temperature: 0}\n", [], ("rollout.temperature", "greater than 0")),
    ("huge-int", MINIMAL + "rollout: {n: 1000000000000000000000000000000}\n", [], ("rollout.n",)),
    ("huge-float", MINIMAL + "optim: {lr: 1e400}\n", [], ("optim.lr",)),
    ("nan", MINIMAL + "reward: {correct: .nan}\n", [], ("reward.correct", "finite")),
    ("unknown-algorithm", "name: t\nalgorithm: {name: grpoo}\n", [], ("algorithm.name",)),
    ("missing-algorithm", "name: t\n", [], ("required key 'algorithm'",)),
    ("bad-name", "name: 'a b/c'\nalgorithm: {name: grpo}\n", [], ("key 'name'",)),
    ("run-name-traversal", MINIMAL + "output: {run_name: ..}\n", [], ("output.run_name",)),
    ("checkpoint-mid-rollout",
     MINIMAL + "rollout: {prompts_per_batch: 4, n: 2}\noptim: {mini_batch_prompts: 2, micro_batch_size: 2}\n"
     "output: {checkpoint_every: 3}\n", [], ("checkpoint_every", "checkpoint_every=4")),
    ("inconsistent-batch", MINIMAL + "rollout: {prompts_per_batch: 4}\noptim: {mini_batch_prompts: 3}\n", [],
     ("mini_batch_prompts",)),
    ("utf16", MINIMAL.encode("utf-16"), [], ("not UTF-8", "UTF-16")),
    ("latin1", ("name: t\ndescription: caf\u00e9\nalgorithm: {name: grpo}\n").encode("latin-1"), [],
     ("not UTF-8",)),
    ("nul-bytes", b"name: t\x00\nalgorithm: {name: grpo}\n", [], ("NUL",)),
    ("binary", bytes(range(256)) * 4, [], ("recipe.yaml",)),
    ("billion-laughs", MINIMAL + BOMB, [], ("expands to more than",)),
    ("deep-nesting", "name: t\nalgorithm: {name: grpo}\nx: " + "[" * 3000 + "]" * 3000 + "\n", [],
     ("recipe.yaml",)),
    ("deep-mapping", "name: t\nalgorithm: {name: grpo}\nx: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", [],
     ("recipe.yaml",)),
    ("too-big", MINIMAL + "description: '" + "x" * (1 << 20) + "'\n", [], ("larger than",)),
    ("python-object", "!!python/object/apply:os.getcwd []\n", [], ("unsupported YAML tag",)),
    ("bad-override-syntax", MINIMAL, ["optim.lr"], ("is not KEY=VALUE",)),
    ("bad-override-key", MINIMAL, ["optim..lr=1"], ("malformed",)),
    ("override-non-section", MINIMAL, ["name.x=1"], ("'name' is a value, not a section",)),
    ("override-unknown-key", MINIMAL, ["optim.lrr=1"], ("unknown key 'optim.lrr'", "did you mean 'lr'")),
    ("override-wrong-type", MINIMAL, ["rollout.n=[1, 2]"], ("rollout.n",)),
    ("override-bomb", MINIMAL, ["description=" + BOMB.replace("\n", ", ").join("{}")], ("override",)),
    ("override-python-tag", MINIMAL, ["seed=!!python/name:os.getcwd"], ("unsupported YAML tag",)),
    ("bad-reward-function", MINIMAL + "reward: {function: 'not a spec'}\n", [], ("reward.function",)),
]


@pytest.mark.parametrize(("content", "overrides", "fragments"), [c[1:] for c in RECIPE_CASES],
                         ids=[c[0] for c in RECIPE_CASES])
@pytest.mark.parametrize("command", ["validate", "dry-run"])
def test_bad_recipe_is_one_line_exit_2(tmp_path: Path, command: str, content: str | bytes,
                                       overrides: list[str], fragments: tuple[str, ...]) -> None:
    path = _write(tmp_path, content)
    if command == "validate":
        args = ["validate", str(path), *[a for o in overrides for a in ("--set", o)]]
    else:
        args = ["train", str(path), *overrides, "--dry-run"]
    line = assert_user_error(*run_cli(*args))
    for fragment in fragments:
        assert fragment in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["validate", "no/such/recipe.yaml"], "recipe file not found"),
        (["validate", "."], "is a folder"),
        (["train", "no/such.yaml", "--dry-run"], "recipe file not found"),
        (["train", "RECIPE", "--max-steps", "many"], "--max-steps"),
        (["train", "RECIPE", "--nosuch"], "No such option"),
        (["train", "RECIPE", "--launcher", "slurm"], "unknown launcher"),
        (["train", "RECIPE", "--seed", "1", "--seeds", "1,2"], "either --seed or --seeds"),
        (["nosuchcommand"], "No such command"),
        (["validate"], "Missing argument"),
    ],
)
def test_bad_command_line_is_one_line_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    recipe = _write(tmp_path, MINIMAL)
    line = assert_user_error(*run_cli(*[str(recipe) if a == "RECIPE" else a for a in args]))
    assert fragment in line


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this system")
def test_endless_device_file_is_refused_not_read_forever() -> None:
    assert "larger than" in assert_user_error(*run_cli("validate", "/dev/zero"))


def test_valid_minimal_recipe_passes(tmp_path: Path) -> None:
    code, out, err = run_cli("validate", str(_write(tmp_path, MINIMAL)))
    assert code == 0 and "ok" in out, err


# ---------------------------------------------------------------------------------- property tests

KEYS = ["name", "algorithm", "rollout", "optim", "reward", "output", "data", "model", "eval", "seed", "n",
        "lr", "temperature", "checkpoint_every", "function", "path", "source", "trust_remote_code", "x",
        "\u00e9", ""]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["grpo", "raft", "sft"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner,
                                                 max_size=4)), max_leaves=20)
recipes = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


def _check_any_outcome(code: int, out: str, err: str) -> None:
    """Either valid (exit 0) or one clean error line (exit 2); never a traceback or another exit code."""
    assert "Traceback" not in out + err
    if code != 0:
        assert_user_error(code, out, err)


@FAST
@given(data=recipes, dry_run=st.booleans())
def test_property_generated_recipes_never_crash(tmp_path: Path, data: dict[str, Any], dry_run: bool) -> None:
    if "algorithm" in data and not isinstance(data["algorithm"], dict):
        data["algorithm"] = {"name": data["algorithm"]}
    path = _write(tmp_path, yaml.safe_dump(data, allow_unicode=True))
    args = ["train", str(path), "--dry-run"] if dry_run else ["validate", str(path)]
    _check_any_outcome(*run_cli(*args))


@FAST
@given(data=recipes)
def test_property_valid_base_with_junk_sections(tmp_path: Path, data: dict[str, Any]) -> None:
    base = {"name": "t", "algorithm": {"name": "grpo"}}
    path = _write(tmp_path, yaml.safe_dump({**data, **base}, allow_unicode=True))
    _check_any_outcome(*run_cli("validate", str(path)))


@FAST
@given(blob=st.binary(max_size=400))
def test_property_binary_junk(tmp_path: Path, blob: bytes) -> None:
    _check_any_outcome(*run_cli("validate", str(_write(tmp_path, blob))))


@FAST
@given(text=st.text(max_size=200), encoding=st.sampled_from(["utf-8", "utf-16", "latin-1", "utf-8-sig"]))
def test_property_text_in_any_encoding(tmp_path: Path, text: str, encoding: str) -> None:
    raw = (MINIMAL + text).encode(encoding, errors="replace")
    _check_any_outcome(*run_cli("validate", str(_write(tmp_path, raw))))


@FAST
@given(overrides=st.lists(st.text(max_size=30), max_size=4))
def test_property_junk_overrides(tmp_path: Path, overrides: list[str]) -> None:
    path = _write(tmp_path, MINIMAL)
    overrides = [o for o in overrides if not o.startswith("-") and "\x00" not in o]
    _check_any_outcome(*run_cli("train", str(path), *overrides, "--dry-run"))


@FAST
@given(key=st.sampled_from(["rollout.n", "optim.lr", "seed", "output.checkpoint_every", "reward.correct",
                            "rollout.temperature", "optim.max_steps", "model.trust_remote_code",
                            "data.source"]),
       value=st.one_of(st.integers(min_value=-(10**40), max_value=10**40), st.floats(), st.text(max_size=10)))
def test_property_values_of_real_keys(tmp_path: Path, key: str, value: Any) -> None:
    path = _write(tmp_path, MINIMAL)
    _check_any_outcome(*run_cli("validate", str(path), "--set", f"{key}={value}"))


# ---------------------------------------------------------------------------------- real subprocesses


@pytest.mark.parametrize(
    ("content", "args"),
    [("name: t\nalgorithm: {name: grpo\n", ["validate"]),
     (MINIMAL + "optim: {lrr: 1}\n", ["train", "--dry-run"]),
     ("!!python/object/apply:os.getcwd []\n", ["validate"]),
     (MINIMAL + BOMB, ["train", "--dry-run"])],
    ids=["syntax", "unknown-key", "python-tag", "bomb"],
)
def test_subprocess_exit_code_is_2(tmp_path: Path, content: str, args: list[str]) -> None:
    path = _write(tmp_path, content)
    cmd = [sys.executable, "-m", "rlbench_cli.cli", args[0], str(path), *args[1:]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert_user_error(r.returncode, r.stdout, r.stderr)


# ---------------------------------------------------------------------------------- data files and output


@pytest.fixture()
def fake_runner(monkeypatch: pytest.MonkeyPatch):
    """Replace the algorithm runner: these tests stop before any model is trained."""
    calls: list[int] = []

    def runner(recipe: Any, ctx: Any, console: Any, *, rows: list, model_path: str, resume: bool) -> Path:
        calls.append(len(rows))
        return ctx.model_dir

    monkeypatch.setattr("rlbench_cli.training.run.runner_for", lambda algorithm: runner)
    return calls


def _data_recipe(tmp_path: Path, lines: list[str], *extra: str) -> tuple[Path, Path]:
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    recipe = _write(tmp_path, MINIMAL + f"model: {{path: {model}}}\n"
                    f"data: {{source: jsonl, path: {data}, {', '.join(extra) or 'shuffle: true'}}}\n"
                    f"output: {{dir: {tmp_path / 'results'}}}\n")
    return recipe, data


GOOD = json.dumps({"problem": "1+1=", "answer": "2"})


@pytest.mark.parametrize(
    ("lines", "bad_line", "fragment"),
    [
        ([GOOD, "{not json", GOOD], 2, "bad JSON line"),
        ([GOOD, GOOD, json.dumps({"question": "1+1", "answer": "2"})], 3, "missing or empty 'problem'"),
        ([GOOD, json.dumps({"problem": "1+1=", "answer": ""})], 2, "missing or empty 'answer'"),
        ([json.dumps({"problem": "x", "answer": "  "})], 1, "missing or empty 'answer'"),
        ([GOOD, "[1, 2]"], 2, "not a JSON object"),
    ],
)
def test_bad_data_names_file_and_line(tmp_path: Path, fake_runner: list[int], lines: list[str], bad_line: int,
                                      fragment: str) -> None:
    recipe, data = _data_recipe(tmp_path, lines)
    line = assert_user_error(*run_cli("train", str(recipe)))
    assert f"{data}:{bad_line}" in line and fragment in line and "data.lenient" in line
    assert fake_runner == []  # stopped before any model work


def test_lenient_data_skips_and_counts(tmp_path: Path, fake_runner: list[int]) -> None:
    lines = [GOOD, json.dumps({"problem": "1+1=", "answer": ""}), json.dumps({"question": "q"}), GOOD]
    recipe, _ = _data_recipe(tmp_path, lines, "lenient: true")
    code, out, err = run_cli("train", str(recipe))
    assert code == 0, err
    manifest = json.loads((tmp_path / "results" / "t-s0" / "manifest.json").read_text())
    assert manifest["data"]["rows"] == 2 and manifest["data"]["skipped"] == 2
    assert fake_runner == [2]


def test_lenient_counts_bad_json_lines_too(tmp_path: Path, fake_runner: list[int]) -> None:
    recipe, _ = _data_recipe(tmp_path, [GOOD, "{broken", GOOD], "lenient: true")
    code, _, err = run_cli("train", str(recipe))
    assert code == 0, err
    manifest = json.loads((tmp_path / "results" / "t-s0" / "manifest.json").read_text())
    assert manifest["data"]["skipped"] == 1


def test_unwritable_results_folder_fails_before_model_loading(tmp_path: Path, fake_runner: list[int]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    # The model path does not exist either: the output check must come first.
    recipe = _write(tmp_path, MINIMAL + "model: {path: /no/such/model}\n"
                    f"output: {{dir: {blocker / 'results'}}}\n")
    line = assert_user_error(*run_cli("train", str(recipe)))
    assert "not writable" in line and str(blocker) in line
    assert fake_runner == []


def test_read_only_results_folder(tmp_path: Path, fake_runner: list[int]) -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: chmod 555 does not block writes (a path under a file is tested)")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        recipe = _write(tmp_path, MINIMAL + f"output: {{dir: {folder}}}\n")
        assert "not writable" in assert_user_error(*run_cli("train", str(recipe)))
    finally:
        folder.chmod(0o755)
