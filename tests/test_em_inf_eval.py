"""EM-INF as an eval option: it changes what is sampled (same seeds), is recorded in the eval settings, is never
mixed with a plain eval's samples, and refuses the vLLM backend."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from rlbench_cli.errors import UserError
from rlbench_cli.evaluation import runner
from rlbench_cli.evaluation.generate import make_backend
from rlbench_cli.evaluation.runner import read_samples, run_eval

BENCH = "testbed_easy"
SETTINGS = {"benchmarks": [BENCH], "k": 2, "max_new_tokens": 6, "limit": 3, "grader_workers": 0, "seed": 5,
            "temperature": 1.0, "top_p": 1.0, "batch_size": 8}
EM_INF = {"threshold": 0.1, "kl_weight": 0.001, "lr": 0.1, "steps": 3}


def _eval(model: Path, results: Path, **kw) -> dict:
    return run_eval(str(model), results_dir=results, console=Console(file=io.StringIO()), **(SETTINGS | kw))


def _samples(results: Path, model: Path) -> list[str]:
    out = results / f"base-{runner.slugify(model.resolve().name)}" / "eval" / BENCH
    done = read_samples(out)
    return [done[key]["completion"] for key in sorted(done)]


@pytest.mark.slow
def test_em_inf_changes_samples_and_is_recorded(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    _eval(tiny_random_model_dir, tmp_path / "plain")
    summary = _eval(tiny_random_model_dir, tmp_path / "em", em_inf=EM_INF)[BENCH]
    plain, em = _samples(tmp_path / "plain", tiny_random_model_dir), _samples(tmp_path / "em", tiny_random_model_dir)
    assert len(plain) == len(em) == 6 and plain != em  # same seeds, lower-entropy logits
    out = tmp_path / "em" / f"base-{runner.slugify(tiny_random_model_dir.resolve().name)}" / "eval" / BENCH
    assert json.loads((out / "settings.json").read_text())["em_inf"] == EM_INF
    assert summary["status"] == "completed"
    with pytest.raises(UserError, match="em_inf"):  # a plain eval never resumes EM-INF samples
        _eval(tiny_random_model_dir, tmp_path / "em")


def test_em_inf_needs_the_hf_backend(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="hf backend"):
        make_backend("vllm", tmp_path, em_inf=EM_INF)
