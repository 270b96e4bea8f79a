"""Resume across epochs: a (LoRA) GRPO run stopped with Ctrl-C and resumed ends byte-identical to an
uninterrupted one when the stop falls at an epoch boundary or inside a later epoch.

TRL's RepeatSampler shuffles with one generator that advances each epoch; a resumed Trainer builds a fresh
sampler, so without rlbench's epoch-seeded sampler (training/sampler.py) a run resumed in epoch e >= 1 replays
epoch 0's prompt order (found on SmolLM2, whose 3-prompt fixture makes every step an epoch). Tiny random Llama,
4 prompts, 2 steps per epoch, CPU; about 20 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import metrics_without_timing, tiny_recipe, train_dict, weights_hash

from rlbench_cli.records import read_jsonl

STEPS = 4


def _recipe(model_dir: Path, out: Path) -> dict:
    return tiny_recipe("grpo", model_dir, out,
                       model={"lora": {"enabled": True, "r": 2, "alpha": 4, "dropout": 0.0}},
                       data={"max_prompts": 4},
                       rollout={"prompts_per_batch": 2, "n": 4, "max_new_tokens": 8},
                       optim={"lr": 5e-2, "max_steps": STEPS, "mini_batch_prompts": 2, "micro_batch_size": 8},
                       output={"checkpoint_every": 1})


@pytest.fixture(scope="module")
def straight(tiny_random_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = train_dict(_recipe(tiny_random_model_dir, tmp_path_factory.mktemp("straight")))
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(1, STEPS + 1))
    return run


@pytest.mark.slow
@pytest.mark.parametrize("stop_at_rollout", [3, 4], ids=["epoch-boundary", "mid-second-epoch"])
def test_lora_grpo_resume_in_a_later_epoch_is_byte_identical(stop_at_rollout: int, straight: Path,
                                                             tiny_random_model_dir: Path, tmp_path: Path,
                                                             monkeypatch) -> None:
    from rlbench_cli.config import recipe_from_dict
    from rlbench_cli.training.rl import RLBenchGRPOTrainer
    from rlbench_cli.training.run import run_training

    original = RLBenchGRPOTrainer._generate_and_score_completions
    calls = {"n": 0}

    def interrupt(self, inputs):
        calls["n"] += 1
        if calls["n"] == stop_at_rollout:
            raise KeyboardInterrupt
        return original(self, inputs)

    rec = recipe_from_dict(_recipe(tiny_random_model_dir, tmp_path), "test")
    monkeypatch.setattr(RLBenchGRPOTrainer, "_generate_and_score_completions", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_training(rec, command="pytest")
    monkeypatch.setattr(RLBenchGRPOTrainer, "_generate_and_score_completions", original)
    assert (tmp_path / rec.run_name / "checkpoints" / f"checkpoint-{stop_at_rollout - 1}").is_dir()
    resumed = run_training(rec, command="pytest", resume=True)
    assert metrics_without_timing(read_jsonl(resumed / "metrics.jsonl")) == \
        metrics_without_timing(read_jsonl(straight / "metrics.jsonl"))
    assert weights_hash(resumed / "model") == weights_hash(straight / "model")
