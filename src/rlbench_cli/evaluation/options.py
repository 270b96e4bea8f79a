"""Eval and grade options checked before any work starts: a zero or negative value is refused in one line,
never replaced by a default, and paths are checked before the grading rather than after it.
"""

from __future__ import annotations

from pathlib import Path

from rlbench_cli.errors import UserError


def _at_least(name: str, value: float | None, low: float, what: str) -> None:
    if value is not None and value < low:
        raise UserError(f"{what}, got {value}", where=name)


def check_eval_options(*, k: int | None, temperature: float | None, top_p: float | None,
                       max_new_tokens: int | None, batch_size: int | None, limit: int | None) -> None:
    _at_least("--k", k, 1, "samples per problem must be >= 1")
    _at_least("--max-new-tokens", max_new_tokens, 1, "must be >= 1")
    _at_least("--batch-size", batch_size, 1, "must be >= 1")
    _at_least("--limit", limit, 1, "must be >= 1 (omit it for every problem)")
    _at_least("--temperature", temperature, 0.0, "must be >= 0 (0 = greedy)")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"must be in (0, 1], got {top_p}", where="--top-p", fix="use 1.0 for no nucleus cut")


def check_grader_options(*, workers: int, timeout: float) -> None:
    _at_least("--workers", workers, 0, "must be >= 0 (0 grades in this process, without a time limit)")
    if not timeout > 0:
        raise UserError(f"the per-answer time limit must be > 0 seconds, got {timeout}", where="--timeout")


def check_grade_paths(file: Path, out: Path, *, output_given: bool) -> None:
    """The input must be a UTF-8 text file and the output's folder must exist, before grading starts."""
    if not file.is_file():
        raise UserError("file not found", where=str(file),
                        fix="pass a JSONL file with `completion` and `gold` on every line")
    head = file.read_bytes()[: 1 << 16]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError("the file is UTF-16, not UTF-8", where=str(file),
                        fix=f"convert it: iconv -f UTF-16 -t UTF-8 {file} > {file.stem}.utf8.jsonl")
    if b"\0" in head:
        raise UserError("this is a binary file, not JSONL text", where=str(file),
                        fix="pass a JSONL file with `completion` and `gold` on every line")
    try:
        file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"the file is not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})",
                        where=str(file),
                        fix=f"convert it, e.g. iconv -f latin1 -t UTF-8 {file} > {file.stem}.utf8.jsonl") from None
    folder = out.parent
    if not folder.is_dir():
        raise UserError("the output folder does not exist", where="--output" if output_given else str(out),
                        fix=f"create it first (mkdir -p {folder}) or choose another --output")
