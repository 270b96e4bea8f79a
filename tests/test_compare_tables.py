"""Tables of `rlbench compare`: cell values, best marking, baselines, references, formats and golden files.

Golden files live in tests/fixtures/compare/ and the tests never rewrite them: on a difference the failure names a
temp file holding the new output; review the diff and copy it over only if the change is intended.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
from rich.console import Console
from scipy import stats
from test_compare_fixtures import make_run, standard_results

from rlbench_cli.compare import run_compare
from rlbench_cli.errors import UserError

GOLDEN = Path(__file__).parent / "fixtures" / "compare"
EXTRAS = ["pass@k", "maj@k", "entropy", "wall_time", "gen_tokens"]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def compare(root: Path, **kw) -> dict:
    return run_compare(root, console=quiet(), **kw)


def row(result: dict, label: str) -> dict:
    return next(r for r in result["rows"] if r["label"] == label)


def check_golden(name: str, text: str) -> None:
    """The tests never write golden files: on a difference the new text goes to a temp file to review and copy."""
    path = GOLDEN / name
    if path.exists() and text == path.read_text(encoding="utf-8"):
        return
    fd, new = tempfile.mkstemp(prefix=f"{path.stem}-", suffix=path.suffix)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    pytest.fail(f"output differs from golden file {path}: review `diff {path} {new}`, and if the change is "
                f"intended, `cp {new} {path}`")


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return standard_results(tmp_path / "results")


def test_golden_markdown(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    compare(results, fmt="markdown", output=out, baseline="Base", extra_columns=EXTRAS)
    check_golden("table.md", out.read_text(encoding="utf-8"))


def test_golden_latex(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.tex"
    compare(results, fmt="latex", output=out, baseline="tiny-grpo", reference="minimal-rl")
    text = out.read_text(encoding="utf-8")
    check_golden("table.tex", text)
    # Every body line has as many cells as the header; "[" never directly follows a row break.
    body = [ln for ln in text.splitlines() if ln.strip().endswith(r"\\")]
    assert len({ln.count(" & ") for ln in body}) == 1
    assert not any(ln.strip().startswith("[") for ln in body)


def test_single_seed_cells_use_problem_se(results: Path) -> None:
    # The fixture writes mean@k_se itself; drop it so the SE below is compare's own, from the per-problem counts.
    for bench in ("math500", "minerva_math"):
        path = results / "base-tiny" / "eval" / bench / "summary.json"
        summary = json.loads(path.read_text())
        del summary["metrics"]["mean@k_se"]
        path.write_text(json.dumps(summary))
    res = compare(results)
    base = row(res, "Base")
    m = base["cells"]["math500"]
    fr = [0, 0.25, 0, 0.5, 0.25, 0]
    mean = sum(fr) / 6
    se = math.sqrt(sum((x - mean) ** 2 for x in fr) / 5 / 6)
    assert math.isclose(m["value"], mean) and math.isclose(m["uncertainty"], se)
    assert m["uncertainty_kind"] == "se" and m["n_seeds"] == 1
    mm = base["cells"]["minerva_math"]
    avg = base["cells"]["average"]
    assert math.isclose(avg["value"], (m["value"] + mm["value"]) / 2)
    fr_mm = [0, 0, 0.25, 0, 0.25, 0]
    se_mm = math.sqrt(sum((x - 1 / 12) ** 2 for x in fr_mm) / 5 / 6)
    assert math.isclose(mm["uncertainty"], se_mm)
    assert math.isclose(avg["uncertainty"], math.sqrt(se ** 2 + se_mm ** 2) / 2)


def test_single_seed_cell_reports_the_evals_own_se(results: Path) -> None:
    """A summary's mean@k_se (the eval's number) is what the cell shows, not a recomputation."""
    path = results / "base-tiny" / "eval" / "math500" / "summary.json"
    summary = json.loads(path.read_text())
    summary["metrics"]["mean@k_se"] = 0.0123
    path.write_text(json.dumps(summary))
    assert row(compare(results), "Base")["cells"]["math500"]["uncertainty"] == 0.0123


def test_multi_seed_cells_use_t_interval(results: Path) -> None:
    res = compare(results)
    grpo = row(res, "GRPO")
    assert grpo["n_seeds"] == 3 and sorted(grpo["seeds"]) == [0, 1, 2]
    per_seed = [17 / 24, 18 / 24, 18 / 24]
    mean = sum(per_seed) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_seed) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    cell = grpo["cells"]["math500"]
    assert math.isclose(cell["value"], mean) and math.isclose(cell["uncertainty"], half)
    assert cell["uncertainty_kind"] == "ci95"
    # Average: t-interval over the per-seed averages of both benchmarks.
    minerva = [11 / 24, 11 / 24, 12 / 24]
    seed_avgs = [(a + b) / 2 for a, b in zip(per_seed, minerva, strict=True)]
    m2, h2 = sum(seed_avgs) / 3, None
    sd2 = math.sqrt(sum((x - m2) ** 2 for x in seed_avgs) / 2)
    h2 = stats.t.ppf(0.975, 2) * sd2 / math.sqrt(3)
    assert math.isclose(grpo["cells"]["average"]["value"], m2)
    assert math.isclose(grpo["cells"]["average"]["uncertainty"], h2)


def test_missing_benchmark_is_dash_and_no_average(results: Path) -> None:
    res = compare(results, fmt="markdown")
    raft = row(res, "RAFT")
    assert raft["cells"]["minerva_math"] is None and raft["cells"]["average"] is None
    console = quiet()
    run_compare(results, console=console, fmt="markdown", output=None)
    line = next(ln for ln in console.file.getvalue().splitlines() if ln.startswith("| RAFT "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:5] == ["RAFT", "1", "66.7 ± 17.9", "–", "–"], cells  # MATH500 only: Minerva and Average dashed


def test_best_marking_and_row_order(results: Path) -> None:
    res = compare(results, reference="minimal-rl")
    labels = [r["label"] for r in res["rows"]]
    assert labels[0] == "Base"  # base first
    assert labels.index("RAFT") < labels.index("GRPO")  # algorithm order: raft before grpo
    best = {
        k: [r["label"] for r in res["rows"] if r["cells"].get(k) and r["cells"][k]["best"]]
        for k in ("math500", "minerva_math", "average")
    }
    assert best == {"math500": ["GRPO"], "minerva_math": ["GRPO"], "average": ["GRPO"]}
    # Paper rows are higher on MATH500 but never marked best.
    paper = [r for r in res["rows"] if r["kind"] == "reference"]
    assert paper and all(not c["best"] for r in paper for c in r["cells"].values() if c)


def test_reference_rows_only_in_matching_columns(tmp_path: Path) -> None:
    # Exactly the paper's three benchmarks at the paper protocol → per-benchmark and Average reference cells.
    root = tmp_path / "r"
    evals = {"math500": [8, 16, 4], "minerva_math": [2, 3, 1], "olympiadbench": [5, 6, 7]}
    make_run(root, "grpo", recipe="g", label="GRPO", algorithm="grpo", evals=evals, k=16)
    res = compare(root, reference="minimal-rl")
    v1 = row(res, "[paper v1] GRPO (Qwen2.5-Math-7B)")
    assert {k: round(c["value"] * 100, 1) for k, c in v1["cells"].items() if c} == {
        "math500": 81.6,
        "minerva_math": 36.7,
        "olympiadbench": 43.3,
        "average": 53.9,
    }
    v2 = row(res, "[paper v2] GRPO (LLaMA-3.2-3B-Instruct)")
    assert [k for k, c in v2["cells"].items() if c] == ["average"]
    assert not any("paper used" in w for w in res["warnings"])
    # A testbed-only table has no matching column: no paper rows, one warning.
    root2 = tmp_path / "r2"
    make_run(root2, "grpo", recipe="g", label="GRPO", evals={"testbed_easy": [1, 2]})
    res2 = compare(root2, reference="minimal-rl")
    assert not any(r["kind"] == "reference" for r in res2["rows"])
    assert any("no column" in w for w in res2["warnings"])
    with pytest.raises(UserError, match="unknown reference"):
        compare(root2, reference="nope")


def test_baseline_significance(results: Path) -> None:
    res = compare(results, baseline="Base", fmt="json")
    comps = {(c["row"], c["column"]): c for c in res["stats"]["comparisons"]}
    assert set(comps) == {
        ("RAFT", "math500"),
        ("GRPO", "math500"),
        ("GRPO", "minerva_math"),
        ("GRPO", "average"),
    }
    g = comps[("GRPO", "average")]
    base, grpo = row(res, "Base"), row(res, "GRPO")
    assert math.isclose(g["diff"], grpo["cells"]["average"]["value"] - base["cells"]["average"]["value"])
    assert g["ci_low"] <= g["diff"] <= g["ci_high"] and g["p_value"] < 0.05
    assert grpo["cells"]["average"]["significant"] is True
    assert base["baseline"] is True and base["cells"]["average"]["vs_baseline"] is None
    # Deterministic across calls.
    assert compare(results, baseline="Base")["stats"] == res["stats"]


def test_baseline_by_label_case_insensitive_and_unknown(results: Path) -> None:
    assert compare(results, baseline="grpo")["stats"]["baseline"] == "GRPO"
    with pytest.raises(UserError, match="no run matches baseline") as e:
        compare(results, baseline="ppo")
    assert "tiny-grpo" in str(e.value)


def test_extra_columns(results: Path) -> None:
    res = compare(results, extra_columns=EXTRAS)
    grpo, raft, base = row(res, "GRPO"), row(res, "RAFT"), row(res, "Base")
    assert math.isclose(
        grpo["extras"]["entropy"], (0.5 + 0.52 + 0.54) / 3
    )  # final entropy per seed, averaged
    assert math.isclose(grpo["extras"]["wall_time"], 101.0)
    assert grpo["extras"]["gen_tokens"] == 5000  # cumulative counter: last value
    assert math.isclose(raft["extras"]["pass@k"], 5 / 6)
    assert base["extras"]["entropy"] is None and base["extras"]["wall_time"] is None
    with pytest.raises(UserError, match="unknown extra column"):
        compare(results, extra_columns=["speed"])


@pytest.mark.parametrize("fmt", ["rich", "markdown", "latex", "csv", "json"])
def test_every_format_writes_output(results: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"t.{fmt}"
    res = compare(results, fmt=fmt, output=out, baseline="Base")
    text = out.read_text(encoding="utf-8")
    assert "GRPO" in text and res["output"] == str(out)
    if fmt == "json":
        assert json.loads(text)["rows"] == json.loads(json.dumps(res["rows"]))
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        grpo = next(r for r in rows if r["method"] == "GRPO")
        assert math.isclose(
            float(grpo["MATH500"]), 100 * row(res, "GRPO")["cells"]["math500"]["value"], abs_tol=1e-3
        )
        assert float(grpo["MATH500 p"]) < 0.05
    if fmt == "rich":
        assert "73.6 ± 6.0" in text
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_machine_format_prints_parseable_stdout(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (results / "broken").mkdir()
    (results / "broken" / "manifest.json").write_text("{nope")
    run_compare(results, fmt="json")
    captured = capsys.readouterr()
    assert json.loads(captured.out)["warnings"]  # stdout is pure JSON
    assert "warning:" in captured.err


def test_unknown_format_and_metric(results: Path) -> None:
    with pytest.raises(UserError, match="format"):
        compare(results, fmt="html")
    with pytest.raises(UserError, match="metric"):
        compare(results, metric="best@k")


def test_other_metric(results: Path) -> None:
    res = compare(results, metric="pass@k", baseline="Base")
    assert math.isclose(row(res, "Base")["cells"]["math500"]["value"], 3 / 6)
    assert res["metric"] == "pass@k"
