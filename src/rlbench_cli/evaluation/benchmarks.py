"""Evaluation benchmarks: MATH500, Minerva Math, OlympiadBench and the three CPU-testbed splits.

Each benchmark is loaded into `Problem`s with one gold answer string. Real benchmarks come from a local
JSONL folder (`data_dir` or the RLBENCH_DATA_DIR environment variable) in the Qwen2.5-Math toolkit format, or
else from the Hugging Face hub. Testbed splits are generated in-process. Every `Benchmark` carries a sha256
that identifies its data, so results from different data are never mixed up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError
from rlbench_cli.jsonl_input import Row, parse_lines, read_user_text

DATA_DIR_ENV = "RLBENCH_DATA_DIR"


@dataclass
class Problem:
    id: str
    problem: str
    gold: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Benchmark:
    name: str
    display_name: str
    problems: list[Problem]
    source: str
    sha256: str | None
    skipped: int = 0


class _BadRow(ValueError):
    """A row that cannot become a Problem; the loader adds the file and line number."""


def _str_field(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise _BadRow(f"missing or non-string field {key!r}")
    return value


def _nonempty(gold: str) -> str:
    if not gold.strip():
        raise _BadRow("empty gold answer")
    return gold


def _row_id(row: dict[str, Any], keys: tuple[str, ...], index: int) -> str:
    for k in keys:
        if row.get(k) is not None:
            return str(row[k])
    return str(index)


def _math500(row: dict[str, Any], index: int) -> Problem:
    meta = {k: row[k] for k in ("subject", "level") if k in row}
    return Problem(id=_row_id(row, ("unique_id", "id"), index), problem=_str_field(row, "problem"),
                   gold=_nonempty(_str_field(row, "answer").strip()), meta=meta)


def _minerva(row: dict[str, Any], index: int) -> Problem:
    from rlbench_cli.evaluation.grader import extract_boxed

    # The hub copy of Minerva keeps the worked solution in `solution`; the GVM copy renamed it to `answer`.
    solution = row.get("solution") if isinstance(row.get("solution"), str) else row.get("answer")
    if not isinstance(solution, str):
        raise _BadRow("missing or non-string field 'solution'")
    gold = extract_boxed(solution)
    if gold is None:
        raise _BadRow("no \\boxed{} answer in 'solution'")
    meta = {"subject": row["type"]} if "type" in row else {}
    return Problem(id=_row_id(row, ("idx", "id"), index), problem=_str_field(row, "problem"),
                   gold=_nonempty(gold), meta=meta)


def parse_tolerance(error: Any) -> float | None:
    """OlympiadBench `error` ("1e-1", "0.5", sometimes a list or a comma list) → one absolute tolerance."""
    if error is None or error == "":
        return None
    if isinstance(error, list):
        error = error[0] if error else None
        return parse_tolerance(error)
    try:
        value = float(str(error).split(",")[0].strip())
    except ValueError as e:
        raise _BadRow(f"unreadable numeric tolerance 'error' = {error!r}") from e
    if value < 0:
        raise _BadRow(f"negative tolerance 'error' = {error!r}")
    return value


def _olympiad(row: dict[str, Any], index: int) -> Problem:
    answers = row.get("final_answer")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not isinstance(answers[0], str):
        raise _BadRow("missing field 'final_answer' (a list of strings)")
    gold = _nonempty(answers[0].strip().strip("$").strip())
    text = row.get("question") if isinstance(row.get("question"), str) else row.get("problem")
    if not isinstance(text, str):
        raise _BadRow("missing or non-string field 'question'")
    context = row.get("context")
    if isinstance(context, str) and context.strip():
        text = context.strip() + "\n" + text
    meta = {
        "is_multiple_answer": bool(row.get("is_multiple_answer") or False),
        "unit": row.get("unit") or None,
        "tolerance": parse_tolerance(row.get("error")),
        "subject": row.get("subfield"),
        "answer_type": row.get("answer_type"),
    }
    return Problem(id=_row_id(row, ("id",), index), problem=text, gold=gold, meta=meta)


@dataclass(frozen=True)
class BenchmarkSpec:
    display_name: str
    file_name: str | None
    hub_id: str | None
    hub_subset: str | None
    hub_split: str | None
    to_problem: Callable[[dict[str, Any], int], Problem] | None
    testbed_split: str | None = None


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "math500": BenchmarkSpec("MATH500", "math500.jsonl", "HuggingFaceH4/MATH-500", None, "test", _math500),
    "minerva_math": BenchmarkSpec("Minerva Math", "minerva_math.jsonl", "math-ai/minervamath", None, "test",
                                  _minerva),
    "olympiadbench": BenchmarkSpec("OlympiadBench", "olympiadbench.jsonl", "Hothan/OlympiadBench",
                                   "OE_TO_maths_en_COMP", "train", _olympiad),
    "testbed_easy": BenchmarkSpec("Testbed-Easy", None, None, None, None, None, testbed_split="easy"),
    "testbed_medium": BenchmarkSpec("Testbed-Medium", None, None, None, None, None, testbed_split="medium"),
    "testbed_hard": BenchmarkSpec("Testbed-Hard", None, None, None, None, None, testbed_split="hard"),
    "testbed_ops6": BenchmarkSpec("Testbed-6ops", None, None, None, None, None, testbed_split="ops6"),
    # testbed v1 (issue 11 made v2 the default; these keep v1 evaluations reproducible)
    "testbed_v1_easy": BenchmarkSpec("Testbed-v1-Easy", None, None, None, None, None, testbed_split="v1/easy"),
    "testbed_v1_medium": BenchmarkSpec("Testbed-v1-Medium", None, None, None, None, None,
                                       testbed_split="v1/medium"),
    "testbed_v1_hard": BenchmarkSpec("Testbed-v1-Hard", None, None, None, None, None, testbed_split="v1/hard"),
}

REAL_BENCHMARKS = ("math500", "minerva_math", "olympiadbench")


def _spec(name: str) -> BenchmarkSpec:
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}", where="benchmark",
                        fix=f"use one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def _canonical_sha256(problems: list[Problem]) -> str:
    from rlbench_cli.records import sha256_text

    rows = [{"id": p.id, "problem": p.problem, "gold": p.gold, "meta": p.meta} for p in problems]
    return sha256_text(json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


def _rows_to_problems(
    rows: list[Row], spec: BenchmarkSpec, where: str, lenient: bool
) -> tuple[list[Problem], int]:
    """rows: (line number, parsed row or None, parse error or None). Strict: the first bad row raises."""
    assert spec.to_problem is not None
    problems: list[Problem] = []
    skipped = 0
    seen: set[str] = set()
    for lineno, row, err in rows:
        try:
            if err is not None or row is None:
                raise _BadRow(err or "not a JSON object")
            p = spec.to_problem(row, lineno - 1)
            if p.id in seen:
                raise _BadRow(f"duplicate problem id {p.id!r}")
            seen.add(p.id)
            problems.append(p)
        except _BadRow as e:
            if lenient:
                skipped += 1
                continue
            raise UserError(str(e), where=f"{where}:{lineno}",
                            fix="repair the line, or set data.lenient=true to skip bad lines") from None
    return problems, skipped


def _read_local(path: Path) -> list[Row]:
    return parse_lines(read_user_text(path, fix="pass --data-dir with one <benchmark>.jsonl per benchmark"))


def _load_testbed(name: str, spec: BenchmarkSpec, limit: int | None) -> Benchmark:
    from rlbench_cli.testbed.versions import generate_split

    assert spec.testbed_split is not None
    split = spec.testbed_split
    raw = generate_split(split, limit) if limit is not None else generate_split(split)
    problems = [Problem(id=str(r["id"]), problem=r["problem"], gold=str(r["answer"]),
                        meta={k: r[k] for k in ("difficulty",) if k in r}) for r in raw]
    return Benchmark(name=name, display_name=spec.display_name, problems=problems,
                     source=f"rlbench testbed {spec.testbed_split}", sha256=_canonical_sha256(problems))


def _load_hub(name: str, spec: BenchmarkSpec, hub_id: str, lenient: bool) -> Benchmark:
    try:
        from datasets import load_dataset

        ds = load_dataset(hub_id, spec.hub_subset, split=spec.hub_split)
        rows = [(i + 1, dict(r), None) for i, r in enumerate(ds)]
        fingerprint = getattr(ds, "_fingerprint", None)
    except Exception as e:  # noqa: BLE001 - network, auth and missing-dataset errors all mean "not available"
        raise UserError(
            f"could not load {name} from the hub ({hub_id}: {type(e).__name__}: {str(e)[:200]})",
            where="benchmark",
            fix=f"pass --data-dir DIR with {spec.file_name} or set {DATA_DIR_ENV}",
        ) from e
    subset = f"/{spec.hub_subset}" if spec.hub_subset else ""
    where = f"hub:{hub_id}{subset}:{spec.hub_split} row"
    problems, skipped = _rows_to_problems(rows, spec, where, lenient)
    source = f"hf://{hub_id}{subset}@{spec.hub_split}"
    if fingerprint:
        source += f" (fingerprint {fingerprint})"
    return Benchmark(name=name, display_name=spec.display_name, problems=problems, source=source,
                     sha256=_canonical_sha256(problems), skipped=skipped)


def load_benchmark(
    name: str,
    data_dir: str | Path | None = None,
    hub_id: str | None = None,
    limit: int | None = None,
    lenient: bool = False,
) -> Benchmark:
    """Load a benchmark: testbed generator, else `<data_dir>/<file>` (or $RLBENCH_DATA_DIR), else the hub.

    `limit` keeps the first N problems (the sha256 then covers only those). `lenient` skips and counts bad
    rows instead of failing on the first one.
    """
    spec = _spec(name)
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1, got {limit}", where="--limit")
    if spec.testbed_split is not None:
        return _load_testbed(name, spec, limit)
    assert spec.file_name is not None
    folder = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if folder is not None:
        path = Path(folder) / spec.file_name
        if not path.is_file():
            raise UserError(f"benchmark file {spec.file_name} not found", where=str(path),
                            fix=f"put {spec.file_name} in {folder}, or leave out --data-dir to use the hub")
        problems, skipped = _rows_to_problems(_read_local(path), spec, str(path), lenient)
        if not problems:
            raise UserError("no usable problems in the file", where=str(path))
        from rlbench_cli.records import sha256_file

        full = limit is None or limit >= len(problems)
        bench = Benchmark(name=name, display_name=spec.display_name, problems=problems, source=str(path),
                          sha256=sha256_file(path) if full else None, skipped=skipped)
    else:
        bench = _load_hub(name, spec, hub_id or spec.hub_id or "", lenient)
    if limit is not None and limit < len(bench.problems):
        bench.problems = bench.problems[:limit]
        bench.sha256 = _canonical_sha256(bench.problems)
    return bench
