"""Training prompts for every algorithm from one place, so all algorithms see the same data and prompt strings.

Sources: the CPU testbed generator, a local JSONL file, or a Hugging Face hub dataset. Rows become
{"problem_id", "problem", "answer", "solution"}; `build_prompt_dataset` renders the prompt string with the
recipe's template (the same `render_prompt` the evaluation uses).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from rlbench_cli.config import Recipe
from rlbench_cli.errors import UserError
from rlbench_cli.records import sha256_file, sha256_text


def _get_dotted(row: dict[str, Any], dotted: str) -> Any:
    node: Any = row
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _normalise_row(raw: dict[str, Any], recipe: Recipe, index: int) -> tuple[dict[str, str] | None, str | None]:
    d = recipe.data
    problem = _get_dotted(raw, d.problem_field)
    answer = _get_dotted(raw, d.answer_field)
    solution = _get_dotted(raw, d.solution_field)
    if not isinstance(problem, str) or not problem.strip():
        return None, f"missing or empty '{d.problem_field}'"
    needs_solution = recipe.algorithm.name == "sft"
    if needs_solution and (not isinstance(solution, str) or not solution.strip()):
        return None, f"missing or empty '{d.solution_field}' (SFT trains on reference solutions)"
    if not needs_solution and (answer is None or not str(answer).strip()):
        return None, f"missing or empty '{d.answer_field}'"
    row_id = raw.get("id", raw.get("unique_id", index))
    return {"problem_id": str(row_id), "problem": problem, "answer": "" if answer is None else str(answer),
            "solution": solution if isinstance(solution, str) else ""}, None


def load_rows(recipe: Recipe) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Return (rows, data_record). data_record holds the source and a sha256 for the run manifest."""
    d = recipe.data
    raws: list[tuple[dict[str, Any], str]] = []  # (row, location for error messages)
    if d.source == "testbed":
        from rlbench_cli.testbed.versions import generate_split

        generated = generate_split(d.split)
        raws = [(r, f"testbed:{d.split}[{i}]") for i, r in enumerate(generated)]
        record = {"source": f"testbed:{d.split}", "sha256": sha256_text(json.dumps(generated, sort_keys=True))}
    elif d.source == "jsonl":
        path = Path(d.path or "")
        if not path.is_file():
            raise UserError("training data file not found", where=f"data.path={path}",
                            fix="point data.path at a JSONL file")
        bad_lines = 0
        with open(path, encoding="utf-8", errors="strict") as f:
            try:
                lines = f.read().splitlines()
            except UnicodeDecodeError:
                raise UserError("not UTF-8 text", where=str(path)) from None
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                if d.lenient:
                    bad_lines += 1
                    continue
                raise UserError(f"bad JSON line ({e})", where=f"{path}:{lineno}",
                                fix="fix the line, or set data.lenient=true to skip bad lines") from None
            raws.append((obj, f"{path}:{lineno}"))
        record = {"source": str(path), "sha256": sha256_file(path), "bad_lines": bad_lines}
    else:
        try:
            from datasets import load_dataset

            ds = load_dataset(d.hub_id, d.subset, split=d.split)
        except Exception as e:  # the hub raises many types; all mean "could not load"
            raise UserError(
                f"could not load dataset {d.hub_id!r} from the hub ({type(e).__name__}: {str(e)[:200]})",
                where="data.hub_id", fix="check the id and network, or use data.source=jsonl with a local file",
            ) from None
        raws = [(dict(r), f"{d.hub_id}[{i}]") for i, r in enumerate(ds)]
        record = {"source": f"hub:{d.hub_id}:{d.subset}:{d.split}", "sha256": getattr(ds, "_fingerprint", None)}

    rows: list[dict[str, str]] = []
    skipped = 0
    for index, (raw, where) in enumerate(raws):
        row, problem = _normalise_row(raw, recipe, index)
        if row is None:
            if d.lenient:
                skipped += 1
                continue
            raise UserError(problem or "bad row", where=where,
                            fix="fix the data, change data.*_field, or set data.lenient=true to skip such rows")
        rows.append(row)
    if not rows:
        raise UserError("no usable training rows", where=record["source"])
    if d.shuffle:
        random.Random(recipe.seed).shuffle(rows)
    if d.max_prompts:
        rows = rows[: d.max_prompts]
    record.update({"rows": len(rows), "skipped": skipped + record.pop("bad_lines", 0)})
    return rows, record


def build_prompt_dataset(rows: list[dict[str, str]], recipe: Recipe, tokenizer: Any):
    """A datasets.Dataset with the rendered `prompt` string plus `answer`, `solution` and `problem_id` columns."""
    from datasets import Dataset

    from rlbench_cli.prompts import render_prompt

    template = recipe.data.prompt_template
    return Dataset.from_list([
        {"prompt": render_prompt(r["problem"], template, tokenizer), "answer": r["answer"],
         "solution": r["solution"], "problem_id": r["problem_id"]}
        for r in rows
    ])
