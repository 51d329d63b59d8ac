"""``NormZooSyncBatchNorm``: Lightning's ``sync_batchnorm=True`` for every batch-statistics layer, normzoo's too.

Lightning's own plugin converts torch BatchNorms only; this one applies
``normzoo.norms.convert_sync_norms``, so normzoo's ``bn_manual``, ``batch_renorm``, ``l1``
and ``l2`` reduce their statistics across ranks too, and noisy BN keeps its noise::

    Trainer(strategy="ddp", sync_batchnorm=True, plugins=[NormZooSyncBatchNorm()])

It lives outside ``normzoo.norms`` because it imports Lightning, which the norms do not.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins import TorchSyncBatchNorm

from normzoo.norms.sync import convert_sync_norms, revert_sync_norms


class NormZooSyncBatchNorm(TorchSyncBatchNorm):
    """Lightning's sync-batchnorm plugin, extended to normzoo's own batch-statistics layers."""

    def apply(self, model: Any) -> Any:
        return convert_sync_norms(model)

    def revert(self, model: Any) -> Any:
        return revert_sync_norms(super().revert(model))
