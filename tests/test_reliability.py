"""Issue 15 reliability, fast in-process checks: run-folder lock, model-folder integrity, zero-valued options,
options and paths checked before work, hints that name real flags and keys, seeds folders checked up front,
file modes, and the console (--version, -h, plain output off a terminal).

The real-process versions (two writers, SIGTERM, full disk, broken models) are in test_reliability_processes.py.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from rlbench_cli.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


# ------------------------------------------------------------------------------------------ 1. run-folder lock

HOLD = """
import sys, time
from pathlib import Path
from rlbench_cli.runlock import RunLock
with RunLock(Path(sys.argv[1]), "train", command="rlbench train x.yaml"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_lock_refuses_a_second_writer_naming_the_live_process(tmp_path: Path) -> None:
    from rlbench_cli.runlock import RunLock

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError) as e:
            RunLock(tmp_path / "run", "eval").acquire()
        assert f"PID {holder.pid}" in str(e.value) and socket.gethostname() in str(e.value)
        assert "rlbench train" in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    # The holder died by SIGKILL: its record stays, the kernel dropped the flock. Reported, then taken over.
    warnings: list[str] = []
    with RunLock(tmp_path / "run", "eval", warn=warnings.append):
        assert len(warnings) == 1 and "stale lock" in warnings[0] and f"PID {holder.pid}" in warnings[0]
        assert "no longer running" in warnings[0]
    assert not (tmp_path / "run" / ".rlbench.lock").exists()  # released cleanly


def test_lock_from_another_host_is_reported_not_broken(tmp_path: Path) -> None:
    from rlbench_cli.runlock import RunLock

    run = tmp_path / "run"
    run.mkdir()
    (run / ".rlbench.lock").write_text(json.dumps({"what": "train", "pid": 4242, "host": "node-17",
                                                    "started_at": "2026-01-01T00:00:00"}))
    with pytest.raises(UserError) as e:
        RunLock(run, "train").acquire()
    assert "node-17" in str(e.value) and "PID 4242" in str(e.value) and "delete" in str(e.value)
    assert (run / ".rlbench.lock").exists()  # left for the user to decide


def test_overwrite_keeps_the_lock_file(tmp_path: Path) -> None:
    from rlbench_cli.runlock import RunLock, clear_run_folder

    run = tmp_path / "run"
    with RunLock(run, "train"):
        (run / "metrics.jsonl").write_text("{}\n")
        (run / "model").mkdir()
        clear_run_folder(run)
        assert sorted(p.name for p in run.iterdir()) == [".rlbench.lock"]


# ------------------------------------------------------------------------------------------ 3. model integrity


def _fake_model(folder: Path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    save_file({"w": np.arange(1024, dtype=np.float32)}, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("damage", ["empty", "missing", "truncated", "no-config", "bad-header"])
def test_broken_model_folders_get_one_line(tmp_path: Path, damage: str) -> None:
    from rlbench_cli.evaluation.modelcheck import check_model_folder

    model = _fake_model(tmp_path / "model")
    weights = model / "model.safetensors"
    if damage == "empty":
        for p in model.iterdir():
            p.unlink()
    elif damage == "missing":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "no-config":
        (model / "config.json").unlink()
    elif damage == "bad-header":
        weights.write_bytes(b"\xff" * 64)
    with pytest.raises(UserError) as e:
        check_model_folder(model, fix="retrain")
    assert "\n" not in str(e.value) and "Fix: retrain" in str(e.value)
    check = _fake_model(tmp_path / "ok")
    check_model_folder(check, fix="retrain")  # a whole model passes


def test_run_model_hash_and_status_are_checked(tmp_path: Path) -> None:
    from rlbench_cli.evaluation.modelcheck import check_run_model
    from rlbench_cli.records import sha256_dir

    run = tmp_path / "run"
    _fake_model(run / "model")
    good = sha256_dir(run / "model")
    check_run_model(run, {"status": "completed", "final_model_sha256": good}, good, allow_incomplete=False)
    with pytest.raises(UserError, match="changed since training"):
        check_run_model(run, {"status": "completed", "final_model_sha256": "0" * 64}, good, allow_incomplete=False)
    with pytest.raises(UserError, match="not completed .status: interrupted.*--allow-incomplete"):
        check_run_model(run, {"status": "interrupted"}, good, allow_incomplete=False)
    check_run_model(run, {"status": "interrupted"}, good, allow_incomplete=True)


def test_completed_run_without_model_is_not_told_to_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"kind": "train", "status": "completed"}))
    line = one_error_line(*run_cli("eval", str(run), "--results-dir", str(tmp_path)))
    assert "--resume" not in line and "--overwrite" in line


# ------------------------------------------------------------------------------------------ 5. zero is a value


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--k", "0", "--k"), ("--max-new-tokens", "0", "--max-new-tokens"), ("--top-p", "0", "--top-p"),
    ("--top-p", "1.5", "--top-p"), ("--batch-size", "0", "--batch-size"), ("--temperature", "-1", "--temperature"),
    ("--limit", "0", "--limit"), ("--workers", "-1", "--workers"), ("--timeout", "0", "--timeout"),
])
def test_eval_zero_and_negative_options_are_refused_not_replaced(tmp_path: Path, option: str, value: str,
                                                                  needle: str) -> None:
    line = one_error_line(*run_cli("eval", "no-such-model-folder", option, value, "--results-dir", str(tmp_path)))
    assert needle in line


def test_eval_defaults_only_replace_missing_values() -> None:
    from rlbench_cli.cli import _given

    assert _given(0, 16) == 0 and _given(None, 16) == 16 and _given(0.0, 1.0) == 0.0


# --------------------------------------------------------------------------- 6. paths and options checked first


@pytest.mark.parametrize(("content", "needle"), [
    ('{"completion": "é", "gold": "1"}\n'.encode("latin-1"), "UTF-8"),
    ('{"completion": "1", "gold": "1"}\n'.encode("utf-16"), "UTF-16"),
    (b"\x00\x01\x02\xff\xfe\x00binary", "binary"),
])
def test_grade_refuses_non_utf8_files_in_one_line(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    assert needle in one_error_line(*run_cli("grade", str(path), "--workers", "0"))


@pytest.mark.parametrize(("args", "needle"), [
    (["--timeout", "0"], "--timeout"), (["--workers", "-1"], "--workers"),
    (["--output", "{tmp}/missing/x.jsonl"], "--output"),
])
def test_grade_checks_options_and_output_before_grading(tmp_path: Path, args: list[str], needle: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"completion": "\\\\boxed{1}", "gold": "1"}\n')
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert needle in one_error_line(*run_cli("grade", str(path), *args))
    assert not (tmp_path / "in.graded.jsonl").exists() and not (tmp_path / "missing").exists()


def test_compare_baseline_on_non_numeric_count_is_one_line(tmp_path: Path) -> None:
    for name, n_correct in (("a-s0", 1), ("b-s0", "many")):
        run = tmp_path / name
        (run / "eval" / "testbed_easy").mkdir(parents=True)
        (run / "manifest.json").write_text(json.dumps({"kind": "train", "name": name, "recipe_name": name[0],
                                                       "label": name[0], "status": "completed", "seed": 0}))
        summary = {"benchmark": "testbed_easy", "display_name": "Easy", "status": "completed",
                   "settings": {"k": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8,
                                "prompt_template": "plain", "backend": "hf", "seed": 0},
                   "data": {"sha256": "x", "n_problems": 2}, "grader": {"version": "1"},
                   "metrics": {"mean@k": 0.5, "mean@k_se": 0.1, "k": 2, "n_problems": 2},
                   "per_problem": [{"id": "p0", "n": 2, "n_correct": n_correct, "maj_correct": True},
                                   {"id": "p1", "n": 2, "n_correct": 1, "maj_correct": False}]}
        (run / "eval" / "testbed_easy" / "summary.json").write_text(json.dumps(summary))
    code, out, err = run_cli("compare", str(tmp_path), "--baseline", "a")
    assert "Traceback" not in out + err and code in (0, 2), err
    if code == 2:
        assert "n_correct" in one_error_line(code, out, err)
    else:
        assert "n_correct" in out + err  # skipped with a warning naming the bad field


# ------------------------------------------------------------------------------------------- 7. hints


def _cli_options() -> set[str]:
    import typer

    from rlbench_cli.cli import app

    group = typer.main.get_command(app)
    names: set[str] = set()

    def walk(cmd) -> None:  # type: ignore[no-untyped-def]
        for p in cmd.params:
            names.update(o for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(group)
    return names


def _recipe_keys() -> set[str]:
    from rlbench_cli.config import reference_rows

    return {row[0] for row in reference_rows()}


def test_every_fix_hint_names_real_flags_and_recipe_keys() -> None:
    options, keys = _cli_options(), _recipe_keys()
    sections = {k.split(".")[0] for k in keys}
    bad: list[str] = []
    for path in sorted((REPO / "src").rglob("*.py")):
        text = path.read_text()
        for hint in re.findall(r'fix=((?:f?"[^"\n]*"\s*)+)', text) + re.findall(r"Fix: [^\n\"]*", text):
            # A `pip install ...` command in a hint carries pip's flags, not rlbench's.
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", re.sub(r"pip install[^\"`]*", "", hint)):
                if flag not in options:
                    bad.append(f"{path.name}: {flag}")
            for key in re.findall(r"\b([a-z_]+\.[a-z_]+(?:\.[a-z_]+)?)=", hint):
                if key.split(".")[0] in sections and key not in keys:
                    bad.append(f"{path.name}: {key}")
            if "lenient=True" in hint:
                bad.append(f"{path.name}: lenient=True")
    assert not bad, bad


def test_reference_doc_ships_and_is_cited() -> None:
    doc = REPO / "docs" / "reference.md"
    assert doc.is_file() and "§1" in doc.read_text()
    for path in [REPO / "README.md", *(REPO / "src").rglob("*.py")]:
        text = path.read_text()
        assert not re.search(r"(?<!docs/)REFERENCE\.md", text), path


# ------------------------------------------------------------------------------------------- 8. seeds, modes


def test_seeds_checks_every_folder_before_the_first_run(tmp_path: Path, tiny_random_model_dir: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: s\nalgorithm: {{name: grpo}}\nmodel: {{path: {tiny_random_model_dir}}}\n"
                      f"output: {{dir: {tmp_path / 'res'}}}\n")
    (tmp_path / "res" / "s-s0").mkdir(parents=True)
    (tmp_path / "res" / "s-s0" / "manifest.json").write_text('{"status": "completed"}')
    line = one_error_line(*run_cli("train", str(recipe), "--seeds", "1,0"))
    assert "s-s0" in line
    assert not (tmp_path / "res" / "s-s1").exists()  # seed 1 never started


def test_plot_pngs_follow_the_umask(tmp_path: Path) -> None:
    from rlbench_cli.compare.plots import _save

    class Fig:
        def savefig(self, path: str, **kw: object) -> None:
            Path(path).write_bytes(b"png")

    old = os.umask(0o022)
    try:
        _save(Fig(), tmp_path / "a.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o644


# ------------------------------------------------------------------------------------------- console


def test_version_and_short_help() -> None:
    from rlbench_cli import __version__

    code, out, _ = run_cli("--version")
    assert code == 0 and __version__ in out
    for args in (["-h"], ["train", "-h"], ["eval", "-h"], ["testbed", "build", "-h"]):
        code, out, err = run_cli(*args)
        assert code == 0 and "Usage" in out, (args, err)
        assert "<bool>" not in out and "BOOLEAN" not in out


def test_one_results_folder_option_with_old_aliases() -> None:
    for command, old in (("train", "--output"), ("eval", "--results")):
        code, out, _ = run_cli(command, "--help")
        assert "--results-dir" in out and old in out, command
    code, out, _ = run_cli("compare", "--help")
    assert "--results-dir" in out


def test_recipes_is_one_line_per_recipe_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from rlbench_cli import cli

    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=80, force_terminal=True, color_system=None))
    cli.recipes(keys=False)
    shipped = sorted((REPO / "recipes").rglob("*.yaml"))
    lines = [line for line in buf.getvalue().splitlines() if line.strip()]
    assert len(lines) == len(shipped) + 1  # a header, then one line each
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)


def test_tables_are_whole_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console
    from rich.table import Table

    from rlbench_cli.console import setup_console

    monkeypatch.setenv("COLUMNS", "80")  # SLURM and CI often set it; a log file still gets whole lines
    buf = io.StringIO()
    console = Console(file=buf)
    setup_console(console)
    table = Table("Method", *(f"benchmark-{i}" for i in range(10)), "Average")
    table.add_row("Reinforce-Rej", *("56.4 ± 1.2" for _ in range(10)), "56.4 ± 0.7")
    console.print(table)
    text = buf.getvalue()
    assert "Average" in text and "Reinforce-Rej" in text and "…" not in text
    assert len([line for line in text.splitlines() if "Reinforce-Rej" in line]) == 1


def test_dry_run_yaml_and_command_are_not_wrapped_off_a_terminal(tmp_path: Path) -> None:
    long = "x" * 150
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f'name: r\ndescription: "{long}"\nalgorithm: {{name: grpo}}\nmodel: {{path: testbed}}\n')
    code, out, err = run_cli("train", str(recipe), "--dry-run", "--launcher", "accelerate")
    assert code == 0, err
    assert any(long in line for line in out.splitlines())
    assert any(line.startswith("Launch command:") and "--resume" not in line and "accelerate" in line
               and str(recipe) in line for line in out.splitlines())


def test_plain_progress_off_a_terminal() -> None:
    import io

    from rlbench_cli.console import PlainProgress

    buf = io.StringIO()
    now = [0.0]
    p = PlainProgress(buf, "math500", total=100, every_s=5.0, clock=lambda: now[0])
    for t, n in ((1.0, 10), (2.0, 20), (6.5, 30), (7.0, 40), (9.0, 50)):
        now[0] = t
        p.update(n)
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("math500: 10/100") and "━" not in buf.getvalue()
    assert len(lines) == 3 and lines[-1].startswith("math500: 50/100")


def _base_target(root: Path):  # type: ignore[no-untyped-def]
    from rlbench_cli.evaluation.runner import Target

    return Target(kind="base", model_path=root, model_ref="testbed", model_sha256="x", root=root / "base-t",
                  name="base-t", label="Base", recipe_name="base-t")


def test_failed_base_model_eval_is_not_marked_completed(tmp_path: Path) -> None:
    from rlbench_cli.evaluation.guard import eval_guard

    tgt = _base_target(tmp_path)
    with pytest.raises(RuntimeError), eval_guard(tgt, command="rlbench eval testbed", console=None):
        assert json.loads((tgt.root / "manifest.json").read_text())["status"] == "running"
        raise RuntimeError("generation crashed")
    manifest = json.loads((tgt.root / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "generation crashed" in manifest["error"]
    assert not (tgt.root / ".rlbench.lock").exists() and not (tgt.root / ".rlbench-reserve").exists()
    with eval_guard(tgt, command="rlbench eval testbed", console=None):
        pass
    assert json.loads((tgt.root / "manifest.json").read_text())["status"] == "completed"


def test_eval_table_shows_standard_errors_for_pass_and_maj() -> None:
    import io

    from rich.console import Console

    from rlbench_cli.evaluation.metrics import summarize
    from rlbench_cli.evaluation.runner import _print_table

    per = [{"id": str(i), "n": 4, "n_correct": c, "maj_correct": c > 2} for i, c in enumerate([0, 1, 3, 4])]
    buf = io.StringIO()
    _print_table(Console(file=buf, width=200), {"b": {"display_name": "B", "data": {"n_problems": 4},
                                                      "metrics": summarize(per), "per_problem": per}}, 4)
    row = next(line for line in buf.getvalue().splitlines() if "│ B" in line or line.strip().startswith("B"))
    # pass@4: 3 of 4 problems solved -> 75.0 ± 25.0; maj@4: 2 of 4 -> 50.0 ± 28.9 (SE of 0/1 scores, n - 1)
    assert "75.0 ± 25.0" in row and "50.0 ± 28.9" in row, row
