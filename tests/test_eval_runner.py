"""The eval runner: target resolution, prompt templates, resume, batch-size invariance, shards, schema.

Runs the tiny random model on a few testbed problems (junk but deterministic generations), grading in-process.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from rlbench_cli.errors import UserError
from rlbench_cli.evaluation import generate as gen_mod
from rlbench_cli.evaluation import runner
from rlbench_cli.evaluation.runner import (
    Target,
    latest_completed_run,
    read_samples,
    repair_tail,
    resolve_prompt_template,
    resolve_target,
    run_eval,
)
from rlbench_cli.records import atomic_write_json, read_jsonl

BENCH = "testbed_easy"
SETTINGS = {"benchmarks": [BENCH], "k": 3, "max_new_tokens": 6, "limit": 4, "grader_workers": 0, "seed": 5,
            "temperature": 1.0, "top_p": 1.0}

SUMMARY_KEYS = {"benchmark", "display_name", "status", "model", "run", "settings", "data", "grader",
                "metrics", "per_problem", "timings"}
NESTED_KEYS = {
    "model": {"path", "sha256"},
    "run": {"name", "label", "recipe_name", "seed"},
    "settings": {"k", "temperature", "top_p", "max_new_tokens", "prompt_template", "backend", "seed",
                 "batch_size"},
    "data": {"source", "sha256", "n_problems"},
    "grader": {"name", "version", "timeouts", "timeout_s"},
    "timings": {"generation_s", "grading_s", "tokens_per_s", "total_s"},
}
SAMPLE_KEYS = {"problem_id", "sample_idx", "seed", "prompt_sha256", "completion", "n_tokens", "finish_reason",
               "pred", "correct", "timed_out"}


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def _eval(model: Path, results: Path, **kw) -> dict:
    return run_eval(str(model), results_dir=results, console=quiet(), **(SETTINGS | kw))


def _out(results: Path, model: Path) -> Path:
    return results / f"base-{runner.slugify(model.resolve().name)}" / "eval" / BENCH


def _comparable(summary: dict) -> dict:
    """A summary without the parts that legitimately differ between runs (wall times, batch size)."""
    s = json.loads(json.dumps(summary))
    s.pop("timings")
    s["settings"].pop("batch_size")
    return s


@pytest.fixture(scope="module")
def reference(tiny_random_model_dir, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted, unsharded eval that other tests compare against."""
    results = tmp_path_factory.mktemp("ref")
    summary = _eval(tiny_random_model_dir, results, batch_size=4)[BENCH]
    return _out(results, tiny_random_model_dir), summary


# ---------------------------------------------------------------- summary and samples

def test_summary_schema_and_junk_grading(reference, tiny_random_model_dir) -> None:
    out, summary = reference
    assert set(summary) == SUMMARY_KEYS
    for key, keys in NESTED_KEYS.items():
        assert set(summary[key]) == keys, key
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["status"] == "completed" and summary["benchmark"] == BENCH
    assert summary["metrics"]["mean@k"] == 0.0  # random chars never contain the boxed answer
    assert summary["metrics"]["k"] == 3 and summary["metrics"]["n_problems"] == 4
    assert [p["n"] for p in summary["per_problem"]] == [3] * 4
    assert summary["settings"]["prompt_template"] == "paper"  # the char tokenizer has a chat template
    assert summary["run"]["label"] == "Base" and summary["run"]["name"].startswith("base-")
    rows = read_jsonl(out / "samples.jsonl")
    assert len(rows) == 12 and all(set(r) == SAMPLE_KEYS for r in rows)
    assert len({r["seed"] for r in rows}) == 12
    assert all(1 <= r["n_tokens"] <= 6 for r in rows)
    manifest = json.loads((out.parent.parent / "manifest.json").read_text())
    assert manifest["kind"] == "base" and manifest["status"] == "completed"
    assert manifest["model_sha256"] == summary["model"]["sha256"]
    assert manifest["model"] == str(tiny_random_model_dir)


@pytest.mark.slow
def test_batch_size_does_not_change_samples(reference, tiny_random_model_dir, tmp_path) -> None:
    out_ref, summary_ref = reference  # batch 4
    texts = {}
    for bs in (2, 7):
        results = tmp_path / f"bs{bs}"
        summary = _eval(tiny_random_model_dir, results, batch_size=bs)[BENCH]
        assert _comparable(summary) == _comparable(summary_ref)
        texts[bs] = (_out(results, tiny_random_model_dir) / "samples.jsonl").read_text()
    assert texts[2] == texts[7] == (out_ref / "samples.jsonl").read_text()


# ---------------------------------------------------------------- resume

def test_resume_after_interruption_regenerates_nothing(reference, tiny_random_model_dir, tmp_path,
                                                       monkeypatch) -> None:
    out_ref, summary_ref = reference
    real = gen_mod.HFBackend.generate
    calls: list[list[int]] = []

    def failing(self, prompts, seeds, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the third chunk
        calls.append(list(seeds))
        return real(self, prompts, seeds, **kw)

    monkeypatch.setattr(gen_mod.HFBackend, "generate", failing)
    with pytest.raises(KeyboardInterrupt):
        _eval(tiny_random_model_dir, tmp_path, batch_size=3)  # chunk = 3 samples = one problem
    out = _out(tmp_path, tiny_random_model_dir)
    first = read_jsonl(out / "samples.jsonl")
    assert len(first) == 6 and not (out / "summary.json").exists()
    # A writer killed mid-line leaves a truncated tail; it must be dropped and regenerated.
    with open(out / "samples.jsonl", "a") as f:
        f.write('{"problem_id": "easy-0002", "sample_idx": 0, "se')

    def spying(self, prompts, seeds, **kw):
        calls.append(list(seeds))
        return real(self, prompts, seeds, **kw)

    monkeypatch.setattr(gen_mod.HFBackend, "generate", spying)
    calls.clear()
    summary = _eval(tiny_random_model_dir, tmp_path, batch_size=3)[BENCH]
    regenerated = [s for chunk in calls for s in chunk]
    assert len(regenerated) == 6
    assert not set(regenerated) & {r["seed"] for r in first}
    assert _comparable(summary) == _comparable(summary_ref)
    assert (out / "samples.jsonl").read_text() == (out_ref / "samples.jsonl").read_text()
    # A third run finds everything done and generates nothing (the model is not even loaded).
    calls.clear()
    monkeypatch.setattr(runner, "make_backend", lambda *a, **k: pytest.fail("model loaded again"))
    again = _eval(tiny_random_model_dir, tmp_path, batch_size=3)[BENCH]
    assert calls == [] and _comparable(again) == _comparable(summary_ref)


def test_repair_tail(tmp_path) -> None:
    cases = [("", ""), ("a\n", "a\n"), ("a\nb", "a\n"), ("partial", ""), ("a\nb\n{\"x", "a\nb\n")]
    for before, after in cases:
        path = tmp_path / "f.jsonl"
        path.write_text(before)
        repair_tail(path)
        assert path.read_text() == after, before


# ---------------------------------------------------------------- settings

@pytest.mark.parametrize(("change", "key"), [
    ({"temperature": 0.5}, "temperature"),
    ({"k": 4}, "k"),
    ({"max_new_tokens": 7}, "max_new_tokens"),
    ({"seed": 6}, "seed"),
    ({"limit": 3}, "data_sha256"),
    ({"prompt_template": "plain"}, "prompt_template"),
])
def test_settings_mismatch_is_refused(reference, tiny_random_model_dir, tmp_path, change, key) -> None:
    out_ref, _ = reference
    out = _out(tmp_path, tiny_random_model_dir)
    shutil.copytree(out_ref, out)
    with pytest.raises(UserError, match=key) as info:
        _eval(tiny_random_model_dir, tmp_path, **change)
    assert "delete" in str(info.value)


def test_samples_without_settings_are_refused(reference, tiny_random_model_dir, tmp_path) -> None:
    out_ref, _ = reference
    out = _out(tmp_path, tiny_random_model_dir)
    shutil.copytree(out_ref, out)
    (out / "settings.json").unlink()
    with pytest.raises(UserError, match="settings.json is missing"):
        _eval(tiny_random_model_dir, tmp_path)


# ---------------------------------------------------------------- shards

@pytest.mark.slow
def test_sharded_then_merged_equals_unsharded(reference, tiny_random_model_dir, tmp_path) -> None:
    _, summary_ref = reference
    out = _out(tmp_path, tiny_random_model_dir)
    r0 = _eval(tiny_random_model_dir, tmp_path, batch_size=5, shard=(0, 3))[BENCH]
    assert r0["status"] == "shard" and not (out / "summary.json").exists()
    shard0 = read_jsonl(out / "samples.shard-0-of-3.jsonl")
    assert {r["problem_id"] for r in shard0} == {"easy-0000", "easy-0003"}
    with pytest.raises(UserError, match="missing"):
        _eval(tiny_random_model_dir, tmp_path, merge=True)
    _eval(tiny_random_model_dir, tmp_path, batch_size=5, shard=(1, 3))
    _eval(tiny_random_model_dir, tmp_path, batch_size=5, shard=(2, 3))
    merged = _eval(tiny_random_model_dir, tmp_path, merge=True)[BENCH]
    assert _comparable(merged) == _comparable(summary_ref)
    assert len(read_samples(out)) == 12


@pytest.mark.parametrize("shard", [(2, 2), (-1, 2), (0, 0)])
def test_bad_shard_is_user_error(tiny_random_model_dir, tmp_path, shard) -> None:
    with pytest.raises(UserError, match="shard"):
        _eval(tiny_random_model_dir, tmp_path, shard=shard)


# ---------------------------------------------------------------- target resolution

def _fake_run(results: Path, name: str, model_src: Path, status: str = "completed", finished: str = "",
              with_model: bool = True, template: str | None = None) -> Path:
    run = results / name
    run.mkdir(parents=True)
    if with_model:
        shutil.copytree(model_src, run / "model")
    atomic_write_json(run / "manifest.json", {"name": name, "label": name.upper(), "recipe_name": "rec",
                                              "seed": 3, "status": status, "finished_at": finished})
    if template:
        (run / "recipe.yaml").write_text(f"name: rec\ndata:\n  prompt_template: {template}\n")
    return run


def test_target_run_folder(tiny_random_model_dir, tmp_path) -> None:
    run = _fake_run(tmp_path, "grpo-s3", tiny_random_model_dir)
    t = resolve_target(str(run), tmp_path)
    assert (t.kind, t.root, t.model_path, t.label, t.recipe_name, t.seed) == (
        "run", run, run / "model", "GRPO-S3", "rec", 3)
    assert resolve_target(str(run), tmp_path, label="Mine").label == "Mine"


def test_target_latest_completed_run(tiny_random_model_dir, tmp_path) -> None:
    with pytest.raises(UserError, match="train"):
        resolve_target(None, tmp_path)
    _fake_run(tmp_path, "old", tiny_random_model_dir, finished="2025-01-01T00:00:00+00:00")
    _fake_run(tmp_path, "new", tiny_random_model_dir, finished="2025-03-01T00:00:00+00:00")
    _fake_run(tmp_path, "newest-failed", tiny_random_model_dir, status="failed",
              finished="2025-05-01T00:00:00+00:00")
    _fake_run(tmp_path, "newest-nomodel", tiny_random_model_dir, with_model=False,
              finished="2025-06-01T00:00:00+00:00")
    atomic_write_json(tmp_path / "base-x" / "manifest.json", {"kind": "base", "status": "completed"})
    assert latest_completed_run(tmp_path) == tmp_path / "new"
    assert resolve_target(None, tmp_path).name == "new"


@pytest.mark.parametrize(("make", "match"), [
    (lambda d: str(d / "nope"), "not a hub id"),
    (lambda d: str((d / "file.txt").write_text("x") and d / "file.txt"), "expected a folder"),
    (lambda d: str((d / "empty").mkdir() or d / "empty"), "not a run folder"),
    (lambda d: "some-org/some-model-that-is-not-cached", "hub"),
])
def test_target_errors(tmp_path, make, match) -> None:
    with pytest.raises(UserError, match=match):
        resolve_target(make(tmp_path), tmp_path / "results")


def test_target_run_without_model(tiny_random_model_dir, tmp_path) -> None:
    run = _fake_run(tmp_path, "r", tiny_random_model_dir, status="running", with_model=False)
    with pytest.raises(UserError, match="no saved model"):
        resolve_target(str(run), tmp_path)


def test_run_target_eval_goes_into_run_folder(tiny_random_model_dir, tmp_path) -> None:
    run = _fake_run(tmp_path, "sft-s0", tiny_random_model_dir, template="plain")
    kw = SETTINGS | {"k": 1, "limit": 2}
    summary = run_eval(str(run), results_dir=tmp_path, console=quiet(), **kw)[BENCH]
    assert (run / "eval" / BENCH / "summary.json").is_file()
    assert summary["settings"]["prompt_template"] == "plain"  # from the run's recipe
    assert summary["run"] == {"name": "sft-s0", "label": "SFT-S0", "recipe_name": "rec", "seed": 3}


# ---------------------------------------------------------------- prompt template

@pytest.mark.parametrize(("explicit", "recipe", "model_json", "chat", "expected"), [
    ("raw", "plain", "paper", True, "raw"),
    (None, "plain", "paper", True, "plain"),
    (None, None, "raw", True, "raw"),
    (None, None, None, True, "paper"),
    (None, None, None, False, "plain"),
])
def test_prompt_template_precedence(tmp_path, explicit, recipe, model_json, chat, expected) -> None:
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    if recipe:
        (run / "recipe.yaml").write_text(f"data:\n  prompt_template: {recipe}\n")
    if model_json:
        (run / "model" / "rlbench.json").write_text(json.dumps({"prompt_template": model_json}))
    target = Target(kind="run", model_path=run / "model", model_ref="m", model_sha256="x", root=run, name="r",
                    label="r", recipe_name="r", run_dir=run)
    tok = SimpleNamespace(chat_template="{{x}}" if chat else None)
    assert resolve_prompt_template(explicit, target, tok) == expected


@pytest.mark.parametrize(("explicit", "chat", "match"),
                         [("fancy", True, "unknown"), ("paper", False, "chat")])
def test_prompt_template_errors(tmp_path, explicit, chat, match) -> None:
    target = Target(kind="base", model_path=tmp_path, model_ref="m", model_sha256="x", root=tmp_path,
                    name="b", label="Base", recipe_name="b")
    with pytest.raises(UserError, match=match):
        resolve_prompt_template(explicit, target, SimpleNamespace(chat_template="{{x}}" if chat else None))
