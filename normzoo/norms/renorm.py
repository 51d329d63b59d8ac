"""Batch Renormalization (Ioffe 2017, arXiv 1702.03275): BN whose training output uses the population scale.

In training, with batch statistics ``mu_B``, ``sigma_B = sqrt(var_B + eps)`` and running
``mu``, ``sigma = sqrt(running_var + eps)``::

    r = clip(sigma_B / sigma, 1 / r_max, r_max)     (no gradient through r)
    d = clip((mu_B - mu) / sigma, -d_max, d_max)     (no gradient through d)
    xhat = (x - mu_B) / sigma_B * r + d

so training and inference outputs agree once the running statistics settle, which helps
small or non-i.i.d. batches. With ``r_max = 1`` and ``d_max = 0`` it is exactly BatchNorm.
The paper starts at (1, 0) and relaxes to (3, 5); ``warmup_steps`` ramps linearly from
(1, 0) to (r_max, d_max) over that many training steps (0: use r_max, d_max at once).
Eval mode uses the running statistics, as BN does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normzoo.errors import ConfigError
from normzoo.norms.batch_stats import BatchStatNorm, batch_moments


class BatchRenorm(BatchStatNorm):
    """Batch Renormalization (registry key ``batch_renorm``).

    Args:
        num_features, dims, eps, momentum, affine: as in ``BatchStatNorm``.
        r_max: largest allowed ratio of batch to population standard deviation (>= 1).
        d_max: largest allowed shift, in population standard deviations (>= 0).
        warmup_steps: training steps over which (r_max, d_max) ramp up from (1, 0).
    """

    surrogate_gradient = (  # the NormLayer protocol (normzoo.norms.introspect)
        "Batch Renormalization holds r and d constant in its backward (Ioffe 2017), so while they are "
        "not clipped its gradient is not the derivative of its forward, and its second derivatives are "
        "those of that surrogate gradient."
    )

    def __init__(
        self,
        num_features: int,
        dims: int = 2,
        eps: float = 1e-5,
        momentum: float | None = 0.01,
        affine: bool = True,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__(num_features, dims, eps, momentum, affine, track_running_stats=True)
        if r_max < 1 or d_max < 0:
            raise ConfigError(f"batch_renorm needs r_max >= 1 and d_max >= 0, got r_max={r_max}, d_max={d_max}.")
        self.r_max, self.d_max, self.warmup_steps = r_max, d_max, warmup_steps
        _keep_normalize_batch_eager()

    def current_limits(self) -> tuple[Tensor | float, Tensor | float]:
        """(r_max, d_max) at this step of the warm-up ramp."""
        if self.warmup_steps <= 0:
            return self.r_max, self.d_max
        progress = (self.num_batches_tracked.float() / self.warmup_steps).clamp(max=1.0)
        return 1 + (self.r_max - 1) * progress, self.d_max * progress

    def normalize_batch(self, x: Tensor) -> Tensor:
        mean, var, count = batch_moments(x, self.reduce_dims(x), self.sync_group)
        sigma_batch = torch.sqrt(var + self.eps)
        sigma = torch.sqrt(self.running_var.to(x.dtype) + self.eps)
        r_max, d_max = self.current_limits()
        r = (sigma_batch.detach() / sigma).clamp(1 / r_max, r_max)
        d = ((mean.detach() - self.running_mean.to(x.dtype)) / sigma).clamp(-d_max, d_max)
        xhat = (x - self.per_channel(mean, x)) * self.per_channel(r / sigma_batch, x) + self.per_channel(d, x)
        self.update_running_stats(mean.detach(), var.detach(), count)
        return self.affine_transform(xhat)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, warmup_steps={self.warmup_steps}"


def _keep_normalize_batch_eager() -> None:
    """Make ``BatchRenorm.normalize_batch`` run eagerly inside ``torch.compile`` (once, at the first layer built).

    r and d read the running statistics that the call then updates in place, and AOTAutograd's
    partitioner may re-read them in the backward after the update, which silently changes the
    gradient (pytorch/pytorch PR 197039). ``torch.compiler.disable`` imports ``torch._dynamo``
    (seconds), so it is applied when a layer is built rather than when ``normzoo.norms`` is imported.
    """
    if not getattr(BatchRenorm.normalize_batch, "_normzoo_eager", False):
        eager = torch.compiler.disable(BatchRenorm.normalize_batch)
        eager._normzoo_eager = True
        BatchRenorm.normalize_batch = eager
