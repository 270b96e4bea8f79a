"""Experiment tracking (output.report_to): the real TensorBoard, W&B (offline) and Trackio libraries, read back.

The slow test trains two GRPO steps with all three trackers, evaluates the run, and checks that each tracker
holds metrics.jsonl's keys and values per step, the resolved recipe and manifest as config, and the eval summary.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from helpers import tiny_recipe, train_dict

from rlbench_cli.errors import UserError


def _wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a W&B transaction log (LevelDB log framing; wandb no longer ships a reader)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            out.append(rec)
    return out


def _point_trackio_at(folder: Path, monkeypatch) -> None:
    """trackio reads TRACKIO_DIR once, at import, and TRL imports trackio when it is installed: repoint it."""
    import sys

    monkeypatch.setenv("TRACKIO_DIR", str(folder))
    import trackio.utils

    old = trackio.utils.TRACKIO_DIR
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "trackio" and getattr(module, "TRACKIO_DIR", None) == old:
            monkeypatch.setattr(module, "TRACKIO_DIR", folder)


def _expected(metrics: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """metrics.jsonl as step -> {key: value} of its numeric, non-null entries."""
    return {r["step"]: {k: float(v) for k, v in r.items() if k != "step" and isinstance(v, int | float)}
            for r in metrics}


def test_unknown_tracker_is_refused_by_the_schema(tmp_path: Path) -> None:
    from rlbench_cli.config import recipe_from_dict

    data = tiny_recipe("grpo", tmp_path, tmp_path, output={"report_to": ["mlflow"]})
    with pytest.raises(UserError, match="report_to"):
        recipe_from_dict(data, "test")


def test_missing_tracker_package_is_refused_before_training(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    from rlbench_cli.tracking import check_available

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    with pytest.raises(UserError) as e:
        check_available(["tensorboard", "trackio"])
    assert "trackio package is not installed" in str(e.value) and "rlbench[tracking]" in str(e.value)
    check_available(["tensorboard", "wandb"])  # installed: no error


@pytest.mark.slow
def test_trackers_mirror_metrics_config_and_eval(tiny_random_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    trackio_dir = tmp_path / "trackio"
    _point_trackio_at(trackio_dir, monkeypatch)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    data = tiny_recipe("grpo", tiny_random_model_dir, tmp_path / "results",
                       output={"report_to": ["tensorboard", "wandb", "trackio"], "tracking_project": "rb-test"})
    run_dir = train_dict(data)
    from rlbench_cli.evaluation.runner import run_eval

    summary = run_eval(str(run_dir), benchmarks=["testbed_easy"], k=2, max_new_tokens=8, limit=4, batch_size=8,
                       grader_workers=1)["testbed_easy"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = _expected(metrics)
    assert len(expected) == 2 and all("loss" in v and "reward_mean" in v for v in expected.values())
    mean_k = summary["metrics"]["mean@k"]
    assert manifest["tracking"]["report_to"] == ["tensorboard", "wandb", "trackio"]

    # TensorBoard: the event files read back with tensorboard's own reader.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {k for v in expected.values() for k in v} | {"eval/testbed_easy/mean@k"} <= tags
    for key in expected[1]:
        got = {e.step: e.value for e in acc.Scalars(key)}
        assert got == pytest.approx({s: v[key] for s, v in expected.items() if key in v}, rel=1e-6), key
    assert acc.Scalars("eval/testbed_easy/mean@k")[-1].value == pytest.approx(mean_k)
    texts = {t for t in acc.Tags()["tensors"]}
    assert any(t.startswith("config/recipe") for t in texts) and any(t.startswith("config/manifest") for t in texts)

    # W&B offline: one run id, the training folder holds history + config, the eval folder the summary.
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2, folders
    records = [r for f in folders for r in _wandb_records(next(f.glob("run-*.wandb")))]
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert {r.run_id for r in runs} == {manifest["tracking"]["run_id"]} and runs[0].project == "rb-test"
    config = {i.key: json.loads(i.value_json) for i in runs[0].config.update}
    assert config["recipe"]["name"] == "t-grpo" and config["recipe"]["output"]["report_to"][1] == "wandb"
    assert config["manifest"]["name"] == run_dir.name
    history: dict[int, dict[str, float]] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history[items.pop("_step")] = {k: v for k, v in items.items() if not k.startswith("_")}
    assert history.keys() == expected.keys()
    for step, values in expected.items():
        assert history[step] == pytest.approx(values), step
    summaries = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for r in records
                 if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
    assert summaries["eval/testbed_easy/mean@k"] == pytest.approx(mean_k)
    final = [json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "config"
             for i in r.config.update if i.key == "manifest"]
    assert final and final[-1]["status"] == "completed"

    # Trackio: its local store, read with trackio's own storage API.
    from trackio.sqlite_storage import SQLiteStorage

    logs = SQLiteStorage.get_logs("rb-test", run_dir.name)
    by_step: dict[int, dict[str, float]] = {}
    for row in logs:
        by_step.setdefault(int(row["step"]), {}).update(
            {k: v for k, v in row.items() if isinstance(v, int | float) and k != "step"})
    for step, values in expected.items():
        assert {k: by_step[step][k] for k in values} == pytest.approx(values)
    assert any(v.get("eval/testbed_easy/mean@k") == pytest.approx(mean_k) for v in by_step.values())
    assert SQLiteStorage.get_project_db_path("rb-test").parent == trackio_dir  # nothing written to ~/.cache
    cfg = SQLiteStorage.get_run_config("rb-test", run_dir.name)
    assert cfg["recipe"]["name"] == "t-grpo" and cfg["manifest"]["status"] == "completed"


def test_run_id_follows_the_run_folder_and_its_start(tmp_path: Path) -> None:
    from rlbench_cli.tracking import eval_values, run_id

    a = run_id(tmp_path / "r", "2026-01-01T00:00:00+00:00")
    assert a == run_id(tmp_path / "r", "2026-01-01T00:00:00+00:00")  # --resume keeps started_at: same run
    assert a != run_id(tmp_path / "r", "2026-01-02T00:00:00+00:00")  # --overwrite starts again: a new run
    assert a != run_id(tmp_path / "other", "2026-01-01T00:00:00+00:00")
    values = eval_values({"math500": {"status": "completed", "metrics": {"mean@k": 0.5, "k": 16, "note": "x"}},
                          "aime": {"status": "shard", "metrics": {"mean@k": 0.1}}})
    assert values == {"eval/math500/mean@k": 0.5, "eval/math500/k": 16.0}
