"""Preference-pair selection for iterative DPO: one (chosen correct, rejected incorrect) pair per prompt.

Paper (arXiv 2504.11343, iterative DPO baseline): sample n responses per prompt with the current policy,
pair a correct response with an incorrect one, train DPO, repeat. RLHFlow's Online-DPO-R1 script
(`dpo_iteration/run_dpo.py`, prepare_data, run with `choose_type: max_min`) takes np.argmax / np.argmin of
the rewards, i.e. with 0/1 rewards the *first* correct and the *first* incorrect response, and keeps the pair
only when the rewards differ. The default here draws uniformly instead (same distribution, since responses
are i.i.d., but independent of generation order); `choose="max_min"` mirrors the script.
"""

from __future__ import annotations

import numpy as np

from rlbench_cli.errors import UserError

CHOOSE_MODES = ("random", "max_min", "shortest")


def select_dpo_pairs(groups: list[list[str]], correct: list[list[bool]], seed: int, *,
                     choose: str = "random") -> list[tuple[int, int, int]]:
    """(group index, chosen index, rejected index) for every group with >= 1 correct and >= 1 incorrect
    response; groups that are all correct or all wrong give no pair.

    choose: "random"   chosen uniform among correct, rejected uniform among incorrect, drawn in group order
                       from np.random.default_rng(seed) (deterministic for a seed);
            "max_min"  first correct vs first incorrect (Online-DPO-R1's argmax/argmin on 0/1 rewards);
            "shortest" shortest correct (ties: first) vs a uniform random incorrect.
    """
    if choose not in CHOOSE_MODES:
        raise UserError(f"unknown pair selection {choose!r}", where="dpo.choose",
                        fix=f"use one of: {', '.join(CHOOSE_MODES)}")
    if len(groups) != len(correct):
        raise ValueError(f"{len(groups)} groups but {len(correct)} verdict lists")
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, int, int]] = []
    for g, (texts, verdicts) in enumerate(zip(groups, correct, strict=True)):
        if len(texts) != len(verdicts):
            raise ValueError(f"group {g}: {len(texts)} responses but {len(verdicts)} verdicts")
        good = [i for i, ok in enumerate(verdicts) if ok]
        bad = [i for i, ok in enumerate(verdicts) if not ok]
        if not good or not bad:
            continue
        if choose == "max_min":
            pairs.append((g, good[0], bad[0]))
            continue
        if choose == "shortest":
            chosen = min(good, key=lambda i: (len(texts[i]), i))
        else:
            chosen = good[int(rng.integers(len(good)))]
        rejected = bad[int(rng.integers(len(bad)))]
        pairs.append((g, chosen, rejected))
    return pairs
