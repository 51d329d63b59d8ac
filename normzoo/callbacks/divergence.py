"""``StopOnDivergence``: end a run cleanly when its training loss turns NaN or infinite.

A learning-rate or init sweep is expected to blow up some runs (no-BN networks at large
learning rates). Such a run should stop at once, say so in its logs, and let the sweep go
on, rather than burn its remaining steps on NaNs or crash the study that launched it.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from normzoo import tags
from normzoo.batches import NonFiniteInputs
from normzoo.callbacks.evaluate import step_loss
from normzoo.errors import ConfigError, DataError

DIVERGED_TAG = tags.DIVERGED
COMPLETED_TAG = tags.COMPLETED


class StopOnDivergence(Callback):
    """Stop training when the training loss is NaN or infinite, and mark the run in its logs.

    Every step folds ``isfinite(loss)`` into a flag kept on the device (no host sync); every
    ``check_every_n_steps`` optimizer steps the flag is read and, under DDP, OR-reduced over
    ranks, so all ranks stop together. Once a loss is non-finite the weights are too, so the
    few steps between checks change nothing but the time spent. Bad data is not a divergence:
    each training batch's float tensors are summed on the device, and a NaN or an inf among
    them is reported at the check as an error naming the batch.

    Logged metrics:
        ``zoo/run/diverged``: 1 at the step where divergence was detected; at the end of
        training 0 or 1 for the run as a whole.
        ``zoo/run/completed``: 1 at the end of training (a run stopped for divergence
        completes too); absent when a run was interrupted or killed. ``normzoo report`` and
        ``normzoo study`` read both.

    Args:
        check_every_n_steps: optimizer steps between checks; None uses the trainer's
            ``log_every_n_steps``.

    Raises:
        ConfigError: ``check_every_n_steps`` < 1.
        DataError: during training, a training batch that holds NaN or inf values (its epoch,
            batch index and step named).

    Example::

        trainer = Trainer(callbacks=[StopOnDivergence(check_every_n_steps=10)])
    """

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        self.check_every_n_steps = check_every_n_steps
        self.diverged_at: int | None = None
        self._nonfinite: Tensor | None = None
        self._inputs = NonFiniteInputs()

    @property
    def state_key(self) -> str:
        return "StopOnDivergence"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.check_every_n_steps is not None and self.check_every_n_steps < 1:
            raise ConfigError(f"check_every_n_steps must be >= 1, got {self.check_every_n_steps}.")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._inputs.add(batch, (trainer.current_epoch, batch_idx, trainer.global_step))
        self._record(trainer, pl_module, outputs)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module)  # a divergence in the last steps counts
        self._log(trainer, {DIVERGED_TAG: float(self.diverged_at is not None), COMPLETED_TAG: 1.0})

    def state_dict(self) -> dict[str, Any]:
        return {"diverged_at": self.diverged_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.diverged_at = state_dict.get("diverged_at")

    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any) -> None:
        loss = step_loss(outputs)
        if loss is not None:
            bad = ~torch.isfinite(loss.detach()).all()
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        every = self.check_every_n_steps or trainer.log_every_n_steps or 1
        if trainer.global_step % every == 0:
            self._check(trainer, pl_module)

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.diverged_at is not None:
            return
        self._check_inputs(trainer)
        local = bool(self._nonfinite.item()) if self._nonfinite is not None else False
        if not trainer.strategy.reduce_boolean_decision(local, all=False):  # any rank diverged
            return
        self.diverged_at = trainer.global_step
        trainer.should_stop = True
        rank_zero_warn(f"The training loss is NaN or infinite (detected at step {trainer.global_step}): "
                       "the run diverged and stops here. Lower the learning rate or the init gain, "
                       "or use a norm; the run is marked `zoo/run/diverged` in its logs.")
        self._log(trainer, {DIVERGED_TAG: 1.0})

    def _check_inputs(self, trainer: L.Trainer) -> None:
        """Bad data is an error of its own, named by split and batch, not a divergence (all ranks stop)."""
        bad = self._inputs.first()
        if not trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            return
        where = ("on another rank" if bad is None else
                 f"first in batch {bad[1]} of epoch {bad[0]} (step {bad[2]})")
        raise DataError(f"The training inputs hold NaN or inf values, {where}: the data is bad, not the "
                          "learning rate. Check the dataset and its transforms.")

    def _log(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
