"""BatchNorm from its definition, with the backward pass derived by hand (``bn_manual``).

Forward (Ioffe & Szegedy 2015, Alg. 1), per channel over the m values of a batch (and of
H, W for maps): ``mu = mean(x)``, ``var = mean((x - mu)^2)`` (biased),
``xhat = (x - mu) / sigma`` with ``sigma = sqrt(var + eps)``, ``y = gamma * xhat + beta``.

Backward, with ``dy = dL/dy`` (sums run over the same m values)::

    dbeta  = sum(dy)
    dgamma = sum(dy * xhat)
    dx     = gamma / (m * sigma) * (m * dy - dbeta - xhat * dgamma)

Why: ``dL/dxhat = gamma * dy``; since mu and var depend on every x_j,
``dx_i = (1 / sigma) * (dxhat_i - mean(dxhat) - xhat_i * mean(dxhat * xhat))``, and
``mean(dxhat) = gamma * dbeta / m``, ``mean(dxhat * xhat) = gamma * dgamma / m``; factoring
out ``gamma / (m * sigma)`` gives the line above.

The tutorial this project grew from boxes ``gamma / (sigma * sqrt(m)) * (sqrt(m) * dy -
dbeta - xhat * dgamma)``. That is wrong: it scales the ``dy`` term by ``1 / sigma`` (right)
but the two mean-removal terms by ``1 / (sqrt(m) * sigma)`` instead of ``1 / (m * sigma)``,
so it under-removes the gradient's mean and its projection on ``xhat`` by a factor sqrt(m).
A gradcheck against autograd tells the two apart (see tests/norms/test_manual_bn.py).

Under sync (``process_group`` set), the forward reduces the sums over ranks and the
backward reduces ``dbeta`` and ``dgamma`` for the ``dx`` formula, with m the global count,
exactly as SyncBatchNorm does; parameter gradients stay local (DDP averages them).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from normzoo.norms.batch_stats import BatchStatNorm


class BatchNormFunction(torch.autograd.Function):
    """``y, mean, var, count = BatchNormFunction.apply(x, weight, bias, eps, process_group)``.

    ``mean``, ``var`` (biased) and ``count`` are this batch's statistics, for the running averages.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, group: Any) -> Any:
        dims = (0,) if x.dim() == 2 else (0, 2, 3)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        total = x.sum(dims)
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype, device=x.device)
        if group is not None:
            packed = torch.cat([total, count.view(1)])
            dist.all_reduce(packed, group=group)
            total, count = packed[:-1], packed[-1]
        mean = total / count
        centred = x - mean.view(shape)
        squares = (centred * centred).sum(dims)
        if group is not None:
            dist.all_reduce(squares, group=group)
        var = squares / count
        rstd = torch.rsqrt(var + eps)
        xhat = centred * rstd.view(shape)
        y = xhat if weight is None else xhat * weight.view(shape) + bias.view(shape)
        ctx.save_for_backward(xhat, rstd, weight, count)
        ctx.group = group
        ctx.mark_non_differentiable(mean, var, count)
        return y, mean, var, count

    @staticmethod
    def backward(ctx: Any, dy: Tensor, *_stat_grads: Any) -> Any:
        xhat, rstd, weight, m = ctx.saved_tensors
        dims = (0,) if dy.dim() == 2 else (0, 2, 3)
        shape = (1, -1) + (1,) * (dy.dim() - 2)
        dbeta_local = dy.sum(dims)
        dgamma_local = (dy * xhat).sum(dims)
        dbeta, dgamma = dbeta_local, dgamma_local
        if ctx.group is not None:
            packed = torch.cat([dbeta_local, dgamma_local])
            dist.all_reduce(packed, group=ctx.group)
            dbeta, dgamma = packed.chunk(2)
        gamma = torch.ones_like(rstd) if weight is None else weight
        scale = (gamma * rstd / m).view(shape)
        dx = scale * (m * dy - dbeta.view(shape) - xhat * dgamma.view(shape))
        grad_weight = dgamma_local if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = dbeta_local if weight is not None and ctx.needs_input_grad[2] else None
        return dx, grad_weight, grad_bias, None, None


class ManualBatchNorm(BatchStatNorm):
    """BatchNorm written from its definition with the closed-form backward (registry key ``bn_manual``).

    Matches ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``: outputs, gradients and running statistics
    (momentum, ``momentum=None`` cumulative average, unbiased ``running_var``), in train and
    eval mode. See the module docstring for the derivation. Arguments as in ``BatchStatNorm``.
    """

    def normalize_batch(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        y, mean, var, count = BatchNormFunction.apply(x, weight, bias, self.eps, self.sync_group)
        self.update_running_stats(mean, var, count)
        return y
