"""The built-in registry entries: bn, ln, in, gn, none, noisy_bn, and the others below the table.

Semantics, for feature vectors ``(N, C)`` / conv maps ``(N, C, H, W)``:

| key      | statistics over                          | features | maps | learnable affine |
|----------|------------------------------------------|----------|------|------------------|
| bn       | batch (and H, W), per channel            | BatchNorm1d | BatchNorm2d | per channel |
| ln       | one sample, all of (C) / (C, H, W)       | LayerNorm | GroupNorm(1, C) | per channel |
| in       | one sample, one channel, over (H, W)     | error    | InstanceNorm2d | per channel |
| gn       | one sample, a group of channels (+ H, W) | GroupNorm | GroupNorm | per channel |
| none     | nothing: identity                        | Identity | Identity | none |
| noisy_bn | bn, then Santurkar's time-varying noise  | yes      | yes  | per channel |

``ln`` on maps is LayerNorm over (C, H, W) per sample, i.e. GroupNorm with one group, as in
Wu & He 2018; its affine is per channel. ``in`` keeps no running statistics and is
affine by default (the GN paper's IN): it normalizes with each sample's own statistics in
training and in eval. ``gn`` defaults to 32 groups, capped to the channel count.

More keys: ``bn_manual`` (BN from its definition, hand-derived backward), ``bn_nostats``
(BN without running statistics), ``frozen_bn`` (fixed statistics and affine),
``batch_renorm`` (Ioffe 2017), ``ghost_bn`` (ghost / virtual BN, Hoffer et al. 2017: statistics
per chunk of ``virtual_batch_size`` samples), ``rms`` (RMSNorm), ``ln_channel`` (per-position
LayerNorm over channels), ``rms_channel`` (per-position RMSNorm), ``simple``/``simple_channel``
(SimpleNorm: divided by the standard deviation, not centred), Santurkar et al.'s ``l1``, ``l2``,
``linf`` batch normalizations, and ``switch_norm`` (Switchable Normalization, Luo et al. 2019: a
learned mixture of IN, LN and BN statistics; LN and BN only for feature vectors).

The recent wave: ``dyt``/``derf`` (point-wise tanh/erf squashing with no statistics: Zhu et al. 2025,
Chen et al. 2025), ``frn`` (FRN + TLU, Singh & Krishnan 2020), ``evonorm_b0``/``evonorm_s0`` (Liu et al.
2020). The last three are norm-activation layers (``brings_activation``): they replace the activation
after them too; ``frn`` and ``evonorm_b0`` take maps only.
"""

from __future__ import annotations

import math

from torch import nn

from normzoo.errors import ConfigError
from normzoo.norms.ghost_bn import GhostBatchNorm
from normzoo.norms.layers import ChannelLayerNorm, FrozenBatchNorm, NoisyBatchNorm, RMSNorm
from normzoo.norms.lp_norm import LpBatchNorm
from normzoo.norms.manual_bn import ManualBatchNorm
from normzoo.norms.norm_act import EvoNormB0, EvoNormS0, FilterResponseNorm
from normzoo.norms.pointwise import DynamicErf, DynamicTanh
from normzoo.norms.registry import register_norm
from normzoo.norms.renorm import BatchRenorm
from normzoo.norms.switch_norm import SwitchNorm
from normzoo.norms.uncentred import ChannelRMSNorm, SimpleNorm

DEFAULT_GROUPS = 32


@register_norm("bn")
def batch_norm(
    num_features: int,
    dims: int,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
    affine: bool = True,
    track_running_stats: bool = True,
) -> nn.Module:
    """BatchNorm (Ioffe & Szegedy 2015): BatchNorm1d for features, BatchNorm2d for maps."""
    bn_class = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return bn_class(num_features, eps, momentum, affine, track_running_stats)


@register_norm("ln")
def layer_norm(num_features: int, dims: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    """LayerNorm: over the features of one sample; over (C, H, W) of one sample for maps."""
    if dims == 1:
        return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)
    return nn.GroupNorm(1, num_features, eps=eps, affine=affine)


@register_norm("in")
def instance_norm(
    num_features: int,
    dims: int,
    eps: float = 1e-5,
    affine: bool = True,
    track_running_stats: bool = False,
    momentum: float | None = 0.1,
) -> nn.Module:
    """InstanceNorm for maps: each sample's channel over (H, W); affine, no running stats."""
    if dims == 1:
        raise ConfigError(
            "Norm 'in' (InstanceNorm) normalizes each channel of a sample over its spatial "
            "positions, and a feature vector has none (it would output all zeros). For an "
            "MLP use 'ln' (the batch-independent choice), 'gn' or 'bn'."
        )
    return nn.InstanceNorm2d(
        num_features, eps=eps, momentum=momentum, affine=affine,
        track_running_stats=track_running_stats,
    )


@register_norm("gn")
def group_norm(
    num_features: int, dims: int, num_groups: int | None = None, eps: float = 1e-5, affine: bool = True
) -> nn.Module:
    """GroupNorm (Wu & He 2018): one sample, a group of channels; default 32 groups, capped."""
    groups = min(DEFAULT_GROUPS, num_features) if num_groups is None else num_groups
    if groups < 1 or num_features % groups:
        divisors = [g for g in range(1, num_features + 1) if num_features % g == 0]
        source = "the default (32, capped to the channel count)" if num_groups is None else "num_groups"
        raise ConfigError(
            f"Norm 'gn' cannot split {num_features} channels into {groups} groups ({source}): "
            f"the group count must divide the channel count. Set norm_kwargs "
            f"{{num_groups: G}} with G one of {divisors}."
        )
    return nn.GroupNorm(groups, num_features, eps=eps, affine=affine)


@register_norm("none")
def no_norm(num_features: int, dims: int) -> nn.Module:
    """No normalization: the identity, so a model with ``norm="none"`` is the plain network."""
    return nn.Identity()


# NoisyBatchNorm(num_features, dims, **options) already has a factory's signature.
register_norm("noisy_bn", NoisyBatchNorm)


# --- beyond the six: hand-written BN, variants, and Santurkar's l_p normalizations -----


@register_norm("bn_manual")
def manual_batch_norm(
    num_features: int, dims: int, eps: float = 1e-5, momentum: float | None = 0.1,
    affine: bool = True, track_running_stats: bool = True,
) -> nn.Module:
    """BatchNorm from its definition with the derived closed-form backward (``ManualBatchNorm``)."""
    return ManualBatchNorm(num_features, dims, eps, momentum, affine, track_running_stats)


@register_norm("bn_nostats")
def batch_norm_without_running_stats(num_features: int, dims: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    """BatchNorm without running statistics: batch statistics in training and in eval."""
    return batch_norm(num_features, dims, eps=eps, affine=affine, track_running_stats=False)


@register_norm("rms")
def rms_norm(num_features: int, dims: int, eps: float = 1e-6, affine: bool = True) -> nn.Module:
    """RMSNorm: per sample, over the features / (C, H, W), no centring (``RMSNorm``)."""
    return RMSNorm(num_features, dims, eps, affine)


@register_norm("ln_channel")
def channel_layer_norm(num_features: int, dims: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    """LayerNorm over the channels at each position of a map; plain LayerNorm for vectors."""
    if dims == 1:
        return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)
    return ChannelLayerNorm(num_features, eps, affine)


register_norm("rms_channel", ChannelRMSNorm)  # per position, over the channels (timm's RmsNorm2d)
register_norm("simple", SimpleNorm)  # x / std(x) * gamma, not centred (timm's SimpleNorm)


@register_norm("simple_channel")
def channel_simple_norm(num_features: int, dims: int, eps: float = 1e-6, affine: bool = True) -> nn.Module:
    """SimpleNorm over the channels at each position of a map (timm's SimpleNorm2d); ``simple`` for vectors."""
    return SimpleNorm(num_features, dims, eps, affine, per_position=True)


register_norm("batch_renorm", BatchRenorm)  # Ioffe 2017; (num_features, dims, **options)
register_norm("frozen_bn", FrozenBatchNorm)  # fixed statistics and affine: the identity from scratch
register_norm("ghost_bn", GhostBatchNorm)  # Hoffer et al. 2017; (num_features, dims, virtual_batch_size, ...)
register_norm("dyt", DynamicTanh)  # Zhu et al. 2025: gamma * tanh(alpha x) + beta, no statistics
register_norm("derf", DynamicErf)  # Chen et al. 2025: gamma * erf(alpha x + s) + beta, no statistics
register_norm("frn", FilterResponseNorm)  # Singh & Krishnan 2020: FRN + TLU, a norm-activation layer; maps only
register_norm("evonorm_b0", EvoNormB0)  # Liu et al. 2020: batch-dependent norm-activation layer; maps only
register_norm("evonorm_s0", EvoNormS0)  # Liu et al. 2020: batch-independent norm-activation layer


def _lp_factory(p: float):  # noqa: ANN202 - a registry factory
    def lp_batch_norm(
        num_features: int, dims: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True
    ) -> nn.Module:
        return LpBatchNorm(num_features, dims, p, eps, momentum, affine)

    lp_batch_norm.__doc__ = f"Santurkar et al. Sec 3.3: centre, then divide by the batch's average l_{p} norm."
    return lp_batch_norm


for _key, _p in (("l1", 1.0), ("l2", 2.0), ("linf", math.inf)):
    register_norm(_key, _lp_factory(_p))

register_norm("switch_norm", SwitchNorm)  # Luo et al. 2019; (num_features, dims, **options)
