"""The grader as an eval setting: `rlbench eval RUN --regrade [--grader]` rewrites stored verdicts and summaries,
summaries name their grader, `rlbench compare` never puts two graders in one column, `rlbench grade --explain`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from rlbench_cli.errors import UserError
from rlbench_cli.evaluation.benchmarks import load_benchmark
from rlbench_cli.evaluation.grader import GRADER_VERSION, PAPER_GRADER_VERSION
from rlbench_cli.evaluation.metrics import summarize
from rlbench_cli.evaluation.regrade import regrade_run
from rlbench_cli.evaluation.runner import resolve_target

OLD_VERSION = "rlbench-grader/1+math-verify-0.9.0"
# (problem, gold, completions with the verdicts the old grader stored)
PROBLEMS = [("p1", "4.5e33", [("\\boxed{4.5 \\times 10^{33}}", False), ("\\boxed{45}", False)]),
            ("p2", "7", [("\\boxed{7}", True), ("\\boxed{8}", False)])]


def _make_eval(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    lines = [json.dumps({"unique_id": pid, "problem": f"problem {pid}", "answer": gold}) for pid, gold, _ in PROBLEMS]
    (data / "math500.jsonl").write_text("\n".join(lines) + "\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    results = tmp_path / "results"
    out = resolve_target(str(model), results, verify_model=False).root / "eval" / "math500"
    out.mkdir(parents=True)
    bench = load_benchmark("math500", data_dir=data)
    settings = {"k": 2, "data_sha256": bench.sha256, "grader_version": OLD_VERSION, "benchmark": "math500"}
    (out / "settings.json").write_text(json.dumps(settings))
    rows, per_problem = [], []
    for pid, _, comps in PROBLEMS:
        for j, (c, ok) in enumerate(comps):
            rows.append({"problem_id": pid, "sample_idx": j, "completion": c, "pred": None, "correct": ok,
                         "timed_out": False})
        per_problem.append({"id": pid, "n": 2, "n_correct": sum(ok for _, ok in comps), "maj_correct": False})
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"benchmark": "math500", "status": "completed", "data": {"n_problems": 2, "sha256": bench.sha256},
               "grader": {"version": OLD_VERSION, "timeouts": 0, "timeout_s": 5.0}, "metrics": summarize(per_problem),
               "per_problem": per_problem, "timings": {"generation_s": 12.0}}
    (out / "summary.json").write_text(json.dumps(summary))
    return model, results, data, out


def _read(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "summary.json").read_text()), json.loads((out / "settings.json").read_text())


def test_regrade_changes_a_stored_verdict_and_the_summary(tmp_path: Path) -> None:
    model, results, data, out = _make_eval(tmp_path)
    assert json.loads((out / "summary.json").read_text())["metrics"]["mean@k"] == 0.25
    [rep] = regrade_run(str(model), results_dir=results, grader="rlbench", workers=0, data_dir=data)
    assert (rep["samples"], rep["changed"], rep["became_correct"], rep["became_wrong"]) == (4, 1, 1, 0)
    rows, summary, settings = _read(out)
    assert [r["correct"] for r in rows] == [True, False, True, False]
    assert rows[0]["pred"] == "4.5 \\times 10^{33}"
    assert summary["metrics"]["mean@k"] == 0.5 and summary["per_problem"][0]["n_correct"] == 1
    assert summary["grader"]["name"] == "rlbench" and summary["grader"]["version"] == GRADER_VERSION
    assert summary["timings"] == {"generation_s": 12.0}  # the rest of the summary is kept
    assert settings["grader"] == "rlbench" and settings["grader_version"] == GRADER_VERSION

    # The paper's plain Math-Verify reads the gold `4.5e33` as 4.5*e*33: the verdict flips back.
    [rep] = regrade_run(str(model), results_dir=results, grader="math_verify", workers=0, data_dir=data)
    assert rep["changed"] == 1 and rep["became_wrong"] == 1
    rows, summary, settings = _read(out)
    assert summary["metrics"]["mean@k"] == 0.25 and summary["grader"]["name"] == "math_verify"
    assert summary["grader"]["version"] == PAPER_GRADER_VERSION and settings["grader"] == "math_verify"

    # Same grader again: nothing changes.
    [rep] = regrade_run(str(model), results_dir=results, grader="math_verify", workers=0, data_dir=data)
    assert rep["changed"] == 0


def test_regrade_cli_reports_per_benchmark(tmp_path: Path) -> None:
    model, results, data, out = _make_eval(tmp_path)
    code, stdout, _ = run_cli("eval", str(model), "--regrade", "--results", str(results), "--data-dir", str(data),
                              "--workers", "0")
    assert code == 0 and "math500" in stdout and "changed" in stdout
    assert json.loads((out / "summary.json").read_text())["metrics"]["mean@k"] == 0.5


def test_regrade_bad_input_is_one_line(tmp_path: Path) -> None:
    model, results, data, out = _make_eval(tmp_path)
    code, _, err = run_cli("eval", str(model), "--regrade", "--grader", "sympy", "--results", str(results))
    assert code == 2 and "unknown grader" in err
    (data / "math500.jsonl").write_text(json.dumps({"unique_id": "p1", "problem": "x", "answer": "1"}) + "\n")
    code, _, err = run_cli("eval", str(model), "--regrade", "--results", str(results), "--data-dir", str(data))
    assert code == 2 and "sha256" in err and "Traceback" not in err
    assert json.loads((out / "samples.jsonl").read_text().splitlines()[0])["correct"] is False  # untouched


def test_compare_never_mixes_graders(tmp_path: Path) -> None:
    from rlbench_cli.compare.loader import _signature

    a = {"settings": {}, "data": {"sha256": "x"}, "grader": {"name": "rlbench", "version": GRADER_VERSION}}
    b = {"settings": {}, "data": {"sha256": "x"}, "grader": {"name": "math_verify", "version": PAPER_GRADER_VERSION}}
    old = {"settings": {}, "data": {"sha256": "x"}, "grader": {"version": PAPER_GRADER_VERSION}}
    assert _signature(a) != _signature(b)  # different signature -> different columns
    assert dict(_signature(old))["grader_name"] == "math_verify"


def test_grade_explain(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "completion": "So \\boxed{4.5 \\times 10^{33}}.", "gold": "4.5e33"}) + "\n"
                   + json.dumps({"id": "b", "completion": "The answer is $2$.", "gold": "2\\mathrm{e}"}) + "\n")
    code, stdout, _ = run_cli("grade", str(src), "--explain")
    assert code == 0
    a, b = stdout.split("[b]")
    assert "CORRECT" in a and "4.5\\times10^{33}" in a and "decided by:" in a and "from box" in a
    assert "gold parsed by Math-Verify" in a
    assert "WRONG" in b and "unboxed" in b
    code, stdout, _ = run_cli("grade", str(src), "--explain", "--grader", "math_verify")
    # Plain Math-Verify: misses the Minerva-style gold, and its parse stops at \mathrm{e} (accepts 2 for 2e).
    assert code == 0 and "paper's call" in stdout and "[a] WRONG" in stdout and "[b] CORRECT" in stdout


def test_eval_records_its_grader_and_regrade_of_testbed_changes_nothing(tiny_random_model_dir: Path,
                                                                        tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from rlbench_cli.evaluation.runner import run_eval

    settings = {"benchmarks": ["testbed_easy"], "k": 3, "max_new_tokens": 6, "limit": 4, "grader_workers": 0,
                "seed": 5, "console": Console(file=io.StringIO())}
    summary = run_eval(str(tiny_random_model_dir), results_dir=tmp_path, **settings)["testbed_easy"]
    assert summary["grader"]["name"] == "rlbench" and summary["grader"]["version"] == GRADER_VERSION
    [rep] = regrade_run(str(tiny_random_model_dir), results_dir=tmp_path, workers=0)
    assert rep["samples"] == 12 and rep["changed"] == 0  # testbed answers are integers: nothing to fix
    other = tmp_path / "paper"
    summary = run_eval(str(tiny_random_model_dir), results_dir=other, grader="math_verify",
                       **settings)["testbed_easy"]
    assert summary["grader"]["name"] == "math_verify" and summary["grader"]["version"] == PAPER_GRADER_VERSION
    # Resuming those samples under another grader would mix two graders in one file: refused, with the fix.
    with pytest.raises(UserError, match="--regrade --grader rlbench"):
        run_eval(str(tiny_random_model_dir), results_dir=other, grader="rlbench", **settings)
