"""`rlbench compare --format lm-eval`: lm-evaluation-harness's results JSON shape, with the table's numbers."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from helpers import run_cli
from rich.console import Console
from test_compare_fixtures import standard_results

from rlbench_cli.compare import run_compare

# The top-level keys lm-eval's evaluator + EvaluationTracker write into results_<date>.json.
LM_EVAL_KEYS = {"results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples",
                "config", "git_hash", "date", "task_hashes", "model_source", "model_name", "model_name_sanitized"}
CONFIG_KEYS = {"model", "model_args", "batch_size", "batch_sizes", "device", "use_cache", "limit", "bootstrap_iters",
               "gen_kwargs", "random_seed", "numpy_seed", "torch_seed", "fewshot_seed"}


def documents(results: Path, **kw) -> list[dict]:
    out = io.StringIO()
    run_compare(results, fmt="lm-eval", console=Console(file=out, width=200), **kw)
    return json.loads(out.getvalue())


def test_structure_and_values(tmp_path: Path) -> None:
    docs = {d["model_name"]: d for d in documents(standard_results(tmp_path / "results"))}
    assert set(docs) == {"Base", "GRPO", "RAFT"}
    for doc in docs.values():
        assert LM_EVAL_KEYS <= set(doc) and CONFIG_KEYS <= set(doc["config"])
        tasks = set(doc["results"])
        for key in ("configs", "versions", "n-shot", "higher_is_better", "n-samples", "group_subtasks"):
            assert set(doc[key]) == tasks, key
        for task, entry in doc["results"].items():
            assert entry["alias"] == task
            assert all("," in k for k in entry if k != "alias")  # "<metric>,<filter>" as lm-eval writes
            assert doc["n-samples"][task] == {"original": 6, "effective": 6}
            assert doc["configs"][task]["repeats"] == 4 and doc["n-shot"][task] == 0
            assert doc["higher_is_better"][task]["mean@k"] is True
    assert set(docs["RAFT"]["results"]) == {"math500"}  # RAFT has no minerva eval: no task, not a null
    # Base, one seed: math500 counts [0,1,0,2,1,0] of 4 -> mean 4/24; stderr is the summary's SE over problems.
    base = docs["Base"]["results"]["math500"]
    fr = [c / 4 for c in [0, 1, 0, 2, 1, 0]]
    mean = sum(fr) / 6
    assert math.isclose(base["mean@k,none"], mean)
    assert math.isclose(base["mean@k_stderr,none"], math.sqrt(sum((x - mean) ** 2 for x in fr) / 5 / 6))
    assert base["pass@k,none"] == 3 / 6 and base["pass@k_stderr,none"] == "N/A"
    # GRPO, three seeds: the mean of the seed means, stderr across seeds.
    seeds = [[4, 3, 2, 4, 3, 1], [4, 4, 2, 3, 3, 2], [3, 4, 3, 4, 2, 2]]
    means = [sum(s) / 24 for s in seeds]
    m = sum(means) / 3
    grpo = docs["GRPO"]
    assert math.isclose(grpo["results"]["math500"]["mean@k,none"], m)
    sd = math.sqrt(sum((x - m) ** 2 for x in means) / 2)
    assert math.isclose(grpo["results"]["math500"]["mean@k_stderr,none"], sd / math.sqrt(3))
    assert grpo["rlbench"]["seeds"] == [0, 1, 2] and grpo["config"]["random_seed"] is None
    assert grpo["config"]["model_args"] == f"pretrained={tmp_path / 'results' / 'tiny-grpo-s0' / 'model'}"


def test_output_folder_uses_lm_eval_layout(tmp_path: Path) -> None:
    results = standard_results(tmp_path / "results")
    out = tmp_path / "lm-eval"
    run_compare(results, fmt="lm-eval", output=out, console=Console(file=io.StringIO(), width=200))
    files = sorted(out.glob("*/results_*.json"))
    assert [f.parent.name for f in files] == ["Base", "GRPO", "RAFT"]
    assert json.loads(files[1].read_text())["results"]["minerva_math"]["alias"] == "minerva_math"
    run_compare(results, fmt="lm-eval", output=tmp_path / "all.json", console=Console(file=io.StringIO()))
    assert len(json.loads((tmp_path / "all.json").read_text())) == 3
    code, stdout, err = run_cli("compare", str(results), "--format", "lm-eval")
    assert code == 0, err
    assert [d["model_name"] for d in json.loads(stdout)] == ["Base", "RAFT", "GRPO"]  # table row order


def test_labels_that_sanitize_alike_get_separate_folders(tmp_path: Path) -> None:
    from test_compare_fixtures import make_run

    results = tmp_path / "results"
    for i, label in enumerate(["org/model", "org:model"]):
        make_run(results, f"r{i}", recipe=f"r{i}", label=label, algorithm="grpo", evals={"math500": [1, 2, 3]})
    run_compare(results, fmt="lm-eval", output=tmp_path / "out", console=Console(file=io.StringIO()))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["org__model", "org__model__2"]
