"""Answer checking: extract the final answer of a completion and decide whether it matches the gold answer.

Two graders (`eval.grader`): `rlbench` (default) is Math-Verify 0.9.0 with rlbench's extraction and
normalisation, an exact fast path that must agree with Math-Verify, OlympiadBench multi-answer sets and
tolerance; `math_verify` is plain Math-Verify as the reference paper called it. Both run in a process pool with
a hard per-answer limit. Modules: extract (which text is the answer), normalize (its canonical form),
mathverify (Math-Verify calls), compare (one verdict, with the rule that decided), pool (many verdicts), files
(`rlbench grade`), version.

Try it:  rlbench grade answers.jsonl --explain
"""

from rlbench_cli.evaluation.grader.compare import GRADERS, Trace, Verdict
from rlbench_cli.evaluation.grader.compare import fast_compare as _fast_compare
from rlbench_cli.evaluation.grader.extract import extract_boxed, prepare_pred, split_top_level
from rlbench_cli.evaluation.grader.files import explain_file, format_explanation, grade_file
from rlbench_cli.evaluation.grader.mathverify import mv_equal as _mv_equal
from rlbench_cli.evaluation.grader.mathverify import paper_math_verify
from rlbench_cli.evaluation.grader.normalize import normalize_answer
from rlbench_cli.evaluation.grader.pool import GradeItem, Grader, grade_answer
from rlbench_cli.evaluation.grader.version import GRADER_HELP, GRADER_VERSION, PAPER_GRADER_VERSION, grader_version

__all__ = [
    "GRADERS", "GRADER_HELP", "GRADER_VERSION", "PAPER_GRADER_VERSION", "GradeItem", "Grader", "Trace", "Verdict",
    "_fast_compare", "_mv_equal", "explain_file", "extract_boxed", "format_explanation", "grade_answer",
    "grade_file", "grader_version", "normalize_answer", "paper_math_verify", "prepare_pred", "split_top_level",
]
