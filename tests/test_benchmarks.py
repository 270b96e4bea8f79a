"""Benchmark loading: the three real formats (fixtures and, when present, the real files), testbed splits,
strict vs lenient loading, resolution order (data_dir, RLBENCH_DATA_DIR, hub) and error messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import require_shared_benchmarks

from rlbench_cli.errors import UserError
from rlbench_cli.evaluation.benchmarks import BENCHMARKS, load_benchmark, parse_tolerance
from rlbench_cli.records import sha256_file

FIXTURES = Path(__file__).parent / "fixtures" / "bench"


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLBENCH_DATA_DIR", raising=False)


@pytest.mark.parametrize(
    ("name", "display", "golds"),
    [
        ("math500", "MATH500", ["2", "\\frac{1}{2}", "\\text{(C)}"]),
        ("minerva_math", "Minerva Math", ["200", "\\{1, \\{2\\}\\}"]),
        ("olympiadbench", "OlympiadBench", ["-2,2", "90", "4.2"]),
    ],
)
def test_fixture_formats(name: str, display: str, golds: list[str]) -> None:
    bench = load_benchmark(name, data_dir=FIXTURES)
    assert bench.display_name == display
    assert [p.gold for p in bench.problems] == golds
    assert bench.sha256 == sha256_file(FIXTURES / BENCHMARKS[name].file_name)
    assert bench.skipped == 0
    assert len({p.id for p in bench.problems}) == len(bench.problems)


def test_olympiad_meta() -> None:
    probs = load_benchmark("olympiadbench", data_dir=FIXTURES).problems
    assert probs[0].meta["is_multiple_answer"] is True
    assert probs[0].problem.startswith("Find all")
    assert probs[1].meta["unit"] == "^{\\circ}"
    assert probs[2].meta["tolerance"] == pytest.approx(0.1)
    assert probs[0].meta["tolerance"] is None


@pytest.mark.parametrize(("error", "expected"), [(None, None), ("", None), ("1e-1", 0.1), ("0.5", 0.5),
                                                 (["2"], 2.0), ("1e-2, 1e-2", 0.01)])
def test_parse_tolerance(error: object, expected: float | None) -> None:
    assert parse_tolerance(error) == (pytest.approx(expected) if expected is not None else None)


def test_env_var_and_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLBENCH_DATA_DIR", str(FIXTURES))
    full = load_benchmark("math500")
    part = load_benchmark("math500", limit=2)
    assert len(part.problems) == 2
    assert part.sha256 != full.sha256  # the hash identifies exactly the problems used
    assert [p.id for p in part.problems] == [p.id for p in full.problems[:2]]


BAD_LINES = [
    ("not json", "{oops", "not valid JSON"),
    ("missing field", json.dumps({"problem": "x"}), "'answer'"),
    ("empty gold", json.dumps({"problem": "x", "answer": "  "}), "empty gold"),
    ("array row", "[1, 2]", "not a JSON object"),
]


@pytest.mark.parametrize(("label", "line", "message"), BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_strict_and_lenient(tmp_path: Path, label: str, line: str, message: str) -> None:
    path = tmp_path / "math500.jsonl"
    good = (FIXTURES / "math500.jsonl").read_text().splitlines()
    path.write_text("\n".join([good[0], line, good[1]]) + "\n")
    with pytest.raises(UserError) as e:
        load_benchmark("math500", data_dir=tmp_path)
    assert "math500.jsonl:2" in str(e.value) and message in str(e.value)
    bench = load_benchmark("math500", data_dir=tmp_path, lenient=True)
    assert bench.skipped == 1 and len(bench.problems) == 2


def test_minerva_without_box_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "minerva_math.jsonl").write_text(json.dumps({"problem": "p", "solution": "no box", "idx": 0}))
    with pytest.raises(UserError, match=r"minerva_math.jsonl:1.*boxed"):
        load_benchmark("minerva_math", data_dir=tmp_path)


def test_duplicate_ids_rejected(tmp_path: Path) -> None:
    line = (FIXTURES / "math500.jsonl").read_text().splitlines()[0]
    (tmp_path / "math500.jsonl").write_text(line + "\n" + line + "\n")
    with pytest.raises(UserError, match="duplicate"):
        load_benchmark("math500", data_dir=tmp_path)


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(UserError) as e:
        load_benchmark("gsm8k")
    for name in ("math500", "minerva_math", "olympiadbench", "testbed_easy"):
        assert name in str(e.value)


def test_missing_file_in_data_dir(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="minerva_math.jsonl"):
        load_benchmark("minerva_math", data_dir=tmp_path)


def test_hub_failure_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def boom(*args: object, **kwargs: object) -> None:
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(UserError) as e:
        load_benchmark("olympiadbench")
    msg = str(e.value)
    assert "could not load olympiadbench from the hub" in msg and "olympiadbench.jsonl" in msg
    assert "RLBENCH_DATA_DIR" in msg


def test_hub_rows_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    rows = [json.loads(x) for x in (FIXTURES / "math500.jsonl").read_text().splitlines()]
    calls = []

    def fake(hub_id: str, subset: object, split: str) -> list[dict]:
        calls.append((hub_id, subset, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake)
    bench = load_benchmark("math500")
    assert calls == [("HuggingFaceH4/MATH-500", None, "test")]
    assert [p.gold for p in bench.problems] == [r["answer"] for r in rows]
    assert bench.source.startswith("hf://HuggingFaceH4/MATH-500") and bench.sha256


@pytest.mark.parametrize("name", ["testbed_easy", "testbed_medium", "testbed_hard", "testbed_v1_easy"])
def test_testbed_splits(name: str) -> None:
    a = load_benchmark(name, limit=20)
    b = load_benchmark(name, limit=20)
    assert len(a.problems) == 20 and a.sha256 == b.sha256
    assert a.display_name.startswith("Testbed-") and a.source.startswith("rlbench testbed")
    assert all(p.gold.lstrip("-").isdigit() for p in a.problems)


def test_testbed_splits_differ() -> None:
    hashes = {load_benchmark(n, limit=10).sha256 for n in ("testbed_easy", "testbed_medium", "testbed_hard")}
    assert len(hashes) == 3


REAL = [("math500", 500, 500), ("minerva_math", 272, 272), ("olympiadbench", 675, 675)]


@pytest.mark.parametrize(("name", "rows", "n"), REAL)
def test_real_files(name: str, rows: int, n: int) -> None:
    data = require_shared_benchmarks()
    bench = load_benchmark(name, data_dir=data)
    assert len(bench.problems) == n and bench.skipped == 0
    assert bench.sha256 == sha256_file(data / BENCHMARKS[name].file_name)
    assert all(p.gold.strip() and p.problem.strip() for p in bench.problems)


def test_real_olympiad_meta_counts() -> None:
    data = require_shared_benchmarks()
    probs = load_benchmark("olympiadbench", data_dir=data).problems
    assert sum(p.meta["is_multiple_answer"] for p in probs) == 94
    assert sum(p.meta["unit"] is not None for p in probs) == 8
    assert [p.meta["tolerance"] for p in probs if p.meta["tolerance"] is not None] == [pytest.approx(0.1)]
    assert not any(p.gold.startswith("$") or p.gold.endswith("$") for p in probs)


def test_real_math500_answer_is_last_box(tmp_path: Path) -> None:
    from rlbench_cli.evaluation.grader import extract_boxed

    data = require_shared_benchmarks()
    shutil.copy(data / "math500.jsonl", tmp_path / "math500.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "math500.jsonl").read_text().splitlines()]
    assert all(extract_boxed(r["solution"]) == r["answer"] for r in rows)


def test_testbed_v1_benchmarks_keep_v1_problems() -> None:
    from rlbench_cli.testbed.task import generate_split as v1_split

    v1 = load_benchmark("testbed_v1_hard", limit=5)
    assert [p.problem for p in v1.problems] == [r["problem"] for r in v1_split("hard", 5)]
    assert v1.sha256 != load_benchmark("testbed_hard", limit=5).sha256
