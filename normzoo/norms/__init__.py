"""Interchangeable normalization layers: the registry, the layers torch lacks, and tools for any model.

- the registry: ``register_norm``, ``get_norm_layer``, ``create_norm_layer``, ``available_norms``;
- layers: ``BatchStatNorm`` (the base of normzoo's batch-statistics norms) and its
  ``ManualBatchNorm``, ``BatchRenorm``, ``GhostBatchNorm``, ``LpBatchNorm``, ``SwitchNorm``, ``EvoNormB0``;
  ``NoisyBatchNorm``, ``RMSNorm``, ``ChannelLayerNorm``, ``FrozenBatchNorm``; the uncentred ``ChannelRMSNorm``
  and ``SimpleNorm``; the point-wise ``DynamicTanh``
  and ``DynamicErf``; the norm-activation ``FilterResponseNorm``, ``EvoNormB0`` and ``EvoNormS0``;
- tools for any model: ``norm_layers``, ``replace_norm``, ``freeze_norm``/``unfreeze_norm``,
  ``recalibrate_bn``, ``convert_sync_norms``/``revert_sync_norms``, ``guard_batch_statistics``,
  ``bn_batch_size``;
- what kind of layer a module is, and the ``NormLayer`` protocol a user's own norm declares:
  ``normzoo.norms.introspect``.

Plain torch: importing it imports neither Lightning nor TensorBoard. The Lightning plugin
that syncs these layers under ``sync_batchnorm`` is ``normzoo.sync_plugin.NormZooSyncBatchNorm``.

Example::

    from normzoo.norms import available_norms, create_norm_layer, get_norm_layer, register_norm
"""

from normzoo.errors import BatchStatisticsError, UnknownNormError
from normzoo.norms import builtin as _builtin  # noqa: F401  (registers the built-in keys)
from normzoo.norms.batch_size import SMALL_BN_BATCH, BNBatchSize, bn_batch_size
from normzoo.norms.batch_stats import BatchStatNorm
from normzoo.norms.find import norm_layers
from normzoo.norms.freeze import freeze_norm, unfreeze_norm
from normzoo.norms.ghost_bn import GhostBatchNorm
from normzoo.norms.guards import guard_batch_statistics
from normzoo.norms.introspect import (
    NormLayer,
    brings_activation,
    cancels_bias,
    is_norm,
    keeps_mean_and_variance,
    slow_in_channels_last,
    uses_batch_statistics,
)
from normzoo.norms.layers import BatchNoise, ChannelLayerNorm, FrozenBatchNorm, NoisyBatchNorm, RMSNorm
from normzoo.norms.lp_norm import LpBatchNorm
from normzoo.norms.manual_bn import ManualBatchNorm
from normzoo.norms.norm_act import EvoNormB0, EvoNormS0, FilterResponseNorm
from normzoo.norms.pointwise import DynamicErf, DynamicTanh, PointwiseSquash
from normzoo.norms.recalibrate import recalibrate_bn
from normzoo.norms.registry import (
    NormConstructor,
    NormSpec,
    available_norms,
    create_norm_layer,
    get_norm_layer,
    register_norm,
)
from normzoo.norms.renorm import BatchRenorm
from normzoo.norms.replace import replace_norm
from normzoo.norms.switch_norm import SwitchNorm
from normzoo.norms.sync import convert_sync_norms, revert_sync_norms
from normzoo.norms.uncentred import ChannelRMSNorm, SimpleNorm

__all__ = [
    "SMALL_BN_BATCH",
    "BNBatchSize",
    "BatchNoise",
    "BatchRenorm",
    "BatchStatNorm",
    "BatchStatisticsError",
    "ChannelLayerNorm",
    "ChannelRMSNorm",
    "DynamicErf",
    "DynamicTanh",
    "EvoNormB0",
    "EvoNormS0",
    "FilterResponseNorm",
    "FrozenBatchNorm",
    "GhostBatchNorm",
    "LpBatchNorm",
    "ManualBatchNorm",
    "NoisyBatchNorm",
    "NormConstructor",
    "NormLayer",
    "NormSpec",
    "PointwiseSquash",
    "RMSNorm",
    "SimpleNorm",
    "SwitchNorm",
    "UnknownNormError",
    "available_norms",
    "bn_batch_size",
    "brings_activation",
    "cancels_bias",
    "convert_sync_norms",
    "create_norm_layer",
    "freeze_norm",
    "get_norm_layer",
    "guard_batch_statistics",
    "is_norm",
    "keeps_mean_and_variance",
    "norm_layers",
    "recalibrate_bn",
    "register_norm",
    "replace_norm",
    "revert_sync_norms",
    "slow_in_channels_last",
    "unfreeze_norm",
    "uses_batch_statistics",
]

