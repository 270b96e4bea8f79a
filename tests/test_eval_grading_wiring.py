"""The eval runner grades what the backend returned with every benchmark field, and the summary's numbers are the
hand-computed ones.

A stub backend returns fixed completions per (problem, sample) for a small OlympiadBench-format file: right and
wrong answers, majority ties broken either way, a multi-answer set that needs the tolerance, a tolerance item and a
unit item. Catches the runner dropping is_multiple_answer / error / unit before grading, and maj@k counted as "any
sample correct". The real grader grades in-process (grader_workers=0).
"""

from __future__ import annotations

import io
import json
import math
import statistics
from pathlib import Path

import pytest
from rich.console import Console

from rlbench_cli.evaluation import runner
from rlbench_cli.evaluation.generate import Completion, sample_seed

K = 4
SEED = 3
# id -> (OlympiadBench row fields, the K completions' boxed answers, expected per-sample verdicts, majority right?)
ITEMS: dict[str, tuple[dict, list[str], list[bool], bool]] = {
    # 2-2 tie: the answer seen first (right) wins.
    "tie-right-first": ({"final_answer": ["12"]}, ["12", "13", "12", "13"], [True, False, True, False], True),
    # 2-2 tie: the wrong answer is seen first and wins.
    "tie-wrong-first": ({"final_answer": ["5"]}, ["4", "5", "5", "4"], [False, True, True, False], False),
    # one right sample, majority wrong: maj@k is 0 although a sample is right.
    "minority-right": ({"final_answer": ["7"]}, ["8", "8", "7", "9"], [False, False, True, False], False),
    # an unordered set within tolerance: right only with is_multiple_answer AND error passed to the grader.
    "multi-tol": ({"final_answer": ["$2.5, 1.5$"], "is_multiple_answer": True, "error": "0.05"},
                  ["2.49, 1.51", "2.49, 1.51", "1", "2.49, 1.51"], [True, True, False, True], True),
    # numeric tolerance on a single answer.
    "tolerance": ({"final_answer": ["1.5"], "error": "0.05"}, ["1.52", "1.52", "1.7", "1.52"],
                  [True, True, False, True], True),
    # a unit the grader must strip (only when told the unit).
    "unit": ({"final_answer": ["7"], "unit": "J"}, ["7 J", "6 J", "7 J", "7 J"], [True, False, True, True], True),
    "all-wrong": ({"final_answer": ["3"]}, ["2", "2", "4", "1"], [False] * 4, False),
}


class StubBackend:
    """Answers each (problem, sample) with its fixed completion; finds them by the per-sample seed."""

    def __init__(self) -> None:
        self.by_seed = {sample_seed(SEED, "olympiadbench", pid, j): f"So the answer is \\boxed{{{answers[j]}}}."
                        for pid, (_, answers, _, _) in ITEMS.items() for j in range(K)}
        self.calls = 0

    def generate(self, prompts, seeds, *, temperature, top_p, max_new_tokens):
        self.calls += 1
        return [Completion(text=self.by_seed[s], n_tokens=5, finish_reason="stop") for s in seeds]


@pytest.fixture(scope="module")
def evaluated(tiny_random_model_dir, tmp_path_factory) -> tuple[dict, Path]:
    data = tmp_path_factory.mktemp("data")
    rows = [{"id": pid, "question": f"Problem {pid}?", **fields} for pid, (fields, _, _, _) in ITEMS.items()]
    (data / "olympiadbench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = tmp_path_factory.mktemp("results")
    stub = StubBackend()
    mp = pytest.MonkeyPatch()
    mp.setattr(runner, "make_backend", lambda *a, **k: stub)
    try:
        out = runner.run_eval(str(tiny_random_model_dir), results_dir=results, benchmarks=["olympiadbench"], k=K,
                              max_new_tokens=8, data_dir=data, grader_workers=0, seed=SEED, batch_size=8,
                              console=Console(file=io.StringIO()))
    finally:
        mp.undo()
    assert stub.calls > 0
    return out["olympiadbench"], results


def test_per_sample_verdicts_use_every_grading_field(evaluated) -> None:
    summary, results = evaluated
    samples_path = next(results.glob("*/eval/olympiadbench/samples.jsonl"))
    got: dict[str, list[bool]] = {}
    for row in sorted(map(json.loads, samples_path.read_text().splitlines()), key=lambda r: r["sample_idx"]):
        got.setdefault(row["problem_id"], []).append(row["correct"])
    assert got == {pid: verdicts for pid, (_, _, verdicts, _) in ITEMS.items()}


def test_per_problem_counts_and_majority(evaluated) -> None:
    summary, _ = evaluated
    per = {p["id"]: p for p in summary["per_problem"]}
    assert list(per) == list(ITEMS)
    for pid, (_, _, verdicts, maj) in ITEMS.items():
        assert per[pid]["n"] == K
        assert per[pid]["n_correct"] == sum(verdicts), pid
        assert per[pid]["maj_correct"] is maj, pid


def test_summary_metrics_equal_hand_computed(evaluated) -> None:
    summary, _ = evaluated
    m = summary["metrics"]
    fractions = [2 / 4, 2 / 4, 1 / 4, 3 / 4, 3 / 4, 3 / 4, 0.0]
    assert m["k"] == K and m["n_problems"] == 7
    assert m["mean@k"] == pytest.approx(sum(fractions) / 7)  # 3.5 / 7
    assert m["pass@1"] == pytest.approx(sum(fractions) / 7)
    assert m["mean@k_se"] == pytest.approx(statistics.stdev(fractions) / math.sqrt(7))
    assert m["pass@k"] == pytest.approx(6 / 7)  # k = n: any sample right
    assert m["maj@k"] == pytest.approx(4 / 7)  # tie-right-first, multi-tol, tolerance, unit


def test_compare_cells_equal_hand_computed_values_and_errors(evaluated) -> None:
    """`rlbench compare --metric M` cells: value and SE over problems, hand-computed from the verdicts above."""
    from helpers import run_cli

    _, results = evaluated
    scores = {"mean@k": [2 / 4, 2 / 4, 1 / 4, 3 / 4, 3 / 4, 3 / 4, 0.0],
              "pass@k": [1, 1, 1, 1, 1, 1, 0], "maj@k": [1, 0, 0, 1, 1, 1, 0]}
    for metric, per_problem in scores.items():
        code, out, err = run_cli("compare", str(results), "--format", "json", "--metric", metric)
        assert code == 0, err
        cell = json.loads(out)["rows"][0]["cells"]["olympiadbench"]
        assert cell["value"] == pytest.approx(statistics.mean(per_problem)), metric
        assert cell["uncertainty_kind"] == "se"
        assert cell["uncertainty"] == pytest.approx(statistics.stdev(per_problem) / math.sqrt(7)), metric
