"""`rlbench compare` on broken, incomplete and inconsistent results folders: warn and skip, never crash."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from test_compare_fixtures import curve, make_run, standard_results

from rlbench_cli.compare import run_compare
from rlbench_cli.errors import UserError


def compare(root: Path, **kw) -> dict:
    return run_compare(root, console=Console(file=io.StringIO(), width=200), **kw)


def labels(res: dict) -> list[str]:
    return [r["label"] for r in res["rows"]]


def _corrupt_manifest(run: Path) -> None:
    (run / "manifest.json").write_text('{"kind": "train", "status": "comp')


def _missing_manifest(run: Path) -> None:
    (run / "manifest.json").unlink()


def _status(status: str):
    def edit(run: Path) -> None:
        m = json.loads((run / "manifest.json").read_text())
        m["status"] = status
        (run / "manifest.json").write_text(json.dumps(m))

    return edit


def _manifest_not_object(run: Path) -> None:
    (run / "manifest.json").write_text("[1, 2]")


@pytest.mark.parametrize(
    ("breaker", "expect"),
    [
        (_corrupt_manifest, "manifest.json unreadable"),
        (_missing_manifest, "manifest.json missing"),
        (_manifest_not_object, "not a JSON object"),
        (_status("running"), "status is 'running'"),
        (_status("failed"), "status is 'failed'"),
        (_status("interrupted"), "status is 'interrupted'"),
    ],
)
def test_bad_run_folder_is_skipped_with_one_warning(tmp_path: Path, breaker, expect: str) -> None:
    root = standard_results(tmp_path / "r")
    breaker(root / "tiny-raft-s0")
    res = compare(root)
    assert "RAFT" not in labels(res) and "GRPO" in labels(res)
    hits = [w for w in res["warnings"] if "tiny-raft-s0" in w]
    assert len(hits) == 1 and expect in hits[0]


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("{not json", "unreadable"),
        (
            json.dumps({"benchmark": "minerva_math", "status": "running", "metrics": {"mean@k": 0.5}}),
            "'running'",
        ),
        (
            json.dumps({"benchmark": "minerva_math", "status": "completed", "metrics": {}}),
            "no finite numeric metrics",
        ),
        (json.dumps({"benchmark": "minerva_math", "metrics": {"mean@k": float("nan")}}), "no finite numeric"),
        (
            json.dumps({"benchmark": "minerva_math", "metrics": {"mean@k": 0.5}, "per_problem": "x"}),
            "per_problem",
        ),
    ],
)
def test_bad_eval_summary_drops_only_that_cell(tmp_path: Path, content: str, expect: str) -> None:
    root = standard_results(tmp_path / "r")
    (root / "base-tiny" / "eval" / "minerva_math" / "summary.json").write_text(content)
    res = compare(root, baseline="Base")
    base = next(r for r in res["rows"] if r["label"] == "Base")
    assert base["cells"]["math500"] is not None
    assert base["cells"]["minerva_math"] is None and base["cells"]["average"] is None
    hits = [w for w in res["warnings"] if "eval/minerva_math" in w]
    assert len(hits) == 1 and expect in hits[0]


def test_missing_summary_file_is_dash(tmp_path: Path) -> None:
    root = standard_results(tmp_path / "r")
    (root / "base-tiny" / "eval" / "minerva_math" / "summary.json").unlink()
    res = compare(root, fmt="markdown")
    assert next(r for r in res["rows"] if r["label"] == "Base")["cells"]["minerva_math"] is None


def test_metrics_jsonl_truncated_tail_ok_corrupt_middle_warns(tmp_path: Path) -> None:
    root = standard_results(tmp_path / "r")
    path = root / "tiny-raft-s0" / "metrics.jsonl"
    path.write_text(path.read_text() + '{"step": 6, "entr')
    res = compare(root, extra_columns=["entropy"])
    assert not [w for w in res["warnings"] if "metrics.jsonl" in w]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    res = compare(root, extra_columns=["entropy"])
    assert len([w for w in res["warnings"] if "metrics.jsonl" in w]) == 1
    raft = next(r for r in res["rows"] if r["label"] == "RAFT")
    assert raft["extras"]["entropy"] is None and raft["cells"]["math500"] is not None


@pytest.mark.parametrize("setup", ["empty", "only_failed", "no_evals", "missing_dir"])
def test_no_usable_runs_is_user_error(tmp_path: Path, setup: str) -> None:
    root = tmp_path / "r"
    if setup != "missing_dir":
        root.mkdir()
    if setup == "only_failed":
        make_run(root, "x", recipe="x", label="X", status="failed", evals={"math500": [1]})
    if setup == "no_evals":
        make_run(root, "x", recipe="x", label="X", metrics=curve(2, 0.0))
    with pytest.raises(UserError) as e:
        compare(root)
    msg = str(e.value)
    assert str(root) in msg and "rlbench eval" in msg
    if setup == "only_failed":
        assert "status is 'failed'" in msg


def test_settings_differ_across_rows_split_columns(tmp_path: Path) -> None:
    root = tmp_path / "r"
    make_run(root, "a", recipe="a", label="A", evals={"math500": [1, 2, 3]}, k=4)
    make_run(root, "b", recipe="b", label="B", evals={"math500": [1, 2, 3]}, k=8)
    make_run(
        root,
        "c",
        recipe="c",
        label="C",
        evals={"math500": [1, 2, 3]},
        k=4,
        settings={"math500": {"temperature": 0.6}},
    )
    res = compare(root)
    headers = [c["header"] for c in res["columns"]]
    assert len([h for h in headers if h.startswith("MATH500 (")]) == 3
    assert all("k=" in h and "temperature=" in h for h in headers if h.startswith("MATH500"))
    assert any("split into separate columns" in w for w in res["warnings"])
    # Each row has exactly one of the split cells.
    for r in res["rows"]:
        assert sum(1 for k, c in r["cells"].items() if k.startswith("math500") and c) == 1


@pytest.mark.parametrize(
    "setting",
    [
        {"k": 8},
        {"data_sha256": "other"},
        {"grader_version": "g2"},
        {"max_new_tokens": 1024},
        {"prompt_template": "plain"},
    ],
)
def test_settings_differ_within_a_row_is_user_error(tmp_path: Path, setting: dict) -> None:
    root = tmp_path / "r"
    make_run(root, "g-s0", recipe="g", label="G", seed=0, evals={"math500": [1, 2]})
    extra = dict(setting)
    k = extra.pop("k", 4)
    make_run(
        root,
        "g-s1",
        recipe="g",
        label="G",
        seed=1,
        evals={"math500": [1, 2]},
        k=k,
        settings={"math500": extra},
    )
    with pytest.raises(UserError, match="different settings") as e:
        compare(root)
    assert "g-s0" in str(e.value) and "g-s1" in str(e.value)


def test_fewer_seeds_in_a_cell_are_flagged(tmp_path: Path) -> None:
    root = tmp_path / "r"
    make_run(root, "g-s0", recipe="g", label="G", seed=0, evals={"math500": [1, 2], "minerva_math": [1, 1]})
    make_run(root, "g-s1", recipe="g", label="G", seed=1, evals={"math500": [2, 2]})
    res = compare(root, fmt="markdown", output=tmp_path / "t.md")
    g = res["rows"][0]
    assert g["n_seeds"] == 2 and g["cells"]["minerva_math"]["n_seeds"] == 1
    assert g["cells"]["average"]["n_seeds"] == 1
    assert any("Average uses 1 of 2 seeds" in w for w in res["warnings"])
    assert "(n=1)" in (tmp_path / "t.md").read_text()


def test_duplicate_seed_and_duplicate_labels(tmp_path: Path) -> None:
    root = tmp_path / "r"
    make_run(root, "g-a", recipe="g", label="G", seed=0, evals={"math500": [1, 2]})
    make_run(root, "g-b", recipe="g", label="G", seed=0, evals={"math500": [2, 2]})
    make_run(root, "base-x", recipe="base-x", label="Base", kind="base", evals={"math500": [0, 1]})
    make_run(root, "base-y", recipe="base-y", label="Base", kind="base", evals={"math500": [0, 0]})
    res = compare(root)
    assert any("duplicate seed 0" in w for w in res["warnings"])
    assert labels(res) == ["Base (base-x)", "Base (base-y)", "G"]
    assert res["rows"][2]["runs"] == ["g-a"]


def test_unrelated_folders_are_ignored(tmp_path: Path) -> None:
    root = standard_results(tmp_path / "r")
    (root / "plots").mkdir()
    (root / ".cache").mkdir()
    (root / "notes.txt").write_text("hi")
    res = compare(root)
    assert res["warnings"] == []


def test_single_run_folder_as_results_dir(tmp_path: Path) -> None:
    root = standard_results(tmp_path / "r")
    res = compare(root / "tiny-raft-s0")
    assert labels(res) == ["RAFT"]


def test_two_eval_folders_for_one_benchmark_warn(tmp_path: Path) -> None:
    root = standard_results(tmp_path / "r")
    src = root / "tiny-raft-s0" / "eval" / "math500"
    dup = root / "tiny-raft-s0" / "eval" / "math500-again"
    dup.mkdir()
    (dup / "summary.json").write_text((src / "summary.json").read_text())
    res = compare(root)
    hits = [w for w in res["warnings"] if "already read from eval/math500" in w]
    assert len(hits) == 1 and "math500-again" in hits[0]
