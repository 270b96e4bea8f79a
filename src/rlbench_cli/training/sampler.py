"""The RL runner's prompt sampler: TRL's RepeatSampler whose shuffle depends only on (seed, epoch).

TRL's RepeatSampler draws each epoch's permutation from one generator seeded once, so epoch e's order is the
(e+1)-th draw of that generator. A run resumed from a checkpoint builds a fresh sampler, and the Trainer skips
whole epochs without iterating them: without this class a run resumed in epoch e >= 1 replays epoch 0's order
and diverges from the uninterrupted run (tests/test_resume_epochs.py; on SmolLM2, tests/test_real_smol.py).
Here `set_epoch` (called by the Trainer through accelerate at every epoch start, also on resume) fixes the epoch,
and each iteration reseeds and replays the draws of the earlier epochs, so the order is exactly TRL's for an
uninterrupted run and the same after a resume. Replaying costs one randperm of the dataset per earlier epoch,
once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from trl.trainer.utils import RepeatSampler


class EpochSeededRepeatSampler(RepeatSampler):
    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (RepeatSampler's signature)
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            self.generator = torch.Generator()  # as TRL's: seeded when a seed is given, else torch's default
            if self.seed is not None:
                self.generator.manual_seed(self.seed)
            for _ in range(self.epoch):
                torch.randperm(self.num_samples, generator=self.generator)
        return super().__iter__()
