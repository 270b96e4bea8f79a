"""ProRL periodic reference-policy reset (arXiv 2505.24864), usable with any RL algorithm that has a reference.

Every `algorithm.ref_reset_every` optimizer steps the reference policy becomes a hard copy of the current policy
(TRL's SyncRefModelCallback.sync_target_model with alpha 1, which also handles DeepSpeed ZeRO-3) and, with
`algorithm.ref_reset_optimizer` (ProRL's choice), the optimizer state is re-initialised (Adam moments and step
counts cleared; the learning-rate schedule keeps its course). TRL's own `sync_ref_model` gives the copy but not the
optimizer reset. On resume the reference is re-synced from the resumed policy: config validation makes checkpoints
fall on reset steps, so that is the reference an uninterrupted run would hold.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

from rlbench_cli.algorithms.schedules import reference_reset_due

log = logging.getLogger("rlbench")


class ReferenceResetCallback(TrainerCallback):
    def __init__(self, trainer: Any, every: int, reset_optimizer: bool) -> None:
        self.trainer = trainer
        self.every = every
        self.reset_optimizer = reset_optimizer
        self.resets = 0

    def _sync(self) -> None:
        from trl.trainer.callbacks import SyncRefModelCallback

        tr = self.trainer
        model = tr.accelerator.unwrap_model(tr.model)
        SyncRefModelCallback.sync_target_model(model, tr.ref_model, 1.0)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.every:  # resumed after at least one reset: the reference is that policy
            self._sync()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not reference_reset_due(state.global_step, self.every):
            return
        self._sync()
        if self.reset_optimizer:
            opt = self.trainer.optimizer
            inner = getattr(opt, "optimizer", opt)
            inner.state.clear()
        self.resets += 1
        log.info("step %d: reference policy reset to the current policy%s", state.global_step,
                 " and optimizer state re-initialised" if self.reset_optimizer else "")
