"""Same command, same numbers: `rlbench compare --baseline` intervals and p-values are identical across processes
(the bootstrap's draws are seeded, not merely cached), and a two-benchmark bootstrap's interval is the analytic one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_compare_fixtures import standard_results

from rlbench_cli.compare.stats import paired_bootstrap


def _compare_json(results: Path) -> dict:
    import rlbench_cli

    src = str(Path(rlbench_cli.__file__).resolve().parents[1])  # the rlbench_cli this test imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "PYTHONHASHSEED": "random"}
    proc = subprocess.run([sys.executable, "-c", "from rlbench_cli.cli import main; main()", "compare", str(results),
                           "--format", "json", "--baseline", "Base"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_compare_baseline_is_identical_across_processes(tmp_path: Path) -> None:
    results = standard_results(tmp_path / "results")
    first, second = _compare_json(results), _compare_json(results)
    comps = first["stats"]["comparisons"]
    assert comps, "no baseline comparisons: nothing was tested"
    assert all(c["ci_low"] < c["ci_high"] and 0 < c["p_value"] <= 1 for c in comps if c["row"] == "RAFT")
    assert first["stats"] == second["stats"]
    cells = [(r["label"], k, c.get("vs_baseline"), c.get("significant"))
             for r in first["rows"] for k, c in r["cells"].items() if c]
    assert cells == [(r["label"], k, c.get("vs_baseline"), c.get("significant"))
                     for r in second["rows"] for k, c in r["cells"].items() if c]
    assert any(v is not None for _, _, v, _ in cells)


def test_two_benchmark_interval_draws_each_benchmark_independently() -> None:
    """Gains [1, 0] on one benchmark and [0, 1] on another (2 problems each). Average diff per replicate =
    (c/2 + c'/2) / 2 with c, c' ~ Binomial(2, 1/2) independent: values 0, .25, .5, .75, 1 with probabilities
    1/16, 4/16, 6/16, 4/16, 1/16, so the 95% percentile interval is [0, 1]. Shared draws would give [0.5, 0.5];
    pooling the problems instead of averaging benchmarks would give the same mean but other quantiles."""
    arm = [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])]
    base = [np.zeros((1, 2)), np.zeros((1, 2))]
    r = paired_bootstrap(arm, base, keys=["math500", "minerva_math"], n_boot=8000, seed=0)
    assert r.diff == 0.5
    assert (r.ci_low, r.ci_high) == (0.0, 1.0)
    # p = 2 * P(diff <= 0) = 2/16 (+1 correction)
    assert r.p_value == pytest.approx(2 / 16, abs=0.02)
    assert r.n_problems == 4


def test_two_benchmark_interval_of_unequal_sizes() -> None:
    """Gain [1, 0] on a 2-problem benchmark, 0 on a 1-problem one: Average in {0, .25, .5} with probabilities
    1/4, 1/2, 1/4 -> interval [0, 0.5], p = 2 * 1/4."""
    r = paired_bootstrap([np.array([[1.0, 0.0]]), np.array([[0.0]])], [np.zeros((1, 2)), np.zeros((1, 1))],
                         keys=["a", "b"], n_boot=8000)
    assert math.isclose(r.diff, 0.25)
    assert (r.ci_low, r.ci_high) == (0.0, 0.5)
    assert r.p_value == pytest.approx(0.5, abs=0.03)
