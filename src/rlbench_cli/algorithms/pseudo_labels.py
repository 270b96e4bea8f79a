"""TTRL pseudo-labels (arXiv 2504.16084): the majority answer of a group stands in for the gold answer.

PRIME-RL/TTRL verl/workers/reward_manager/ttrl.py::TTRLRewardManager._compute_ttrl_reward: the answers of all
N_vote responses of a prompt vote, the majority answer is `Counter.most_common(1)` (ties go to the answer seen first;
an empty / unparsed answer can win), and each response's reward is 1 if its answer verifies as equal to the majority
answer under the same verifier as grading, else 0. Only the first N_train responses are trained on.
The answers that vote are extracted as TTRL extracts them (`ttrl_answer`: verl/utils/reward_score/ttrl/qwen/
qwen_math_parser.py::extract_answer), not only from a box.
Tests: tests/test_pseudo_labels.py.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

_LAST_NUMBER_RE = re.compile(r"-?\d*\.?\d+")


def _after_last_box(text: str) -> str:
    ans = text.split("boxed")[-1]
    if not ans:
        return ""
    if ans[0] != "{":
        return ans.split("$")[0].strip()
    depth, out = 1, []
    for ch in ans[1:]:
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            break
        out.append(ch)
    return "".join(out)


def ttrl_answer(text: str) -> str:
    """The answer TTRL votes with (qwen_math_parser.extract_answer, math): Minerva's "final answer is $X$. I hope",
    else the last `boxed` (brace-matched; `\\boxed 5` up to `$`), else what follows the last "he answer is" / "final
    answer is", else the last number (commas removed), else "". Then line breaks are removed and a leading ":" and
    trailing "." / "/" stripped. Their `strip_string` normalisation is left to the caller's vote key."""
    if "final answer is $" in text and "$. I hope" in text:
        pred = text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    elif "boxed" in text:
        pred = _after_last_box(text)
    elif "he answer is" in text:
        pred = text.split("he answer is")[-1].strip()
    elif "final answer is" in text:
        pred = text.split("final answer is")[-1].strip()
    else:
        numbers = _LAST_NUMBER_RE.findall(text.replace(",", ""))
        pred = numbers[-1] if numbers else ""
    pred = re.sub(r"\n\s*", "", pred)
    if pred.startswith(":"):
        pred = pred[1:]
    if pred.endswith("."):
        pred = pred[:-1]
    if pred.endswith("/"):
        pred = pred[:-1]
    return pred.strip()


def ttrl_vote_key(answer: str, normalize: Callable[[str], str] = str.strip) -> str:
    """The form answers are counted in: `normalize` (rlbench passes its grader's canonical form, standing in for TTRL's
    strip_string), then strip_string's own last rules: no spaces, and a number's trailing ".0…" dropped ("5.0" and
    "5" are one vote). An empty answer stays empty."""
    if not answer:
        return ""
    key = normalize(answer).replace(" ", "")
    key = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", key)
    return re.sub(r"(\d+)\.0*$", r"\1", key)


def majority_answer(answers: list[str]) -> tuple[str, float]:
    """(majority answer, its vote share). Ties go to the first seen (Counter keeps insertion order)."""
    if not answers:
        raise ValueError("majority vote over an empty group")
    answer, count = Counter(answers).most_common(1)[0]
    return answer, count / len(answers)


def majority_labels(answers: list[str], group_size: int) -> tuple[list[str], list[float]]:
    """Per response: the majority answer of its group (contiguous groups of `group_size`), and the group's vote
    share of that answer (TTRL logs it as the label's confidence)."""
    if group_size < 1 or len(answers) % group_size:
        raise ValueError(f"{len(answers)} answers do not form groups of {group_size}")
    labels: list[str] = []
    shares: list[float] = []
    for start in range(0, len(answers), group_size):
        label, share = majority_answer(answers[start:start + group_size])
        labels += [label] * group_size
        shares += [share] * group_size
    return labels, shares


def train_subset(group_size: int, n_train: int) -> list[bool]:
    """Row mask for one group: TTRL trains on the first n_train of the group's responses (not a random subset)."""
    if not 1 <= n_train <= group_size:
        raise ValueError(f"TTRL trains on 1..{group_size} responses per group, got {n_train}")
    return [j < n_train for j in range(group_size)]
