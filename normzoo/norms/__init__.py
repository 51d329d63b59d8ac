"""Interchangeable normalization layers: the registry, the layers torch lacks, and helpers.

Public API::

    from normzoo.norms import available_norms, create_norm_layer, get_norm_layer, register_norm
"""

from normzoo.norms import builtin as _builtin  # noqa: F401  (registers bn, ln, in, gn, none, noisy_bn)
from normzoo.norms.guards import BatchStatisticsError, guard_batch_statistics
from normzoo.norms.layers import BatchNoise, NoisyBatchNorm
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
from normzoo.norms.traits import batch_norm_layers, cancels_bias

__all__ = [
    "BatchNoise",
    "BatchStatisticsError",
    "NoisyBatchNorm",
    "NormConstructor",
    "NormSpec",
    "UnknownNormError",
    "available_norms",
    "batch_norm_layers",
    "cancels_bias",
    "create_norm_layer",
    "get_norm_factory",
    "get_norm_layer",
    "guard_batch_statistics",
    "register_norm",
]
