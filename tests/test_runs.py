"""`rlbench runs`: one line per run (any status), filters, --json, and broken folders listed rather than fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli, tiny_recipe
from test_compare_fixtures import curve, make_run

from rlbench_cli.compare.runs import list_runs


@pytest.fixture
def results(tmp_path: Path) -> Path:
    from rlbench_cli.config import recipe_from_dict, recipe_to_yaml

    root = tmp_path / "results"
    make_run(root, "base-tiny", recipe="base-tiny", label="Base", kind="base", wall_time_s=None,
             evals={"testbed_easy": [1, 0, 2, 0]})
    done = make_run(root, "tiny-grpo-s0", recipe="tiny-grpo", label="GRPO", algorithm="grpo", seed=0,
                    evals={"testbed_easy": [4, 2, 2, 0], "testbed_medium": [1, 1, 0, 0]}, metrics=curve(6, 0.0))
    manifest = json.loads((done / "manifest.json").read_text())
    (done / "manifest.json").write_text(json.dumps({**manifest, "steps": 6, "data": {"rows": 32}}))
    recipe = recipe_from_dict(tiny_recipe("grpo", tmp_path, root, optim={"max_steps": 6}), "test")
    (done / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    stopped = make_run(root, "tiny-raft-s1", recipe="tiny-raft", label="RAFT", algorithm="raft", seed=1,
                       status="interrupted", metrics=curve(3, 0.0))
    recipe = recipe_from_dict(tiny_recipe("raft", tmp_path, root, optim={"max_steps": 10}), "test")
    (stopped / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    (root / "tiny-raft-s1" / "manifest.json").write_text(json.dumps(
        {**json.loads((stopped / "manifest.json").read_text()), "error": "interrupted by the user (Ctrl-C)"}))
    broken = root / "zz-broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    (root / "plots").mkdir()  # not a run: not listed
    return root


def test_one_line_per_run_with_steps_benchmarks_and_average(results: Path) -> None:
    code, out, err = run_cli("runs", str(results))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["name", "algorithm", "seed", "status", "steps", "evaluated", "average"]
    body = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(body) == ["base-tiny", "tiny-grpo-s0", "tiny-raft-s1", "zz-broken"]
    # mean@k: easy (4+2+2+0)/16 = 0.5, medium 2/16 = 0.125 -> Average 31.25 %
    assert body["tiny-grpo-s0"] == ["tiny-grpo-s0", "grpo", "0", "completed", "6/6",
                                    "testbed_easy,testbed_medium", "31.2"]
    assert body["tiny-raft-s1"] == ["tiny-raft-s1", "raft", "1", "interrupted", "3/10", "–", "–"]
    assert body["base-tiny"][1:] == ["base", "0", "completed", "–", "testbed_easy", "18.8"]
    assert body["zz-broken"][3] == "broken" and "manifest.json unreadable" in lines[-1]
    w = len("tiny-grpo-s0")  # the longest name: the algorithm column starts after it on every line
    assert all(line[w : w + 2] == "  " and line[w + 2] != " " for line in lines)


def test_filters_and_json(results: Path) -> None:
    code, out, _ = run_cli("runs", str(results), "--status", "interrupted,broken", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["tiny-raft-s1", "zz-broken"]
    assert rows[0]["steps_done"] == 3 and rows[0]["steps_planned"] == 10
    assert rows[0]["problem"] == "interrupted by the user (Ctrl-C)"
    names = [r.name for r in list_runs(results, recipe="tiny-*")]
    assert names == ["tiny-grpo-s0", "tiny-raft-s1"]
    grpo = list_runs(results, recipe="tiny-grpo")[0]
    assert grpo.benchmarks == ["testbed_easy", "testbed_medium"] and grpo.average == pytest.approx(0.3125)


def test_bad_input_is_one_line(results: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("runs", str(results), "--status", "done")
    assert code == 2 and "unknown status 'done'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("runs", str(tmp_path / "nope"))
    assert code == 2 and "results folder not found" in err
    code, _, err = run_cli("runs", str(results), "--recipe", "nothing-*")
    assert code == 0 and "match the filters" in err
