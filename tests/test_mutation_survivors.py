"""Tests for mutants `make mutants` found alive that change a result a user sees (hand-computed expectations).

Each test names the survivor it kills (mutmut's function and change); the README lists those left alive and why.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlbench_cli.compare.stats import combine_se, paired_bootstrap
from rlbench_cli.evaluation.metrics import majority_answer, standard_error, summarize


def test_summarize_of_nothing_has_the_full_schema() -> None:
    """summarize: the empty summary's keys (a mutant renamed them)."""
    assert summarize([]) == {"mean@k": 0.0, "mean@k_se": 0.0, "pass@k": 0.0, "pass@1": 0.0, "maj@k": 0.0, "k": 0,
                             "n_problems": 0}


@pytest.mark.parametrize("bad", [{"id": "a", "n": 4, "n_correct": 5, "maj_correct": True},
                                 {"id": "a", "n": 4, "n_correct": -1, "maj_correct": False},
                                 {"id": "a", "n": 0, "n_correct": 0, "maj_correct": False}])
def test_summarize_rejects_impossible_counts(bad: dict) -> None:
    """summarize: `n < 1 or not 0 <= c <= n` turned into `and` let c > n through."""
    with pytest.raises(ValueError, match="bad counts"):
        summarize([{"id": "ok", "n": 4, "n_correct": 1, "maj_correct": False}, bad])


def test_standard_error_of_two_problems() -> None:
    """standard_error: `n < 2` -> `n <= 2` returned 0 for two problems. sd([0, 1]) = 1/sqrt(2), / sqrt(2)."""
    assert standard_error([0.0, 1.0]) == pytest.approx(0.5)
    assert summarize([{"id": "a", "n": 2, "n_correct": 0}, {"id": "b", "n": 2, "n_correct": 2}])["mean@k_se"] == \
        pytest.approx(0.5)


def test_majority_vote_ignores_spacing_inside_an_answer() -> None:
    """_vote_key: answers differing only in spaces vote together ("".join, a mutant joined with "XXXX")."""
    assert majority_answer(["3", "\\frac {1}{2}", "\\frac{1} {2}"]) == 1


def test_combine_se_of_nothing_is_nan() -> None:
    """combine_se([]): nan (a mutant made it raise)."""
    assert math.isnan(combine_se([]))


def test_bootstrap_resamples_baseline_seeds() -> None:
    """paired_bootstrap: the baseline's seeds are resampled too (a mutant drew only seed 0 of the baseline).
    Arm at 0.5 vs baseline seeds at 1 and 0: diff 0, interval [-0.5, 0.5] from the baseline's seed draws."""
    arm = np.full((1, 20), 0.5)
    base = np.array([np.ones(20), np.zeros(20)])
    r = paired_bootstrap([arm], [base], n_boot=4000)
    assert r.diff == 0.0
    assert (r.ci_low, r.ci_high) == (-0.5, 0.5)
    assert r.n_seeds == 1 and r.n_seeds_baseline == 2


def test_bootstrap_draws_follow_the_benchmark_key_not_its_position() -> None:
    """paired_bootstrap: draws depend on (seed, key, problem count), so listing the benchmarks in another order
    gives the same result (a mutant ignored `keys`, another gave every benchmark the same key)."""
    rng = np.random.default_rng(7)
    a1, b1, a2, b2 = (rng.random((1, 30)) for _ in range(4))
    one = paired_bootstrap([a1, a2], [b1, b2], keys=["math500", "minerva_math"], n_boot=3000)
    two = paired_bootstrap([a2, a1], [b2, b1], keys=["minerva_math", "math500"], n_boot=3000)
    assert math.isclose(one.diff, two.diff) and math.isclose(one.ci_low, two.ci_low)
    assert math.isclose(one.ci_high, two.ci_high) and math.isclose(one.p_value, two.p_value)
    # Default keys (positions) still give each benchmark its own draws: gains [1, 0] and [0, 1] average to
    # 0.5 in every replicate only if both benchmarks share one draw.
    r = paired_bootstrap([np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])], [np.zeros((1, 2))] * 2, n_boot=4000)
    assert (r.ci_low, r.ci_high) == (0.0, 1.0)


@pytest.mark.parametrize(("text", "rows"), [
    ('{"a": 1}\n\n{"a": 2}\n', [{"a": 1}, {"a": 2}]),  # a blank line in the middle is skipped, not the end
    ('{"a": 1}\n{"a": 2', [{"a": 1}]),  # a truncated last line (killed writer) is dropped
    ('{"a": 1}\n{"a": 2\n\n', [{"a": 1}]),  # ... also when blank lines follow it
    ("", []),
])
def test_read_jsonl_table(tmp_path, text: str, rows: list) -> None:
    """read_jsonl: mutants stopped at a blank line, or returned None for a truncated tail."""
    from rlbench_cli.records import read_jsonl

    path = tmp_path / "m.jsonl"
    path.write_text(text, encoding="utf-8")
    assert read_jsonl(path) == rows


def test_read_jsonl_refuses_a_corrupt_middle_line_and_an_untolerated_tail(tmp_path) -> None:
    """read_jsonl: only the last line may be torn, and only when tolerated (mutants flipped both rules)."""
    from rlbench_cli.records import read_jsonl

    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError):
        read_jsonl(path)
    path.write_text('{"a": 1}\n{"a": 2', encoding="utf-8")
    with pytest.raises(ValueError):
        read_jsonl(path, tolerate_truncated_tail=False)


def test_append_jsonl_creates_folders_and_writes_any_value_as_text(tmp_path) -> None:
    """append_jsonl: nested new folders (mkdir parents) and non-JSON values via str (default=str)."""
    from pathlib import Path

    from rlbench_cli.records import append_jsonl, read_jsonl

    path = tmp_path / "run" / "eval" / "timings.jsonl"
    append_jsonl(path, [{"path": Path("/x/y"), "n": 1}])
    append_jsonl(path, [{"n": 2}])
    assert read_jsonl(path) == [{"path": "/x/y", "n": 1}, {"n": 2}]


def test_concat_rollouts_pads_prompts_left_completions_right() -> None:
    """resampling.concat_rollouts (DAPO refill): rollouts of different widths merge with prompts padded on the left,
    completions on the right, ids with the pad id and masks with 0; counts add up (mutants flipped each)."""
    import torch

    from rlbench_cli.training.resampling import concat_rollouts

    a = {"prompt_ids": torch.tensor([[5, 6]]), "prompt_mask": torch.tensor([[1, 1]]),
         "completion_ids": torch.tensor([[7]]), "completion_mask": torch.tensor([[1]]),
         "advantages": torch.tensor([0.5]), "num_items_in_batch": torch.tensor(1.0), "mode": "train"}
    b = {"prompt_ids": torch.tensor([[1, 2, 3]]), "prompt_mask": torch.tensor([[1, 1, 1]]),
         "completion_ids": torch.tensor([[8, 9]]), "completion_mask": torch.tensor([[1, 1]]),
         "advantages": torch.tensor([-0.5]), "num_items_in_batch": torch.tensor(2.0), "mode": "other"}
    m = concat_rollouts([a, b], pad_id=99)
    assert m["prompt_ids"].tolist() == [[99, 5, 6], [1, 2, 3]]
    assert m["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert m["completion_ids"].tolist() == [[7, 99], [8, 9]]
    assert m["completion_mask"].tolist() == [[1, 0], [1, 1]]
    assert m["advantages"].tolist() == [0.5, -0.5]
    assert float(m["num_items_in_batch"]) == 3.0 and m["mode"] == "train"
    assert concat_rollouts([a], pad_id=99) is a
