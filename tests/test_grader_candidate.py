"""`mv_candidate.first_candidate` finds the same answer string as Math-Verify's full extraction (which parses).

Inputs: every real completion under bench/data, every completion of the grader corpus and probe set, their tails cut
at seeded random points (new candidate layouts), and hand-written cases for the orders that matter (priority
groups, rightmost match, several latex groups, numbers with separators, nothing to extract).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rlbench_cli.evaluation.grader.mathverify import full_extraction, mv_extract_completion, quiet_math_verify
from rlbench_cli.evaluation.grader.mv_candidate import UNDECIDED, first_candidate
from rlbench_cli.evaluation.grader.normalize import replace_constants

ROOT = Path(__file__).resolve().parents[1]

HAND_WRITTEN = [
    "The answer is 7.",
    "We get $x = 3$ and then $y = 4$.",
    "So $\\frac{1}{2}$, or 0.5 in decimal.",
    "Final answer: $1,234,567$",
    "The final answer is $5$ and $6$.",
    "Thus the value is 0012.50 meters",
    "$\\sqrt{2}$ then 3 then $$\\pi$$",
    "no numbers here at all",
    "",
    "answer is \\[ \\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix} \\]",
    "It is $\\$18.90$.",
    "The answer is 50%.",
    "so x=2, y = 3, hence (2, 3)",
    "result: $3 \\times 10^{5}$ joules",
    "I think it's $1 - \\frac{1}{\\mathrm{e}}$",
]


def _texts() -> list[str]:
    texts = list(HAND_WRITTEN)
    for path in sorted((ROOT / "bench" / "data").glob("*.jsonl")):
        texts += [json.loads(line)["completion"] for line in path.read_text(encoding="utf-8").splitlines() if line]
    for name in ("grader_corpus.jsonl", "grader_probes.jsonl"):
        rows = (ROOT / "tests" / "data" / name).read_text(encoding="utf-8").splitlines()
        texts += [row.get("completion") or row.get("answer") or "" for row in map(json.loads, filter(None, rows))]
    rng = random.Random(0)
    long_ones = [t for t in texts if len(t) > 200]
    texts += [t[: rng.randrange(50, len(t))] for t in rng.sample(long_ones, min(150, len(long_ones)))]
    return texts


def test_first_candidate_matches_the_full_extraction() -> None:
    quiet_math_verify()
    texts = _texts()
    assert len(texts) > 600
    decided = 0
    for text in texts:
        text = replace_constants(text[-4000:])
        got = first_candidate(text)
        if got is UNDECIDED:
            continue
        decided += 1
        assert got == full_extraction(text), text[-300:]
    assert decided >= 0.95 * len(texts)  # the shortcut must actually carry the load


@pytest.mark.parametrize(("text", "expected"), [
    ("The answer is 7.", "7"),
    ("Thus 1,234 apples", "1234"),
    ("no numbers here at all", None),
    ("We get $x = 3$ and then $y = 4$.", "y = 4"),
])
def test_first_candidate_hand_computed(text: str, expected: str | None) -> None:
    assert first_candidate(text) == expected
    assert mv_extract_completion(text) == expected
