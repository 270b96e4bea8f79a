"""`rlbench reproduce`: shipped findings validate, verdicts follow the declared rule, runs are cached by key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlbench_cli.errors import UserError
from rlbench_cli.reproduce.plan import is_done, plan_runs, run_spec
from rlbench_cli.reproduce.spec import Arm, Finding, load_finding, load_findings
from rlbench_cli.reproduce.verdict import eval_metric, train_metric, verdict

REQUIRED = {
    "minimal_rl_raftpp_faster_early", "minimal_rl_raftpp_entropy_lower", "minimal_rl_grpo_ends_at_least_raftpp",
    "minimal_rl_reinforce_drop_all_wrong", "minimal_rl_reinforce_rej_at_least_grpo", "dr_grpo_incorrect_length",
    "dapo_clip_higher_entropy", "yue_rl_beats_base_pass1", "yue_base_catches_up_large_k",
}


def test_shipped_findings_validate_and_their_recipes_load() -> None:
    shipped = load_findings()
    assert REQUIRED <= set(shipped)
    for finding, digest, path in shipped.values():
        assert len(digest) == 64 and path.stem == finding.id
        plans = plan_runs([finding], seeds=2)[finding.id]
        assert set(plans) == set(finding.arms) and all(len(v) == 2 for v in plans.values())
        keys = [s.key for v in plans.values() for s in v]
        assert len(set(keys)) == len(keys), f"{finding.id}: two arms share a run; they would be identical"


def test_make_demo_runs_shipped_minimal_rl_findings_covering_the_core_algorithms() -> None:
    """`make demo` trains its runs through these findings: a typo would silently drop an arm from the demo."""
    import re

    text = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    block = re.search(r"MINIMAL_RL_FINDINGS \?=((?:.*\\\n)*.*)", text)
    assert block, "Makefile: MINIMAL_RL_FINDINGS not found"
    ids = block.group(1).replace("\\", " ").split()
    shipped = load_findings()
    assert ids and set(ids) <= set(shipped), set(ids) - set(shipped)
    recipes = {arm.recipe for i in ids for arm in shipped[i][0].arms.values()}
    for core in ("raft", "raft_pp", "reinforce", "reinforce_rej", "grpo"):  # issue 11's demo: at least these
        assert f"tiny/{core}.yaml" in recipes, core
    demo = text[text.index("\ndemo:"):text.index("\ndemo-all:")]
    assert "$(MINIMAL_RL_FINDINGS) --seeds $(SEEDS)" in demo and "compare $(DEMO_DIR)/runs --baseline grpo" in demo


def _finding(**over) -> dict:
    base = {"id": "x_y", "claim": "c", "source": {"paper": "p", "where": "w"},
            "arms": {"a": {"recipe": "tiny/grpo.yaml"}, "b": {"recipe": "tiny/raft_pp.yaml"}},
            "metric": {"kind": "eval_mean_at_k"}, "relation": {"type": "greater", "a": "a", "b": "b"}}
    base.update(over)
    return base


@pytest.mark.parametrize(("over", "key"), [
    ({"relation": {"type": "greater", "a": "a", "b": "zzz"}}, "(top level)"),
    ({"metric": {"kind": "entropy_end"}}, "metric"),
    ({"metric": {"kind": "mean@16"}}, "metric.kind"),
    ({"seeds": 0}, "seeds"),
    ({"colour": "red"}, "colour"),
])
def test_bad_finding_files_name_the_key(tmp_path: Path, over: dict, key: str) -> None:
    import yaml

    path = tmp_path / "x_y.yaml"
    path.write_text(yaml.safe_dump(_finding(**over)))
    with pytest.raises(UserError) as e:
        load_finding(path)
    assert key in str(e.value) and str(path) in str(e.value)


def test_file_name_must_match_id(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(_finding()))
    with pytest.raises(UserError, match="differs from its file name"):
        load_finding(path)


GREATER = Finding.model_validate(_finding())
AT_LEAST = Finding.model_validate(_finding(relation={"type": "at_least", "a": "a", "b": "b", "margin": 2.0}))


@pytest.mark.parametrize(("finding", "a", "b", "expected"), [
    # differences 3, 4, 5: mean 4, sd 1, CI 4 ± 4.303/sqrt(3) = [1.52, 6.48] > 0
    (GREATER, [13.0, 14.0, 15.0], [10.0, 10.0, 10.0], "holds"),
    (GREATER, [7.0, 6.0, 5.0], [10.0, 10.0, 10.0], "does not hold"),
    (GREATER, [11.0, 9.0, 10.5], [10.0, 10.0, 10.0], "inconclusive"),
    # non-inferiority, margin 2: differences -1, -0.5, -1.5 -> CI [-2.24, 0.24] contains -2
    (AT_LEAST, [9.0, 9.5, 8.5], [10.0, 10.0, 10.0], "inconclusive"),
    (AT_LEAST, [10.0, 10.2, 10.4], [10.0, 10.0, 10.0], "holds"),
    (AT_LEAST, [6.0, 6.5, 5.5], [10.0, 10.0, 10.0], "does not hold"),
])
def test_verdict_rule(finding: Finding, a: list[float], b: list[float], expected: str) -> None:
    v, test, _ = verdict(finding, dict(enumerate(a)), dict(enumerate(b)))
    assert v == expected, test


@pytest.mark.parametrize(("finding", "diffs", "expected"), [
    # effect size gap / sd = 1 -> 10 seeds, 0.5 -> 34 (paired t, two-sided 0.05, 80%: the G*Power reference values)
    (GREATER, [0.0, 1.0, 2.0], 10),          # mean 1, sd 1, CI [-1.48, 3.48]: inconclusive
    (AT_LEAST, [-3.0, -1.0, 1.0], 34),       # mean -1, 1 above the threshold -2, sd 2: inconclusive
    (GREATER, [-1.0, 0.0, 1.0], None),       # on the threshold: no number of seeds settles it
    (GREATER, [3.0, 4.0, 5.0], None),        # holds: nothing to plan
])
def test_seeds_to_settle_an_inconclusive_finding(finding: Finding, diffs: list[float], expected: int | None) -> None:
    from rlbench_cli.reproduce.verdict import seeds_to_settle

    b = {i: 10.0 for i in range(len(diffs))}
    a = {i: 10.0 + d for i, d in enumerate(diffs)}
    v, test, _ = verdict(finding, a, b)
    assert seeds_to_settle(finding, test, v) == expected, (v, test)


@pytest.mark.parametrize("finding", [GREATER, AT_LEAST])
def test_identical_arms_never_hold(finding: Finding) -> None:
    """Identical arms give identical runs (same recipe, same seed -> same cache key -> same numbers)."""
    arm = Arm(recipe="tiny/grpo.yaml")
    assert run_spec(arm, 0).key == run_spec(Arm(recipe="tiny/grpo.yaml"), 0).key
    values = {0: 37.1, 1: 38.4, 2: 36.9}
    v, _, reason = verdict(finding, values, dict(values))
    assert v == "inconclusive" and "identical" in reason
    assert verdict(finding, {0: 40.0}, {0: 30.0})[0] == "inconclusive"  # one seed: no seed variance


def test_run_keys_track_overrides_and_seeds() -> None:
    plain = run_spec(Arm(recipe="tiny/grpo.yaml"), 0)
    assert run_spec(Arm(recipe="tiny/grpo.yaml"), 1).key != plain.key
    assert run_spec(Arm(recipe="tiny/grpo.yaml", overrides=["algorithm.clip_high=0.28"]), 0).key != plain.key
    assert run_spec(Arm(recipe="tiny/grpo.yaml", overrides=["output.dir=elsewhere"]), 0).key == plain.key


def test_an_arm_with_overrides_is_its_own_compare_row() -> None:
    """`rlbench compare` groups seeds by recipe name: Reinforce with drop_all_wrong must not pool with Reinforce."""
    from rlbench_cli.reproduce.plan import load_arm_recipe

    plain = load_arm_recipe(Arm(recipe="tiny/reinforce.yaml"), 0)
    dropped = load_arm_recipe(Arm(recipe="tiny/reinforce.yaml", overrides=["algorithm.drop_all_wrong=true"]), 0)
    threads = load_arm_recipe(Arm(recipe="tiny/reinforce.yaml", overrides=["torch_threads=1"]), 0)
    assert (plain.name, dropped.name, threads.name) == (
        "tiny-reinforce", "tiny-reinforce.drop_all_wrong_true", "tiny-reinforce")
    assert run_spec(Arm(recipe="tiny/reinforce.yaml", overrides=["algorithm.drop_all_wrong=true"]), 0).key.startswith(
        "tiny-reinforce.drop_all_wrong_true-s0-")


def test_metrics_from_run_files_and_cache_marker(tmp_path: Path) -> None:
    from rlbench_cli.reproduce.spec import Metric

    run = tmp_path / "r"
    for bench, counts in (("testbed_easy", [4, 0]), ("testbed_hard", [1, 1])):
        d = run / "eval" / bench
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"per_problem": [{"n": 4, "n_correct": c} for c in counts]}))
    assert eval_metric(run, "eval_mean_at_k") == pytest.approx(100 * (0.5 + 0.25) / 2)
    assert eval_metric(run, "eval_pass_at_k") == pytest.approx(100 * (0.5 + 1.0) / 2)
    rows = [{"samples": 4 * (1 + i // 2), "accuracy": 0.1 * (1 + i // 2), "entropy": 1.0 - 0.1 * i,
             "incorrect_len": 10.0 + i} for i in range(8)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # rollouts (samples 4, 8, 12, 16) with accuracy 0.1..0.4; the first 8 samples: mean(0.1, 0.2)
    assert train_metric(run, Metric(kind="train_accuracy_auc", samples=8)) == pytest.approx(15.0)
    assert train_metric(run, Metric(kind="entropy_end", last_steps=2)) == pytest.approx((0.4 + 0.3) / 2)
    assert train_metric(run, Metric(kind="incorrect_length_end", last_steps=4)) == pytest.approx(15.5)
    spec = run_spec(Arm(recipe="tiny/grpo.yaml"), 0)
    assert not is_done(tmp_path, spec, needs_eval=False)
    (tmp_path / spec.key).mkdir()
    (tmp_path / spec.key / "reproduce.json").write_text(json.dumps({"trained": True}))
    assert is_done(tmp_path, spec, needs_eval=False) and not is_done(tmp_path, spec, needs_eval=True)


def test_cli_list_and_unknown_finding(tmp_path: Path) -> None:
    from helpers import run_cli

    code, out, _ = run_cli("reproduce", "--list")
    assert code == 0 and "minimal_rl_raftpp_faster_early" in out
    code, out, err = run_cli("reproduce", "no_such_finding", "--output", str(tmp_path))
    assert code == 2 and "unknown finding" in out + err


@pytest.mark.slow
def test_reproduce_end_to_end_caches_runs(tmp_path: Path, tiny_random_model_dir: Path) -> None:
    """Two tiny findings (2 seeds): identical arms -> inconclusive; runs are shared, cached and not retrained."""
    import yaml
    from helpers import tiny_recipe

    from rlbench_cli.reproduce.report import reproduce

    recipe = tiny_recipe("grpo", tiny_random_model_dir, tmp_path / "unused")
    recipe["optim"]["max_steps"] = 2
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    found = tmp_path / "findings"
    found.mkdir()
    same = _finding(id="same_arms", arms={"a": {"recipe": str(tmp_path / "r.yaml")},
                                          "b": {"recipe": str(tmp_path / "r.yaml")}},
                    metric={"kind": "eval_mean_at_k"}, seeds=2)
    lr = _finding(id="lr_entropy", arms={"a": {"recipe": str(tmp_path / "r.yaml"), "overrides": ["optim.lr=0.01"]},
                                         "b": {"recipe": str(tmp_path / "r.yaml")}},
                  metric={"kind": "entropy_end", "last_steps": 1}, seeds=2)
    for f in (same, lr):
        (found / f"{f['id']}.yaml").write_text(yaml.safe_dump(f))
    out = tmp_path / "out"
    report = reproduce(None, None, out, findings_folder=found)
    by_id = {f["id"]: f for f in report["findings"]}
    assert by_id["same_arms"]["verdict"] == "inconclusive"
    assert by_id["same_arms"]["runs"]["a"] == by_id["same_arms"]["runs"]["b"]
    assert by_id["lr_entropy"]["verdict"] in ("holds", "does not hold", "inconclusive")
    assert by_id["lr_entropy"]["statistic"]["test"] == "paired-t" and by_id["lr_entropy"]["seeds"] == 2
    assert len(list((out / "runs").iterdir())) == 4  # (base recipe, lr recipe) x 2 seeds, shared across findings
    md = (out / "report.md").read_text()
    assert "same_arms" in md and json.loads((out / "report.json").read_text())["findings"][0]["sha256"]
    # a rerun trains nothing: every run is cached
    import rlbench_cli.training.run as run_mod

    def boom(*a, **k):
        raise AssertionError("retrained a cached run")

    orig, run_mod.run_training = run_mod.run_training, boom
    try:
        assert reproduce(None, None, out, findings_folder=found)["findings"] == report["findings"]
    finally:
        run_mod.run_training = orig
