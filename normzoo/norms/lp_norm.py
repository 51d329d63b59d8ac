"""l_p batch normalization (Santurkar et al. 2018, Sec 3.3): divide by an l_p norm, not the std.

Per channel over the batch (and H, W), the activations are centred by the batch mean and
divided by their size-normalized l_p norm, the "average l_p norm"::

    scale = (mean(|x - mu|^p))^(1/p)    for p = 1, 2
    scale = max(|x - mu|)               for p = inf

Dividing by the plain norm would make the scale grow with the batch size (sqrt(m) for
l_2), so the size-normalized one is used; ``l2`` is then BatchNorm with eps moved out of
the square root. Santurkar et al. find these normalizations train as well as BN, although
none of them makes layer inputs Gaussian. Running ``running_mean`` and ``running_scale``
(momentum averages) serve eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normzoo.errors import ConfigError
from normzoo.norms.batch_stats import BatchStatNorm, all_reduce_sum


class LpBatchNorm(BatchStatNorm):
    """Batch normalization by the l_p norm of the centred activations (keys ``l1``, ``l2``, ``linf``).

    Args:
        num_features, dims, eps, momentum, affine: as in ``BatchStatNorm``.
        p: 1, 2 or ``math.inf``.
    """

    spread_buffer = "running_scale"  # the running l_p scale, not a variance: recalibrate_bn leaves it alone

    def __init__(
        self,
        num_features: int,
        dims: int = 2,
        p: float = 2.0,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
    ) -> None:
        super().__init__(num_features, dims, eps, momentum, affine, track_running_stats=True)
        if p not in (1, 2, math.inf):
            raise ConfigError(f"LpBatchNorm supports p = 1, 2 or inf, got p={p}.")
        self.p = float(p)

    def normalize_batch(self, x: Tensor) -> Tensor:
        mean, scale = self.batch_mean_and_scale(x)
        self.fold_running_stats(mean.detach(), scale.detach())
        return self.affine_transform((x - self.per_channel(mean, x)) / (self.per_channel(scale, x) + self.eps))

    def normalize_with_running_stats(self, x: Tensor) -> Tensor:
        mean = self.per_channel(self.running_mean.to(x.dtype), x)
        scale = self.per_channel(self.running_scale.to(x.dtype), x)
        return self.affine_transform((x - mean) / (scale + self.eps))

    def batch_mean_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        dims = self.reduce_dims(x)
        group = self.sync_group
        if group is not None and self.p == math.inf:
            raise ConfigError("linf normalization cannot synchronize across ranks; use l1 or l2 with sync.")
        count = torch.tensor(x.numel() // x.shape[1], dtype=x.dtype, device=x.device)
        total = x.sum(dims)
        if group is not None:
            total, count = all_reduce_sum(total, group), all_reduce_sum(count, group)
        mean = total / count
        deviation = (x - self.per_channel(mean, x)).abs()
        if self.p == math.inf:
            return mean, deviation.amax(dims)
        powered = deviation.pow(self.p).sum(dims)
        if group is not None:
            powered = all_reduce_sum(powered, group)
        return mean, (powered / count).pow(1 / self.p)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"
