"""Shared machinery of normzoo's own batch-statistics norms: bn_manual, batch_renorm, l1/l2/linf.

They are plain ``nn.Module``s, not ``_BatchNorm`` subclasses, so torch's
``convert_sync_batchnorm`` cannot silently replace them with a plain ``SyncBatchNorm``.
Instead each has a ``process_group`` attribute: when it is set (by
``normzoo.norms.sync.convert_sync_norms``, which Lightning's ``sync_batchnorm=True`` uses
through ``normzoo.sync_plugin``), batch statistics are reduced across those ranks.

Running statistics follow PyTorch's conventions: ``momentum`` is the weight of the new
batch, ``momentum=None`` is a cumulative average (for re-estimating population statistics),
and ``running_var`` stores the unbiased batch variance. A subclass keeping another spread
statistic (the l_p norms' ``running_scale``) names its buffer in ``spread_buffer`` and folds
it with the same ``fold_running_stats``. Statistics are computed and stored
in float32, also under bf16/fp16 autocast; the output has the input's dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from normzoo.norms.layout import check_dims, check_layout


class BatchStatNorm(nn.Module):
    """Base class: parameters, running buffers, shapes and the running-statistics update.

    Args:
        num_features: channels (maps) or features (vectors).
        dims: 1 for ``(N, C)`` inputs, 2 for ``(N, C, H, W)``.
        eps: added to the variance (or scale) for numerical stability.
        momentum: weight of the new batch in the running averages; None for a cumulative average.
        affine: learn a per-channel scale ``weight`` (gamma) and shift ``bias`` (beta).
        track_running_stats: keep running statistics for eval; without them eval uses batch statistics.
    """

    # the NormLayer protocol (normzoo.norms.introspect): a norm, batch statistics, per-channel mean removed
    normzoo_norm = True
    batch_statistics = True
    cancels_bias = True
    spread_buffer = "running_var"
    """Name of the running spread statistic: the unbiased variance here; a subclass may keep another one."""

    def __init__(
        self,
        num_features: int,
        dims: int = 2,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        check_dims(dims)
        self.num_features = num_features
        self.dims = dims
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.process_group: Any = None  # set by convert_sync_norms: reduce statistics across ranks
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        for buffer, initial in (("running_mean", 0.0), (self.spread_buffer, 1.0)):
            value = torch.full((num_features,), initial) if track_running_stats else None
            self.register_buffer(buffer, value)
        tracked = torch.tensor(0, dtype=torch.long) if track_running_stats else None
        self.register_buffer("num_batches_tracked", tracked)

    @property
    def running_spread(self) -> Tensor:
        """The running spread statistic: the buffer named by ``spread_buffer``."""
        return getattr(self, self.spread_buffer)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_spread.fill_(1)
            self.num_batches_tracked.zero_()

    @property
    def uses_batch_stats(self) -> bool:
        """Whether this forward normalizes with batch statistics (training, or no running stats)."""
        return self.training or not self.track_running_stats

    @property
    def syncing(self) -> bool:
        """Whether statistics are reduced across ranks in this forward."""
        return self.process_group is not None and dist.is_available() and dist.is_initialized()

    def check_input(self, x: Tensor) -> None:
        """Refuse an input that is not this layer's ``(N, C)`` or ``(N, C, H, W)`` (``check_layout``)."""
        check_layout(self, x)

    def forward(self, x: Tensor) -> Tensor:
        """Check the shape, then normalize in float32 (autocast off) and return the input's dtype."""
        self.check_input(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.to(stat_dtype(x))
            y = self.normalize_batch(xf) if self.uses_batch_stats else self.normalize_with_running_stats(xf)
        return y.to(x.dtype)

    def normalize_batch(self, x: Tensor) -> Tensor:
        """Normalize with this batch's statistics and fold them into the running ones (subclasses)."""
        raise NotImplementedError

    def reduce_dims(self, x: Tensor) -> tuple[int, ...]:
        """The dimensions statistics are taken over: the batch, and H, W for maps."""
        return channel_stat_dims(x)

    def per_channel(self, t: Tensor, like: Tensor) -> Tensor:
        """Reshape a per-channel vector to broadcast against ``like``."""
        return t.view(1, -1, *([1] * (like.dim() - 2)))

    def affine_transform(self, xhat: Tensor) -> Tensor:
        if self.weight is None:
            return xhat
        weight, bias = self.weight.to(xhat.dtype), self.bias.to(xhat.dtype)
        return xhat * self.per_channel(weight, xhat) + self.per_channel(bias, xhat)

    @property
    def sync_group(self) -> Any:
        """The process group to reduce statistics over in this forward, or None."""
        return self.process_group if self.syncing else None

    def normalize_with_running_stats(self, x: Tensor) -> Tensor:
        """Eval mode: ``(x - running_mean) / sqrt(running_var + eps)``, then the affine transform."""
        mean = self.per_channel(self.running_mean.to(x.dtype), x)
        rstd = self.per_channel(torch.rsqrt(self.running_var.to(x.dtype) + self.eps), x)
        return self.affine_transform((x - mean) * rstd)

    @torch.no_grad()
    def update_running_stats(self, mean: Tensor, var: Tensor, count: Tensor | int) -> None:
        """Fold one batch's mean and biased variance (over ``count`` values) into the running stats."""
        self.fold_running_stats(mean, var * (count / (count - 1)))

    @torch.no_grad()
    def fold_running_stats(self, mean: Tensor, spread: Tensor) -> None:
        """Fold one batch's mean and spread statistic into the running ones (while training and tracking)."""
        if not (self.training and self.track_running_stats):
            return
        self.num_batches_tracked.add_(1)
        factor = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_spread.lerp_(spread.to(self.running_spread.dtype), factor)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, dims={self.dims}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


def channel_stat_dims(x: Tensor) -> tuple[int, ...]:
    """The dimensions one channel's batch statistics run over: the batch, and H, W for maps."""
    return (0,) if x.dim() == 2 else (0, 2, 3)


def stat_dtype(x: Tensor) -> torch.dtype:
    """The dtype statistics are computed in: float32 for half precisions, else the input's."""
    return torch.promote_types(x.dtype, torch.float32)


def all_reduce_sum(tensor: Tensor, group: Any) -> Tensor:
    """Sum over ranks with gradients flowing back to every rank (torch.distributed.nn)."""
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)


def batch_moments(x: Tensor, dims: tuple[int, ...], group: Any = None) -> tuple[Tensor, Tensor, Tensor]:
    """Differentiable per-channel mean and biased variance over ``dims`` (and over ranks).

    Two passes (mean, then centred squares) for accuracy. Returns ``(mean, var, count)``.
    """
    count = torch.tensor(x.numel() // x.shape[1], dtype=x.dtype, device=x.device)
    total = x.sum(dims)
    if group is not None:
        total, count = all_reduce_sum(total, group), all_reduce_sum(count, group)
    mean = total / count
    centred = x - mean.view(1, -1, *([1] * (x.dim() - 2)))
    squares = (centred * centred).sum(dims)
    if group is not None:
        squares = all_reduce_sum(squares, group)
    return mean, squares / count, count
