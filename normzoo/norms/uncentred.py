"""Norms that divide by a spread without subtracting a mean: per-position RMSNorm and SimpleNorm.

Registry keys ``rms_channel``, ``simple`` and ``simple_channel`` (``rms``, RMSNorm over a sample's
features or (C, H, W), is ``normzoo.norms.layers.RMSNorm``). None of them centres its input, so a
bias before them is not cancelled, and none has a learned bias: the gain ``gamma`` (``weight``,
ones) is the only parameter. Statistics are per sample, in float32 under autocast.

- ``rms_channel``: ``y = x / sqrt(mean_C x^2 + eps) * gamma`` at each position of a map, over its C
  channels (timm's ``RmsNorm2d``, the ``rmsnorm2d`` of its registry); on feature vectors the mean
  runs over the features, which is ``rms``.
- ``simple``: SimpleNorm, ``y = x / sqrt(var(x) + eps) * gamma``, the variance taken with Bessel's
  correction (``n - 1``) over a sample's features, or over (C, H, W) for maps, like ``rms`` and
  ``ln``. The standard deviation is that around the mean, but the mean is not subtracted: a
  LayerNorm without centring of the output, or an RMSNorm that ignores a constant offset of its
  input. timm's ``SimpleNorm`` (``simplenorm``), which normalizes a ViT's tokens; its
  ``SimpleNorm2d`` (``simplenorm2d``) is ``simple_channel``.
- ``simple_channel``: SimpleNorm over the C channels at each position of a map (on feature
  vectors: ``simple``).

Defaults follow timm's (``eps=1e-6``, the variance's ``n - 1``), so the layers equal timm's to float
precision; ``tests/norms/test_timm_names.py`` compares them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normzoo.errors import ConfigError
from normzoo.norms.batch_stats import stat_dtype
from normzoo.norms.layout import check_dims, check_layout


class _UncentredNorm(nn.Module):
    """Shared by the layers below: a per-channel gain, an input check, float32 statistics."""

    # the NormLayer protocol (normzoo.norms.introspect)
    normzoo_norm = True
    cancels_bias = False  # no mean subtracted: a bias before it still matters

    def __init__(self, num_features: int, dims: int, eps: float, affine: bool, per_position: bool) -> None:
        super().__init__()
        check_dims(dims)
        self.num_features, self.dims, self.eps, self.per_position = num_features, dims, eps, per_position
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        """``x`` divided by its spread over ``statistic_dims``, times the gain; the input's dtype."""
        check_layout(self, x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.to(stat_dtype(x))
            y = xf * torch.rsqrt(self.spread(xf, self.statistic_dims(xf)) + self.eps)
            if self.weight is not None:
                y = y * self.weight.to(y.dtype).view(1, -1, *([1] * (x.dim() - 2)))
        return y.to(x.dtype)

    def statistic_dims(self, x: Tensor) -> tuple[int, ...]:
        """The channels at each position, or all of a sample's (C, H, W) / features."""
        return (1,) if self.per_position else tuple(range(1, x.dim()))

    def spread(self, x: Tensor, dims: tuple[int, ...]) -> Tensor:
        """The squared spread the layer divides by (subclasses)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"{self.num_features}, dims={self.dims}, eps={self.eps}, affine={self.weight is not None}, "
                f"per_position={self.per_position}")


class ChannelRMSNorm(_UncentredNorm):
    """RMSNorm over the channels at each position of a map: ``x / sqrt(mean_C x^2 + eps) * gamma`` (timm's
    ``RmsNorm2d``). Registry key ``rms_channel``; on feature vectors it is ``rms``.

    Args:
        num_features: channels or features.
        dims: 1 for ``(N, C)``, 2 for ``(N, C, H, W)``.
        eps: added to the mean square (timm's 1e-6).
        affine: learn the per-channel gain.
    """

    def __init__(self, num_features: int, dims: int = 2, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__(num_features, dims, eps, affine, per_position=True)

    def spread(self, x: Tensor, dims: tuple[int, ...]) -> Tensor:
        return x.square().mean(dim=dims, keepdim=True)

    def extra_repr(self) -> str:
        return f"{self.num_features}, dims={self.dims}, eps={self.eps}, affine={self.weight is not None}"


class SimpleNorm(_UncentredNorm):
    """SimpleNorm: ``x / sqrt(var(x) + eps) * gamma``, the variance with ``n - 1``, the mean not subtracted
    (timm's ``SimpleNorm``, ``SimpleNorm2d`` with ``per_position``). Registry keys ``simple`` and
    ``simple_channel``; see the module docstring.

    Args:
        num_features: channels or features.
        dims: 1 for ``(N, C)``, 2 for ``(N, C, H, W)``.
        eps: added to the variance (timm's 1e-6).
        affine: learn the per-channel gain.
        per_position: over the channels at each position of a map (``simple_channel``), instead of
            over a sample's (C, H, W).
    """

    def __init__(
        self, num_features: int, dims: int = 2, eps: float = 1e-6, affine: bool = True, per_position: bool = False
    ) -> None:
        if num_features < 2 and (per_position or dims == 1):
            raise ConfigError(
                f"SimpleNorm over {num_features} {'channel' if dims == 2 else 'feature'}: the variance of one value "
                "with n - 1 is undefined (0 / 0). Use 'rms_channel' or 'rms', or a layer with 2 or more."
            )
        super().__init__(num_features, dims, eps, affine, per_position)

    def spread(self, x: Tensor, dims: tuple[int, ...]) -> Tensor:
        """The variance with ``n - 1``, in two passes (the mean, then the squares around it): as exact as
        ``torch.var`` and, over the channels of an NCHW map, about twice as fast on a CPU (its kernel reduces
        a strided dimension slowly)."""
        centred = x - x.mean(dim=dims, keepdim=True)
        sum_of_squares = centred.square().sum(dim=dims, keepdim=True)
        count = x.numel() // sum_of_squares.numel()  # values per statistic
        return sum_of_squares / (count - 1)
