"""Norm layers that torch does not ship: noisy BatchNorm (Santurkar et al. 2018).

Noisy BN is built as a plain ``nn.Module`` holding a BatchNorm child and a noise child,
not as a ``_BatchNorm`` subclass: torch's ``convert_sync_batchnorm`` replaces every
``_BatchNorm`` subclass with a plain ``SyncBatchNorm`` and would silently drop the noise.
With composition, only the inner BatchNorm is swapped and the noise survives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normzoo.errors import ConfigError


class BatchNoise(nn.Module):
    """Time-varying, non-zero-mean, non-unit-variance noise: ``a <- s * a + m`` per element.

    Santurkar et al. 2018 (Fig 2) inject this noise after each BatchNorm layer to show that
    BN's benefit does not come from stable layer-input distributions. At every training
    forward pass (every step), the layer draws a fresh distribution, and every activation of
    every sample gets its own ``s`` and ``m`` from it:

    - per layer and step: ``mu_t ~ U(mean_range)``, ``sigma_t ~ U(std_range)``;
    - per element: ``m ~ U(mu_t - mean_spread, mu_t + mean_spread)``,
      ``s ~ N(sigma_t, std_spread**2)``.

    In eval mode the layer is the identity. Draws use torch's RNG on the input's device,
    so ``seed_everything`` makes them reproducible and nothing syncs with the host.

    Args:
        mean_range: interval of the per-step mean ``mu_t``; default (-0.5, 0.5).
        std_range: interval of the per-step scale ``sigma_t``; default (1.0, 1.25).
        mean_spread: half-width of the per-element uniform shift around ``mu_t``; default 0.1.
        std_spread: standard deviation of the per-element scale around ``sigma_t``; default 0.1.
    """

    def __init__(
        self,
        mean_range: tuple[float, float] = (-0.5, 0.5),
        std_range: tuple[float, float] = (1.0, 1.25),
        mean_spread: float = 0.1,
        std_spread: float = 0.1,
    ) -> None:
        super().__init__()
        for label, (low, high) in (("mean_range", mean_range), ("std_range", std_range)):
            if low > high:
                raise ConfigError(f"{label} must be (low, high) with low <= high, got {(low, high)}.")
        if mean_spread < 0 or std_spread < 0:
            raise ConfigError("mean_spread and std_spread must be >= 0.")
        self.mean_range = tuple(mean_range)
        self.std_range = tuple(std_range)
        self.mean_spread = mean_spread
        self.std_spread = std_spread

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        mu_t = _uniform((), *self.mean_range, like=x)
        sigma_t = _uniform((), *self.std_range, like=x)
        shift = mu_t + _uniform(x.shape, -self.mean_spread, self.mean_spread, like=x)
        scale = sigma_t + self.std_spread * torch.randn_like(x)
        return torch.addcmul(shift, scale, x)

    def extra_repr(self) -> str:
        return (
            f"mean_range={self.mean_range}, std_range={self.std_range}, "
            f"mean_spread={self.mean_spread}, std_spread={self.std_spread}"
        )


def _uniform(shape: tuple[int, ...] | torch.Size, low: float, high: float, like: Tensor) -> Tensor:
    """Samples of U(low, high) with ``like``'s dtype and device, drawn on that device."""
    return torch.rand(shape, dtype=like.dtype, device=like.device) * (high - low) + low


class NoisyBatchNorm(nn.Module):
    """BatchNorm followed by ``BatchNoise``: the "noisy BN" of Santurkar et al. 2018, Fig 2.

    The noise sits after the BN affine transform and before the nonlinearity, as in the
    paper. The inner layer is ``self.bn`` (``BatchNorm1d`` or ``BatchNorm2d``), so running
    statistics, ``convert_sync_batchnorm`` and BN recalibration all see a real BatchNorm.

    Args:
        num_features: channels (or features) to normalize.
        dims: 1 for ``(N, C)`` inputs, 2 for ``(N, C, H, W)``.
        eps, momentum, affine, track_running_stats: as in ``nn.BatchNorm2d``.
        mean_range, std_range, mean_spread, std_spread: the noise, see ``BatchNoise``.
    """

    normzoo_norm = True  # a norm layer as a whole (see normzoo.norms.introspect.NormLayer)
    cancels_bias = True  # the inner BN removes any per-channel bias of the layer before it

    def __init__(
        self,
        num_features: int,
        dims: int = 2,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        mean_range: tuple[float, float] = (-0.5, 0.5),
        std_range: tuple[float, float] = (1.0, 1.25),
        mean_spread: float = 0.1,
        std_spread: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_features, self.dims = num_features, dims
        bn_class = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        self.bn = bn_class(num_features, eps, momentum, affine, track_running_stats)
        self.noise = BatchNoise(mean_range, std_range, mean_spread, std_spread)

    def forward(self, x: Tensor) -> Tensor:
        return self.noise(self.bn(x))


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019): LayerNorm without centring, ``y = x / rms(x) * gamma``.

    ``rms`` is taken per sample over the features (vectors) or over (C, H, W) (maps), like
    ``ln``; the learnable gain is per channel. Computed in float32 under autocast.

    Args:
        num_features: features or channels.
        dims: 1 for ``(N, C)``, 2 for ``(N, C, H, W)``.
        eps: added to the mean square.
        affine: learn the per-channel gain.
    """

    normzoo_norm = True

    def __init__(self, num_features: int, dims: int = 2, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.num_features, self.dims, self.eps = num_features, dims, eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        mean_square = xf.pow(2).mean(dim=tuple(range(1, x.dim())), keepdim=True)
        y = xf * torch.rsqrt(mean_square + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype).view(1, -1, *([1] * (x.dim() - 2)))
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, dims={self.dims}, eps={self.eps}, affine={self.weight is not None}"


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels at each spatial position of a map (ConvNeXt's LayerNorm2d).

    For ``(N, C, H, W)`` inputs every pixel's C-vector is normalized on its own, unlike
    ``ln``, which normalizes over (C, H, W) together.
    """

    normzoo_norm = True

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, elementwise_affine=affine)
        self.num_features, self.dims = num_features, 2

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FrozenBatchNorm(nn.Module):
    """BatchNorm with fixed statistics and affine parameters: ``y = (x - mean) / sqrt(var + eps) * w + b``.

    All four are buffers, so nothing trains and no mode changes them (torchvision's
    FrozenBatchNorm2d, as used when fine-tuning detectors). Built from scratch it is the
    identity; load a BatchNorm's ``state_dict`` into it to freeze that layer. Not a
    ``_BatchNorm`` subclass, so sync conversion leaves it alone.
    """

    normzoo_norm = True
    cancels_bias = False  # fixed statistics do not remove a bias

    def __init__(self, num_features: int, dims: int = 2, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.dims, self.eps = num_features, dims, eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        state_dict.pop(prefix + "num_batches_tracked", None)  # accept a BatchNorm's state_dict
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return (x * scale.view(shape) + shift.view(shape)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, dims={self.dims}, eps={self.eps}"
