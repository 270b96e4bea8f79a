"""Issue 15 reliability with real processes: two writers on one run folder, SIGTERM in train and eval, a full
disk, and broken model folders. Each `rlbench` here is a subprocess (`python -m rlbench_cli.cli`) on a tiny
random Llama; runs are short (6 steps, a reward that sleeps so a run can be caught while it is live).

The full disk is simulated: `sitecustomize.py` in the workspace, active only when RB_FAULT_DISK_DIR is set,
gives files opened by Python under that folder a byte budget and fails writes beyond it with ENOSPC (errno
28), refunding deleted files' bytes, as a filesystem would. Writes from C++/Rust (torch.save, safetensors) are
not intercepted, so the test proves the handling of an ENOSPC that reaches Python, not that of every writer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rlbench_cli.records import read_jsonl

pytestmark = pytest.mark.slow

STEPS = 6
REWARD_MODULE = '''
import os, time

def reward(prompts, completions, **kwargs):
    hold = os.environ.get("RB_TEST_HOLD")  # the test holds the run in its first rollout while this file exists
    if hold:
        open(hold + ".reached", "w").close()
        start = time.time()
        while os.path.exists(hold) and time.time() - start < 120:
            time.sleep(0.05)
    return [float(sum(map(ord, c)) % 2) for c in completions]
'''

SITECUSTOMIZE = '''
import os
if os.environ.get("RB_FAULT_DISK_DIR"):
    import errno, io

    _root = os.path.realpath(os.environ["RB_FAULT_DISK_DIR"])
    _state = {"free": int(os.environ["RB_FAULT_DISK_BYTES"])}
    _open, _unlink = io.open, os.unlink

    def _path_of(file):
        if isinstance(file, int):
            try:
                return os.readlink(f"/proc/self/fd/{file}")
            except OSError:
                return ""
        return os.path.realpath(os.fspath(file)) if isinstance(file, (str, bytes, os.PathLike)) else ""

    class _Budgeted:
        def __init__(self, f):
            self._f = f
        def write(self, data):
            n = len(data.encode() if isinstance(data, str) else data)
            if n > _state["free"]:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            _state["free"] -= n
            return self._f.write(data)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self._f.__exit__(*exc)
        def __iter__(self):
            return iter(self._f)
        def __getattr__(self, name):
            return getattr(self._f, name)

    def open(file, mode="r", *args, **kwargs):
        f = _open(file, mode, *args, **kwargs)
        path = _path_of(file)
        if any(c in mode for c in "wax+") and path.startswith(_root):
            return _Budgeted(f)
        return f

    def unlink(path, *args, **kwargs):
        real = os.path.realpath(os.fspath(path)) if not isinstance(path, int) else ""
        size = os.path.getsize(real) if real.startswith(_root) and os.path.isfile(real) else 0
        _unlink(path, *args, **kwargs)
        _state["free"] += size

    import builtins
    io.open = builtins.open = open
    os.unlink = os.remove = unlink
'''


def _recipe(model_dir: Path, data: Path, out: Path, name: str, checkpoint_every: int) -> str:
    return f"""
name: {name}
seed: 3
torch_threads: 1
model: {{path: {model_dir}}}
data: {{source: jsonl, path: {data}, prompt_template: raw}}
algorithm: {{name: grpo}}
rollout: {{prompts_per_batch: 4, n: 2, max_new_tokens: 8}}
optim: {{lr: 0.01, mini_batch_prompts: 2, micro_batch_size: 4, max_steps: {STEPS}}}
reward: {{function: "rb_test_reward:reward", correct: 1.0, incorrect: 0.0}}
eval: {{benchmarks: [testbed_easy], k: 2, max_new_tokens: 8, limit: 2}}
output: {{dir: {out}, checkpoint_every: {checkpoint_every}}}
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, tiny_random_model_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("reliability")
    (root / "rb_test_reward.py").write_text(REWARD_MODULE)
    (root / "sitecustomize.py").write_text(SITECUSTOMIZE)
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps({"problem": f"{i}+{i}=", "answer": str(2 * i)}) + "\n" for i in range(16)))
    (root / "ckpt.yaml").write_text(_recipe(tiny_random_model_dir, data, root / "results", "rel", 4))
    (root / "plain.yaml").write_text(_recipe(tiny_random_model_dir, data, root / "full", "full", 0))
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    env.pop("COLUMNS", None)
    return {"root": root, "env": env, "run": root / "results" / "rel-s3"}


def _start(ws: dict[str, Any], *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlbench_cli.cli", *args], cwd=ws["root"],
                            env={**ws["env"], **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(ws: dict[str, Any], *args: str, **env: str) -> subprocess.CompletedProcess:
    p = _start(ws, *args, **env)
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def _wait_for(p: subprocess.Popen, cond: Any, what: str, limit: float = 240) -> None:
    deadline = time.time() + limit
    while not cond():
        assert p.poll() is None, f"process ended before {what}:\n{p.stderr.read()[-3000:]}"  # type: ignore[union-attr]
        assert time.time() < deadline, f"no {what} within {limit} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def trained(ws: dict[str, Any]) -> Path:
    """Items 1 and 2 on one live run: second writers refused while it runs, then SIGTERM, then --resume."""
    run, hold = ws["run"], ws["root"] / "hold"
    hold.touch()
    live = _start(ws, "train", "ckpt.yaml", RB_TEST_HOLD=str(hold))
    try:
        _wait_for(live, Path(f"{hold}.reached").exists, "the first rollout")
        ws["live_pid"] = live.pid
        ws["second_train"] = _run(ws, "train", "ckpt.yaml", "--overwrite")
        ws["second_eval"] = _run(ws, "eval", str(run), "--allow-incomplete")
        live.send_signal(signal.SIGTERM)  # during step 1; the next safe point is step 2 (end of the rollout)
        time.sleep(0.5)
        hold.unlink()
        out, err = live.communicate(timeout=120)
    finally:
        if live.poll() is None:
            live.kill()
    ws["term"] = subprocess.CompletedProcess(live.args, live.returncode, out, err)
    ws["term_manifest"] = json.loads((run / "manifest.json").read_text())
    ws["term_metrics"] = read_jsonl(run / "metrics.jsonl")
    ws["term_log"] = (run / "train.log").read_text()
    ws["term_checkpoints"] = sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*"))
    r = _run(ws, "train", str(run / "recipe.yaml"), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    ws["resume"] = r
    return run


def test_second_writer_is_refused_naming_the_live_process(ws: dict[str, Any], trained: Path) -> None:
    for key in ("second_train", "second_eval"):
        line = _one_error_line(ws[key])
        assert f"PID {ws['live_pid']}" in line and "rlbench train" in line, line
    assert [m["step"] for m in read_jsonl(trained / "metrics.jsonl")] == list(range(1, STEPS + 1))  # once each


def test_sigterm_checkpoints_at_the_next_safe_point_and_resumes(ws: dict[str, Any], trained: Path) -> None:
    r = ws["term"]
    assert r.returncode == 143, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "terminated (SIGTERM)" in r.stderr
    resume = f"rlbench train {trained / 'recipe.yaml'} --resume"
    assert resume in r.stdout.replace("\n", "") and resume in ws["term_log"]
    manifest = ws["term_manifest"]
    assert manifest["status"] == "interrupted" and "SIGTERM" in manifest["error"]
    # Stopped at the end of the first rollout (2 optimizer steps), with a checkpoint there although
    # output.checkpoint_every is 4: the checkpoint was made for the SIGTERM.
    assert len(ws["term_metrics"]) == 2 and ws["term_checkpoints"] == ["checkpoint-2"]
    stopped_at = 2
    assert f"checkpoint-{stopped_at}" in ws["resume"].stdout.replace("\n", "")
    assert json.loads((trained / "manifest.json").read_text())["status"] == "completed"


def test_console_shows_rlbench_lines_and_train_log_gets_the_rest(ws: dict[str, Any], trained: Path) -> None:
    console = ws["resume"].stdout + ws["resume"].stderr
    for noise in ("{'loss'", "'learning_rate'", "FutureWarning", "Loading weights", "Writing model shards",
                  "lm_head", "━"):  # the last: off a terminal, progress is plain lines, not a bar
        assert noise not in console, noise
    assert "Run complete" in console and f"steps: {STEPS}/{STEPS}" in console
    log = (trained / "train.log").read_text()
    assert all(f"step {i} {{" in log for i in range(1, STEPS + 1))  # one metrics line per step


def _broken_copy(ws: dict[str, Any], trained: Path, name: str) -> Path:
    copy = ws["root"] / "broken" / name
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    return copy


@pytest.mark.parametrize("damage", ["empty", "truncated", "missing", "flipped", "incomplete"])
def test_broken_model_gets_one_line_and_leaves_no_settings(ws: dict[str, Any], trained: Path, damage: str) -> None:
    run = _broken_copy(ws, trained, damage)
    weights = run / "model" / "model.safetensors"
    if damage == "empty":
        shutil.rmtree(run / "model")
        (run / "model").mkdir()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "missing":
        weights.unlink()
    elif damage == "flipped":
        data = bytearray(weights.read_bytes())
        data[-4096:] = bytes(b ^ 0xFF for b in data[-4096:])
        weights.write_bytes(bytes(data))
    elif damage == "incomplete":
        manifest = json.loads((run / "manifest.json").read_text())
        (run / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    line = _one_error_line(_run(ws, "eval", str(run)))
    assert str(run) in line
    assert not (run / "eval" / "testbed_easy" / "settings.json").exists()


def test_sigterm_in_eval_and_a_second_eval(ws: dict[str, Any], trained: Path) -> None:
    samples = trained / "eval" / "testbed_easy" / "samples.jsonl"
    args = ("eval", str(trained), "--k", "16", "--limit", "100", "--batch-size", "1", "--workers", "0")
    live = _start(ws, *args)
    try:
        _wait_for(live, samples.exists, "a first chunk of samples")
        second = _run(ws, *args)
        live.send_signal(signal.SIGTERM)
        out, err = live.communicate(timeout=120)
    finally:
        if live.poll() is None:
            live.kill()
    line = _one_error_line(second)
    assert f"PID {live.pid}" in line and "rlbench eval" in line
    assert live.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "Resume with: rlbench eval" in out.replace("\n", "")
    status = json.loads((trained / "eval" / "status.json").read_text())
    assert status["status"] == "interrupted" and "SIGTERM" in status["error"]
    assert 0 < len(read_jsonl(samples)) < 1600


def test_full_disk_is_one_line_exit_2_and_a_failed_status(ws: dict[str, Any]) -> None:
    folder = ws["root"] / "full"
    from rlbench_cli.diskspace import RESERVE_BYTES

    r = _run(ws, "train", "plain.yaml", RB_FAULT_DISK_DIR=str(folder), RB_FAULT_DISK_BYTES=str(RESERVE_BYTES + 12_000))
    line = _one_error_line(r)
    assert "disk is full" in line and "--resume" in line
    run = folder / "full-s3"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"].startswith("disk full")
    assert not (run / ".rlbench-reserve").exists() and not (run / ".rlbench.lock").exists()
    assert not (run / "checkpoints").exists()  # checkpointing off: no empty checkpoints/ folder
