"""Interchangeable normalization layers: the registry, the layers torch lacks, and helpers.

Public API::

    from normzoo.norms import available_norms, create_norm_layer, get_norm_layer, register_norm
"""

from normzoo.norms import builtin as _builtin  # noqa: F401  (registers the built-in keys)
from normzoo.norms.batch_size import SMALL_BN_BATCH, BNBatchSize, bn_batch_size
from normzoo.norms.batch_stats import BatchStatNorm
from normzoo.norms.convert import freeze_norm, norm_layers, recalibrate_bn, replace_norm, unfreeze_norm
from normzoo.norms.guards import BatchStatisticsError, guard_batch_statistics
from normzoo.norms.layers import BatchNoise, ChannelLayerNorm, FrozenBatchNorm, NoisyBatchNorm, RMSNorm
from normzoo.norms.lp_norm import LpBatchNorm
from normzoo.norms.manual_bn import BatchNormFunction, ManualBatchNorm
from normzoo.norms.registry import (
    NormConstructor,
    NormSpec,
    UnknownNormError,
    available_norms,
    create_norm_layer,
    get_norm_factory,
    get_norm_layer,
    register_norm,
)
from normzoo.norms.renorm import BatchRenorm
from normzoo.norms.sync import NormZooSyncBatchNorm, convert_sync_norms, revert_sync_norms
from normzoo.norms.traits import cancels_bias, keeps_mean_and_variance

__all__ = [
    "BNBatchSize",
    "SMALL_BN_BATCH",
    "bn_batch_size",
    "BatchNoise",
    "BatchNormFunction",
    "BatchRenorm",
    "BatchStatNorm",
    "ChannelLayerNorm",
    "FrozenBatchNorm",
    "LpBatchNorm",
    "ManualBatchNorm",
    "NormZooSyncBatchNorm",
    "RMSNorm",
    "convert_sync_norms",
    "freeze_norm",
    "keeps_mean_and_variance",
    "norm_layers",
    "recalibrate_bn",
    "replace_norm",
    "unfreeze_norm",
    "revert_sync_norms",
    "BatchStatisticsError",
    "NoisyBatchNorm",
    "NormConstructor",
    "NormSpec",
    "UnknownNormError",
    "available_norms",
    "cancels_bias",
    "create_norm_layer",
    "get_norm_factory",
    "get_norm_layer",
    "guard_batch_statistics",
    "register_norm",
]
