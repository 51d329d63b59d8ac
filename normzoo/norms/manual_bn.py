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

Second derivatives (Hessian-vector products, gradient penalties) differentiate the backward
itself, and there mu and sigma are functions of every x_j, not constants. So the backward
keeps ``x`` (not ``xhat``) and, when autograd records it (``create_graph=True``), first
recomputes the statistics from ``x`` with the same differentiable torch ops as the forward
(``batch_moments``); the three lines above then differentiate exactly. A plain first-order
backward rebuilds ``xhat`` from the saved mean and ``1 / sigma`` (one elementwise pass, no
reduction, no collective).

Under sync (``process_group`` set), the forward reduces the sums over ranks and the
backward reduces ``dbeta`` and ``dgamma`` for the ``dx`` formula, with m the global count,
exactly as SyncBatchNorm does; parameter gradients stay local (DDP averages them). The
reductions are differentiable (``torch.distributed.nn``), so double backward syncs too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normzoo.norms.batch_stats import BatchStatNorm, all_reduce_sum, batch_moments, channel_stat_dims


class BatchNormFunction(torch.autograd.Function):
    """``y, mean, var, count = BatchNormFunction.apply(x, weight, bias, eps, process_group)``.

    ``mean``, ``var`` (biased) and ``count`` are this batch's statistics, for the running averages.
    Differentiable twice: see the module docstring.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, group: Any) -> Any:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean, var, count = batch_moments(x, channel_stat_dims(x), group)
        rstd = torch.rsqrt(var + eps)
        xhat = (x - mean.view(shape)) * rstd.view(shape)
        y = xhat if weight is None else xhat * weight.view(shape) + bias.view(shape)
        ctx.save_for_backward(x, mean, rstd, weight, count)
        ctx.eps, ctx.group = eps, group
        ctx.mark_non_differentiable(mean, var, count)
        return y, mean, var, count

    @staticmethod
    def backward(ctx: Any, dy: Tensor, *_stat_grads: Any) -> Any:
        x, mean, rstd, weight, m = ctx.saved_tensors
        dims = channel_stat_dims(dy)
        shape = (1, -1) + (1,) * (dy.dim() - 2)
        if torch.is_grad_enabled():  # create_graph=True: mu and sigma must stay functions of x
            mean, var, m = batch_moments(x, dims, ctx.group)
            rstd = torch.rsqrt(var + ctx.eps)
        xhat = (x - mean.view(shape)) * rstd.view(shape)
        dbeta_local = dy.sum(dims)
        dgamma_local = (dy * xhat).sum(dims)
        dbeta, dgamma = dbeta_local, dgamma_local
        if ctx.group is not None:
            dbeta, dgamma = all_reduce_sum(torch.cat([dbeta_local, dgamma_local]), ctx.group).chunk(2)
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
