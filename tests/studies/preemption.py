"""A callback that preempts its own run once, as a scheduler would: module-level, so ``normzoo fit`` imports it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L


class PreemptOnce(L.Callback):
    """SIGTERM to this process after optimizer step ``at_step``, the first time only (``marker`` records it).

    What SLURM and other schedulers send before they kill a preempted job: ``normzoo fit`` saves
    ``last.ckpt`` and exits with status 143.
    """

    def __init__(self, at_step: int, marker: str) -> None:
        self.at_step, self.marker = at_step, Path(marker)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.at_step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGTERM)
