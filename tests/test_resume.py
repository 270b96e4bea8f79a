"""Resume after a crash: a run killed with SIGKILL (or stopped with Ctrl-C) and resumed with `--resume`
ends with the same weights and metrics as an uninterrupted run; a killed run's folder stays readable.

The subprocess tests train a tiny random Llama on CPU (torch_threads 1) with a small custom reward that
sleeps, so a run is slow enough to be stopped between its first checkpoint and its end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rlbench_cli.config import load_recipe
from rlbench_cli.errors import UserError
from rlbench_cli.records import read_jsonl, sha256_file

STEPS, CHECKPOINT_EVERY = 8, 4
VOLATILE = ("wall_time", "tokens_per_s")  # timing: the only metrics allowed to differ after a resume

REWARD_MODULE = '''
import os, time

def reward(prompts, completions, **kwargs):
    time.sleep(float(os.environ.get("RB_TEST_REWARD_SLEEP", "0")))
    return [float(sum(map(ord, c)) % 2) for c in completions]
'''


def _recipe_text(model_dir: Path, data: Path, out: Path) -> str:
    return f"""
name: resume-test
seed: 3
torch_threads: 1
model: {{path: {model_dir}}}
data: {{source: jsonl, path: {data}, prompt_template: raw}}
algorithm: {{name: grpo}}
rollout: {{prompts_per_batch: 4, n: 2, max_new_tokens: 8}}
optim: {{lr: 0.01, mini_batch_prompts: 2, micro_batch_size: 4, max_steps: {STEPS}}}
reward: {{function: "rb_test_reward:reward", correct: 1.0, incorrect: 0.0}}
output: {{dir: {out}, checkpoint_every: {CHECKPOINT_EVERY}}}
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_random_model_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("resume")
    (root / "rb_test_reward.py").write_text(REWARD_MODULE)
    data = root / "data.jsonl"
    rows = [{"problem": f"{i}+{i}=", "answer": str(2 * i)} for i in range(16)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = root / "recipe.yaml"
    recipe.write_text(_recipe_text(tiny_random_model_dir, data, root / "results"))
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return {"root": root, "recipe": recipe, "env": env}


def _cli(ws: dict[str, Any], *args: str, sleep: float = 0.0) -> subprocess.Popen:
    env = {**ws["env"], "RB_TEST_REWARD_SLEEP": str(sleep)}
    # A terminal's Ctrl-C: SIGINT at its default even when pytest runs as a background job (which ignores SIGINT,
    # and a child inheriting that never sees the signal).
    return subprocess.Popen([sys.executable, "-m", "rlbench_cli.cli", *args], cwd=ws["root"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _run(ws: dict[str, Any], *args: str) -> subprocess.CompletedProcess:
    p = _cli(ws, *args)
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _stop_after_first_checkpoint(ws: dict[str, Any], run_dir: Path, sig: int) -> subprocess.CompletedProcess:
    """Start a (slowed-down) run and send `sig` as soon as its first checkpoint is complete."""
    p = _cli(ws, "train", str(ws["recipe"]), f"output.dir={run_dir.parent}", sleep=0.3)
    marker = run_dir / "checkpoints" / f"checkpoint-{CHECKPOINT_EVERY}" / "trainer_state.json"
    deadline = time.time() + 240
    while not marker.exists():
        assert p.poll() is None, f"run ended before its first checkpoint:\n{p.stderr.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _unwrapped(text: str) -> str:
    return text.replace("\n", "")  # rich wraps long paths at the terminal width


def _comparable(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in metrics]


def _assert_folder_parses(run_dir: Path) -> None:
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text())  # every JSON file (manifest, checkpoints) is whole
    read_jsonl(run_dir / "metrics.jsonl")  # at worst a truncated last line, which read_jsonl drops


@pytest.fixture(scope="module")
def uninterrupted(workspace: dict[str, Any]) -> Path:
    out = workspace["root"] / "straight"
    r = _run(workspace, "train", str(workspace["recipe"]), f"output.dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "resume-test-s3"


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(workspace: dict[str, Any],
                                                       uninterrupted: Path) -> None:
    run_dir = workspace["root"] / "killed" / "resume-test-s3"
    r = _stop_after_first_checkpoint(workspace, run_dir, signal.SIGKILL)
    assert r.returncode == -signal.SIGKILL
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running"  # a killed run never claims to be completed
    assert not (run_dir / "model" / "model.safetensors").exists()
    _assert_folder_parses(run_dir)
    assert len(read_jsonl(run_dir / "metrics.jsonl")) < STEPS

    r = _run(workspace, "train", str(run_dir / "recipe.yaml"), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"checkpoint-{CHECKPOINT_EVERY}" in _unwrapped(r.stdout)  # says where it resumed from
    assert "Running custom reward code from the recipe: rb_test_reward:reward" in r.stdout

    want = sha256_file(uninterrupted / "model" / "model.safetensors")
    assert sha256_file(run_dir / "model" / "model.safetensors") == want
    resumed, straight = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(uninterrupted / "metrics.jsonl")
    assert [m["step"] for m in resumed] == list(range(1, STEPS + 1))
    assert _comparable(resumed) == _comparable(straight)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and len(manifest["resumed_at"]) == 1
    assert manifest["final_model_sha256"] == json.loads((uninterrupted / "manifest.json").read_text())[
        "final_model_sha256"]


@pytest.mark.slow
def test_ctrl_c_marks_interrupted_keeps_checkpoint_and_says_how_to_resume(
    workspace: dict[str, Any], uninterrupted: Path
) -> None:
    run_dir = workspace["root"] / "ctrlc" / "resume-test-s3"
    r = _stop_after_first_checkpoint(workspace, run_dir, signal.SIGINT)
    assert r.returncode == 130, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert "--resume" in r.stdout and str(run_dir / "recipe.yaml") in _unwrapped(r.stdout)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["ended_at"]
    _assert_folder_parses(run_dir)
    ckpt = run_dir / "checkpoints" / f"checkpoint-{CHECKPOINT_EVERY}"
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == CHECKPOINT_EVERY

    r = _run(workspace, "train", str(run_dir / "recipe.yaml"), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sha256_file(run_dir / "model" / "model.safetensors") == sha256_file(
        uninterrupted / "model" / "model.safetensors")


@pytest.mark.slow
def test_resume_of_completed_run_is_refused(workspace: dict[str, Any], uninterrupted: Path) -> None:
    r = _run(workspace, "train", str(uninterrupted / "recipe.yaml"), "--resume")
    assert r.returncode == 2 and "already completed" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------- fast, in-process checks of the resume helpers


class _Run:
    def __init__(self, root: Path) -> None:
        self.dir = root
        self.checkpoint_dir = root / "checkpoints"
        self.metrics_path = root / "metrics.jsonl"


def _make_checkpoint(run: _Run, step: int, complete: bool) -> Path:
    path = run.checkpoint_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


@pytest.mark.parametrize(
    ("checkpoints", "expected", "left"),
    [
        ([], None, []),
        ([(4, True)], 4, [4]),
        ([(4, True), (8, True)], 8, [4, 8]),
        ([(4, True), (8, False)], 4, [4]),  # killed while saving step 8: the partial folder goes
        ([(8, False)], None, []),
        ([(4, True), (10, True), (8, False)], 10, [4, 8, 10]),  # numeric, not lexical, order
    ],
)
def test_last_checkpoint_skips_incomplete(tmp_path: Path, checkpoints: list[tuple[int, bool]],
                                          expected: int | None, left: list[int]) -> None:
    from rlbench_cli.training.checkpoints import last_checkpoint

    run = _Run(tmp_path)
    for step, complete in checkpoints:
        _make_checkpoint(run, step, complete)
    if checkpoints:
        (run.checkpoint_dir / "README.md").write_text("model card")
    got = last_checkpoint(run)  # type: ignore[arg-type]
    assert (got.name if got else None) == (f"checkpoint-{expected}" if expected else None)
    remaining = sorted(int(p.name.split("-")[1]) for p in run.checkpoint_dir.glob("checkpoint-*")) \
        if run.checkpoint_dir.exists() else []
    assert remaining == left


def test_truncate_metrics_keeps_rows_up_to_checkpoint_and_survives_torn_tail(tmp_path: Path) -> None:
    from rlbench_cli.training.checkpoints import restore_rollout_counters, truncate_metrics

    run = _Run(tmp_path)
    lines = [json.dumps({"step": s, "samples": 8 * s, "gen_tokens": 50 * s}) for s in range(1, 7)]
    run.metrics_path.write_text("\n".join(lines) + '\n{"step": 7, "sampl')  # killed mid-append
    kept = truncate_metrics(run, 4)  # type: ignore[arg-type]
    assert [r["step"] for r in kept] == [1, 2, 3, 4]
    assert [r["step"] for r in read_jsonl(run.metrics_path)] == [1, 2, 3, 4]

    class Trainer:
        _rb_samples = 0
        _rb_gen_tokens = 0

    t = Trainer()
    restore_rollout_counters(t, kept)
    assert (t._rb_samples, t._rb_gen_tokens) == (32, 200)
    assert truncate_metrics(run, 0) == []  # no checkpoint: start over with an empty log  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prompts", "mini", "every", "ok"),
    [(4, 2, 4, True), (4, 2, 2, True), (4, 2, 3, False), (8, 2, 6, False), (8, 2, 8, True),
     (4, None, 3, True), (4, 1, 3, False), (4, 2, 0, True)],
)
def test_checkpoints_must_fall_on_rollout_boundaries(tmp_path: Path, prompts: int, mini: int | None,
                                                    every: int, ok: bool) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nalgorithm: {name: grpo}\n")
    overrides = [f"rollout.prompts_per_batch={prompts}", "rollout.n=2", "optim.micro_batch_size=2",
                 f"output.checkpoint_every={every}"] + ([f"optim.mini_batch_prompts={mini}"] if mini else [])
    if ok:
        load_recipe(path, overrides)
        return
    with pytest.raises(UserError) as e:
        load_recipe(path, overrides)
    steps = prompts // (mini or prompts)
    assert "checkpoint_every" in str(e.value) and "rollout" in str(e.value)
    suggested = int(str(e.value).split("output.checkpoint_every=")[1].split()[0])
    assert suggested % steps == 0 and suggested > every  # the suggestion is itself valid


def test_resume_refuses_a_changed_recipe_but_allows_training_longer(tmp_path: Path) -> None:
    from rlbench_cli.config import recipe_from_dict, recipe_to_yaml
    from rlbench_cli.errors import UserError
    from rlbench_cli.training.context import RunContext, check_same_recipe

    base = {"name": "r", "algorithm": {"name": "grpo"}, "optim": {"lr": 1e-5, "max_steps": 4},
            "output": {"dir": str(tmp_path)}}
    run_dir = tmp_path / "r-s0"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text(recipe_to_yaml(recipe_from_dict(base, "t"), "cmd"))
    longer = recipe_from_dict({**base, "optim": {"lr": 1e-5, "max_steps": 8}}, "t")
    check_same_recipe(RunContext(longer, run_dir, "cmd"))  # no error: training longer is a resume
    changed = recipe_from_dict({**base, "optim": {"lr": 3e-5, "max_steps": 4}}, "t")
    with pytest.raises(UserError, match=r"optim\.lr"):
        check_same_recipe(RunContext(changed, run_dir, "cmd"))
