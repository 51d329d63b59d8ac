"""Synchronized batch statistics for every BatchNorm-family layer, torch's and normzoo's.

torch's ``SyncBatchNorm.convert_sync_batchnorm`` converts ``_BatchNorm`` subclasses only.
normzoo's noisy BN keeps its noise through it (the noise is a sibling of the converted
inner BatchNorm), and normzoo's own batch-statistics layers (``bn_manual``,
``batch_renorm``, ``l1``, ``l2``, ``switch_norm``, ``evonorm_b0``) are not ``_BatchNorm``s: they sync by getting a
``process_group``. ``convert_sync_norms`` does both; ``normzoo.sync_plugin.NormZooSyncBatchNorm``
is the Lightning plugin that applies it (``sync_batchnorm=True``). Plain torch: no Lightning import.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch import nn

from normzoo.norms.batch_stats import BatchStatNorm


def convert_sync_norms(model: nn.Module, process_group: Any = None) -> nn.Module:
    """Make every batch-statistics layer of ``model`` reduce its statistics over ``process_group``.

    Args:
        model: any module; torch BatchNorms are replaced by ``SyncBatchNorm`` (GPU only, as in torch).
        process_group: the ranks to sync over; None means all of them.

    Returns:
        The converted model (a new object when ``model`` itself is a torch BatchNorm).
    """
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group)
    group = process_group if process_group is not None else dist.group.WORLD
    for module in model.modules():
        if isinstance(module, BatchStatNorm):
            module.process_group = group
    return model


def revert_sync_norms(model: nn.Module) -> nn.Module:
    """Undo ``convert_sync_norms`` for normzoo's layers (Lightning's plugin reverts torch's ``SyncBatchNorm``s)."""
    for module in model.modules():
        if isinstance(module, BatchStatNorm):
            module.process_group = None
    return model

