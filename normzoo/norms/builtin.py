"""The built-in registry entries: bn, ln, in, gn, none, noisy_bn.

Semantics (see DESIGN.md), for feature vectors ``(N, C)`` / conv maps ``(N, C, H, W)``:

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
"""

from __future__ import annotations

from torch import nn

from normzoo.errors import ConfigError
from normzoo.norms.layers import NoisyBatchNorm
from normzoo.norms.registry import register_norm

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
