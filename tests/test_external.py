"""`rlbench eval --completions`: completions from vLLM / verl / OpenRLHF dumps graded into ordinary result folders.

Fast tests use testbed_easy (generated in-process) and the in-process grader (--workers 0). The slow test grades
rlbench's own samples as an external file and checks that compare puts both in one column with equal numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from rlbench_cli.evaluation.benchmarks import load_benchmark
from rlbench_cli.prompts import render_prompt

PROBLEMS = load_benchmark("testbed_easy", limit=4).problems
# Per problem, two completions: right/right, right/wrong, wrong/wrong, right/wrong -> mean@2 = (2+1+0+1)/8
ANSWERS = [(True, True), (True, False), (False, False), (True, False)]


def completion(gold: str, right: bool) -> str:
    return f" {gold}" if right else f" {int(gold) + 1}"


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def vllm_rows() -> list[dict]:  # a vLLM RequestOutput dump: prompt + outputs[].text
    return [{"prompt": render_prompt(p.problem, "plain"), "outputs": [{"text": completion(p.gold, r)} for r in a]}
            for p, a in zip(PROBLEMS, ANSWERS, strict=True)]


def verl_rows() -> list[dict]:  # verl _dump_generations: input (chat-templated), output, gts, score, step
    return [{"input": f"<|im_start|>user\n{p.problem} Let's think step by step.<|im_end|>\n<|im_start|>assistant\n",
             "output": completion(p.gold, r), "gts": p.gold, "score": 1.0, "step": 40}
            for j in range(2) for p, a in zip(PROBLEMS, ANSWERS, strict=True) for r in [a[j]]]


def openrlhf_rows() -> list[dict]:  # OpenRLHF batch_inference: {"input", "output"}, prompts * N
    return [{"input": render_prompt(p.problem, "plain"), "output": completion(p.gold, a[j])}
            for j in range(2) for p, a in zip(PROBLEMS, ANSWERS, strict=True)]


def ids_rows() -> list[dict]:  # rlbench's own shape: problem_id + sample_idx + completion
    return [{"problem_id": p.id, "sample_idx": j, "completion": completion(p.gold, a[j])}
            for p, a in zip(PROBLEMS, ANSWERS, strict=True) for j in (1, 0)]


def grade(path: Path, results: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("eval", "--completions", str(path), "--label", "Other tool", "--benchmarks", "testbed_easy",
                   "--limit", "4", "--workers", "0", "--results", str(results), *extra)


@pytest.mark.parametrize("shape", [vllm_rows, verl_rows, openrlhf_rows, ids_rows])
def test_each_dump_shape_grades_into_a_result_folder(shape, tmp_path: Path) -> None:
    results = tmp_path / "results"
    code, out, err = grade(write(tmp_path / "dump.jsonl", shape()), results)
    assert code == 0, err
    run = results / "external-other-tool-s0"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "external" and manifest["status"] == "completed"
    summary = json.loads((run / "eval" / "testbed_easy" / "summary.json").read_text())
    assert summary["metrics"]["mean@k"] == pytest.approx(4 / 8) and summary["metrics"]["k"] == 2
    assert summary["metrics"]["pass@k"] == pytest.approx(3 / 4)
    assert [p["n_correct"] for p in summary["per_problem"]] == [2, 1, 0, 1]
    assert summary["data"]["sha256"] == load_benchmark("testbed_easy", limit=4).sha256
    samples = [json.loads(line) for line in (run / "eval" / "testbed_easy" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and {s["problem_id"] for s in samples} == {p.id for p in PROBLEMS}
    assert samples[0]["correct"] is True and samples[5]["correct"] is False  # problem 2 sample 1: wrong
    code, out, _ = run_cli("runs", str(results))
    assert "external-other-tool-s0" in out and "50.0" in out


@pytest.mark.parametrize(("edit", "message"), [
    (lambda rows: rows[:2] + ["{not json"] + rows[2:], "dump.jsonl:3: not valid JSON"),
    (lambda rows: rows + [json.dumps({"problem": "Compute 1+1+1+1+1.", "completion": "5"})],
     "dump.jsonl:9: unknown problem"),
    (lambda rows: rows[:-1], "problems have different numbers of completions"),
    (lambda rows: [r for r in rows if PROBLEMS[3].id not in r], "1 of 4 problems have no completion"),
    (lambda rows: rows + [rows[0]], "dump.jsonl:9: duplicate sample 1"),
    (lambda rows: rows + [json.dumps({"problem_id": PROBLEMS[0].id, "sample_idx": 2, "completion": 5})],
     "dump.jsonl:9: completion 'completion' is not a string"),
    (lambda rows: rows + [json.dumps({"problem_id": PROBLEMS[0].id, "sample_idx": 2})],
     "dump.jsonl:9: no completion on the line"),
])
def test_bad_lines_are_one_error_naming_file_and_line(edit, message, tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in ids_rows()]
    path = tmp_path / "dump.jsonl"
    path.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")
    code, _, err = grade(path, tmp_path / "results")
    assert code == 2 and message in " ".join(err.split()), err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "external-other-tool-s0" / "eval").exists()


def test_refusals(tmp_path: Path) -> None:
    path = write(tmp_path / "dump.jsonl", verl_rows())
    rows = verl_rows()
    rows[0]["step"] = 80
    code, _, err = grade(write(tmp_path / "mixed.jsonl", rows), tmp_path / "r")
    assert code == 2 and "mixes training steps" in err
    code, _, err = run_cli("eval", "--completions", str(path), "--benchmarks", "testbed_easy")
    assert code == 2 and "needs --label" in err
    code, _, err = grade(path, tmp_path / "r", "--k", "4")
    assert code == 2 and "--k 4 but the file has 2" in " ".join(err.split())
    assert grade(path, tmp_path / "r")[0] == 0
    assert grade(path, tmp_path / "r")[0] == 0  # the same file again: regraded in place
    code, _, err = grade(write(tmp_path / "other.jsonl", vllm_rows()), tmp_path / "r")
    assert code == 2 and "come from another file" in err


@pytest.mark.slow
def test_compare_tables_external_beside_rlbench_with_equal_numbers(tiny_random_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    from rlbench_cli.compare import run_compare
    from rlbench_cli.evaluation.runner import run_eval

    results = tmp_path / "results"
    settings = dict(k=2, temperature=1.0, top_p=1.0, max_new_tokens=8, prompt_template="plain")
    run_eval(str(tiny_random_model_dir), results_dir=results, benchmarks=["testbed_easy"], limit=6, batch_size=12,
             grader_workers=0, label="Base", **settings)
    own = next(results.glob("base-*/eval/testbed_easy"))
    samples = [json.loads(line) for line in (own / "samples.jsonl").read_text().splitlines()]
    by_id = {p.id: p for p in load_benchmark("testbed_easy", limit=6).problems}
    dump = [{"prompt": render_prompt(by_id[s["problem_id"]].problem, "plain"), "completion": s["completion"]}
            for s in sorted(samples, key=lambda s: (s["problem_id"], s["sample_idx"]))]
    code, _, err = run_cli("eval", "--completions", str(write(tmp_path / "vllm.jsonl", dump)), "--label", "vLLM",
                           "--benchmarks", "testbed_easy", "--limit", "6", "--workers", "0", "--k", "2",
                           "--temperature", "1.0", "--top-p", "1.0", "--max-new-tokens", "8", "--template", "plain",
                           "--results", str(results))
    assert code == 0, err
    table = run_compare(results, fmt="json", output=tmp_path / "t.json")
    assert [c["key"] for c in table["columns"]] == ["testbed_easy", "average"]  # one shared column, no split
    cells = {r["label"]: r["cells"]["testbed_easy"] for r in table["rows"]}
    assert set(cells) == {"Base", "vLLM"}
    assert cells["vLLM"]["value"] == cells["Base"]["value"] and cells["vLLM"]["uncertainty"] == cells["Base"][
        "uncertainty"]
    assert not any("different settings" in w for w in table["warnings"])


def test_verl_dump_on_real_math500_text(tmp_path: Path) -> None:
    """Real MATH500 problems (LaTeX, newlines) found inside Qwen-chat-templated verl inputs."""
    from conftest import require_shared_benchmarks

    data = require_shared_benchmarks()
    problems = load_benchmark("math500", data_dir=data, limit=5).problems
    system = "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
    rows = [{"input": f"{system}<|im_start|>user\n{p.problem} Let's think step by step and output the final answer "
                      f"within \\boxed{{}}.<|im_end|>\n<|im_start|>assistant\n",
             "output": f"So the answer is $\\boxed{{{p.gold}}}$." if i < 4 else "I give up.", "gts": p.gold,
             "score": 0.0, "step": 100}
            for i, p in enumerate(problems)]
    code, _, err = run_cli("eval", "--completions", str(write(tmp_path / "100.jsonl", rows)), "--label", "verl",
                           "--benchmarks", "math500", "--data-dir", str(data), "--limit", "5", "--workers", "0",
                           "--results", str(tmp_path / "r"))
    assert code == 0, err
    summary = json.loads((tmp_path / "r" / "external-verl-s0" / "eval" / "math500" / "summary.json").read_text())
    assert [p["n_correct"] for p in summary["per_problem"]] == [1, 1, 1, 1, 0]
