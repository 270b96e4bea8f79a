"""Dynamic sampling (DAPO, GPG): draw more prompts, never ones already used in the pass, until enough groups have
unequal rewards, then choose which groups form the batch.

References: verl recipe/dapo dapo_ray_trainer.py (keep generating batches from the same dataloader until
`train_batch_size` groups with reward std > 0 are collected, drop the surplus, raise after max_num_gen_batches);
AMAP-ML/GPG open-r1 gpg_trainer.py (draw from the Trainer's epoch iterator until valid groups >= min_inverse_alpha
x groups; batch = the valid groups, topped up with the last round's all-equal groups; fail after 20 batches).

`PromptStream` replaces TRL's RepeatSampler in such runs. It yields exactly RepeatSampler's order (the same
permutations from the same seed; TRL's test below pins that), but every chunk of prompts, whether the Trainer's
loader or a refill (`take`) asks for it, comes from one cursor: a prompt is used once per pass over the data before
any is used again, and the Trainer's epochs keep their nominal length (so `max_steps` and resume arithmetic hold).
A dynamic-sampling run therefore takes the planned optimizer steps and may go through the data more than once;
metrics `samples` / `gen_tokens` count every generated response. Its state is saved in each checkpoint.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import torch
from torch.utils.data import Sampler

STATE_FILE = "rlbench_prompt_stream.json"


class PromptStream(Sampler[int]):
    """RepeatSampler's index stream (chunks of `prompts_per_chunk` prompts, each index `mini_repeat` times, each
    chunk `repeat` times, incomplete last chunk dropped) drawn from a cursor that refills share."""

    def __init__(self, data_source: Sized, prompts_per_chunk: int, mini_repeat: int, repeat: int = 1,
                 shuffle: bool = True, seed: int | None = None) -> None:
        self.n_rows = len(data_source)
        self.k = prompts_per_chunk
        self.mini_repeat = mini_repeat
        self.repeat = repeat
        self.shuffle = shuffle
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        self.chunks_per_epoch = self.n_rows // self.k
        self.perm: list[int] = []
        self.pos = 0
        self.pending: list[list[int]] = []  # chunks the Trainer's loader drew (it prefetches) and has not used yet
        self.used_in_epoch = 0
        self._skip = 0  # after a restore: chunks the resumed Trainer skips (skip_first_batches)
        self._replay: list[list[int]] = []  # after a restore: chunks the loader had prefetched before the save

    def _next_chunk(self) -> list[int]:
        if self.pos + self.k > len(self.perm):  # pass exhausted: a new permutation, as RepeatSampler per epoch
            self.perm = (torch.randperm(self.n_rows, generator=self.generator).tolist() if self.shuffle
                         else list(range(self.n_rows)))
            self.pos = 0
        chunk = self.perm[self.pos:self.pos + self.k]
        self.pos += self.k
        return chunk

    def take(self) -> list[int]:
        """The next unused prompts, for a refill (dataset indices, each once)."""
        return self._next_chunk()

    def mark_used(self) -> None:
        """The trainer generated from the oldest chunk its loader drew."""
        if self.pending:
            self.pending.pop(0)
        self.used_in_epoch += 1

    def __iter__(self):
        self.used_in_epoch = 0
        self.pending = []  # a new epoch starts once the last one's chunks are all used (no prefetch across)
        replay, self._replay = self._replay, []
        for _ in range(self.chunks_per_epoch):
            if self._skip:
                self._skip -= 1
                chunk = [0] * self.k  # dropped by the resumed Trainer's skip_first_batches
                self.used_in_epoch += 1
            else:
                chunk = replay.pop(0) if replay else self._next_chunk()
                self.pending.append(chunk)
            for _ in range(self.repeat):
                for index in chunk:
                    for _ in range(self.mini_repeat):
                        yield index

    def __len__(self) -> int:
        return self.chunks_per_epoch * self.k * self.mini_repeat * self.repeat

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state().tolist(), "perm": self.perm, "pos": self.pos,
                "pending": self.pending, "used_in_epoch": self.used_in_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where the saved stream was: the resumed Trainer first skips the chunks its epoch had
        used (dummies here), then gets the chunks its loader had prefetched, then fresh ones."""
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.perm, self.pos = list(state["perm"]), int(state["pos"])
        self._replay = [list(c) for c in state["pending"]]
        self._skip = int(state["used_in_epoch"]) % max(self.chunks_per_epoch, 1)


def enough_groups(valid_rounds: list[list[bool]], want: int, min_valid_frac: float) -> bool:
    """Stop resampling once the groups with unequal rewards, over all rounds, reach min_valid_frac x want."""
    return sum(sum(v) for v in valid_rounds) >= min_valid_frac * want - 1e-9


def choose_groups(valid_rounds: list[list[bool]], want: int) -> tuple[list[tuple[int, int]], int]:
    """The batch's groups as (round, group): groups with unequal rewards in the order drawn, surplus left out
    (verl); if fewer than `want`, topped up with all-equal groups, the last round's first (GPG), then earlier
    rounds'. Returns (chosen, number of all-equal groups in it)."""
    valid = [(r, g) for r, flags in enumerate(valid_rounds) for g, ok in enumerate(flags) if ok][:want]
    fill = [(r, g) for r in reversed(range(len(valid_rounds))) for g, ok in enumerate(valid_rounds[r]) if not ok]
    padding = fill[: want - len(valid)]
    return valid + padding, len(padding)


def all_equal_groups(rewards: torch.Tensor, n: int) -> torch.Tensor:
    """(G,) True where a group's rewards are all equal (or all missing): no learning signal."""
    grouped = rewards.view(-1, n)
    return (grouped == grouped[:, :1]).all(dim=1) | torch.isnan(grouped).all(dim=1)


def concat_rollouts(outs: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Concatenate TRL rollout dicts whose padded lengths differ (prompts padded left, completions right)."""
    if len(outs) == 1:
        return outs[0]
    merged: dict[str, Any] = {}
    for key in outs[0]:
        values = [o[key] for o in outs]
        if key == "num_items_in_batch":
            merged[key] = sum(values)
        elif isinstance(values[0], torch.Tensor) and values[0].dim() == 2:
            width = max(v.size(1) for v in values)
            left = key.startswith("prompt")
            fill = pad_id if key.endswith("_ids") else 0
            padded = [torch.nn.functional.pad(v, (width - v.size(1), 0) if left else (0, width - v.size(1)),
                                              value=fill) for v in values]
            merged[key] = torch.cat(padded)
        elif isinstance(values[0], torch.Tensor):
            merged[key] = torch.cat(values)
        else:
            merged[key] = values[0]
    return merged
