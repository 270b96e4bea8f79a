"""TTRL pseudo-labels (arXiv 2504.16084): the majority answer of a group stands in for the gold answer.

PRIME-RL/TTRL verl/workers/reward_manager/ttrl.py::TTRLRewardManager._compute_ttrl_reward: the answers of all
N_vote responses of a prompt vote, the majority answer is `Counter.most_common(1)` (ties go to the answer seen first;
an empty / unparsed answer can win), and each response's reward is 1 if its answer verifies as equal to the majority
answer under the same verifier as grading, else 0. Only the first N_train responses are trained on.
Tests: tests/test_pseudo_labels.py.
"""

from __future__ import annotations

from collections import Counter


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
