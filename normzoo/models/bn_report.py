"""``BNBatchReport``: log, once per fit, how many samples each BatchNorm statistic comes from.

Under DDP each rank normalizes over its own batch unless the layers are synchronized, so the
number that matters for BN is not the global batch size. This callback logs it at the first
training batch and warns below ``normzoo.norms.SMALL_BN_BATCH`` samples (Wu & He 2018).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from normzoo import tags
from normzoo.norms import bn_batch_size


class BNBatchReport(L.Callback):
    """At a fit's first training batch, log ``zoo/bn/batch_size_per_rank`` and ``zoo/bn/effective_batch_size``.

    Models without batch-statistics layers in training mode log nothing. Below 16 samples
    per statistic, a ``UserWarning`` says what the batch is and how to enlarge it.
    """

    def __init__(self) -> None:
        self._reported = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reported = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._reported:
            return
        self._reported = True
        size = bn_batch_size(pl_module, len(batch[0]), trainer.world_size)
        if size is None:
            return
        rank_zero_info(f"BatchNorm batch: {size.per_rank} samples per rank x {size.world_size} ranks, "
                       f"{'synchronized' if size.synced else 'not synchronized'}: {size.effective} per statistic.")
        warning = size.warning()
        if warning:
            rank_zero_warn(warning)
        for logger in trainer.loggers:
            sizes = {tags.BN_BATCH_SIZE_PER_RANK: size.per_rank, tags.BN_EFFECTIVE_BATCH_SIZE: size.effective}
            logger.log_metrics(sizes, step=trainer.global_step)
