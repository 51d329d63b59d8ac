"""Switchable Normalization (Luo, Ren, Peng, Zhang & Li, ICLR 2019, "Differentiable Learning-to-Normalize via
Switchable Normalization"): registry key ``switch_norm``.

SN normalizes with a learned mixture of the IN, LN and BN statistics of its input. For maps
``(N, C, H, W)`` (the paper's Sec 3, Eq. 3-5), per sample n and channel c::

    mu_in  = mean over (H, W) of x[n, c]           var_in = mean over (H, W) of (x[n, c] - mu_in)^2
    mu_ln  = mean over C of mu_in                  var_ln = mean over C of (var_in + mu_in^2) - mu_ln^2
    mu_bn  = mean over N of mu_in                  var_bn = mean over N of (var_in + mu_in^2) - mu_bn^2
    mu     = sum_k w_k mu_k,   var = sum_k w'_k var_k,   k in (in, ln, bn)
    y      = gamma * (x - mu) / sqrt(var + eps) + beta

with ``w = softmax(mean_weight)`` and ``w' = softmax(var_weight)``, two learned triples of
importance logits (the paper's lambda and lambda'), initialised equal (ones, as the official
code does), so SN starts as the plain average of the three; ``gamma``, ``beta`` per channel.
The variances are the biased ones (1 / HW), as in Eq. 4 and in PyTorch's BN, IN and LN.
The LN and BN variances are computed in the algebraically equal two-pass form
``mean(var_in + (mu_in - mu_k)^2)`` (the law of total variance), which does not cancel
catastrophically when a mean is large against the spread.

Feature vectors ``(N, C)`` (``dims=1``): a sample's channel is a single value, so IN is
undefined (its variance is 0 and it would output zeros); the paper's SN for fully-connected
layers mixes LN (over the C features of a sample) and BN (over the batch) only, so ``dims=1``
has two importance logits each, ordered ``(ln, bn)``; ``dims=2`` has three, ordered
``(in, ln, bn)`` (the official code's orders).

Running statistics, eval mode: the BN part of an eval forward uses ``running_mean`` and
``running_var``; IN and LN still come from the sample, as they do not depend on the batch.
The paper estimates the BN statistics after training by the batch average (freeze the network,
feed training batches, average their means and variances), and the official code
(switchablenorms/Switchable-Normalization) keeps either that sum or a moving average whose
``momentum`` is the weight of the old value (0.9 for maps, 0.997 for vectors), with a
``running_var`` built from the unbiased IN variance (``x.var(-1)``), which is neither the
biased nor the unbiased batch variance. normzoo keeps its convention instead (``BatchStatNorm``):
``momentum`` is the weight of the new batch, ``momentum=None`` the cumulative average (over
the batches since ``reset_running_stats``: the paper's batch average), and ``running_var`` is
the unbiased BN variance ``var_bn * m / (m - 1)`` over the m = N * H * W values of a channel,
as in PyTorch's BN. Why: ``recalibrate_bn`` (whose ``estimator="batch_average"`` is the
paper's batch average), ``RunningStatsConvergence`` and the BN tools all read
``running_var`` as PyTorch's unbiased variance, so SN's running statistics mean what
every other layer's do. Eval normalizes with that unbiased variance, as PyTorch's BN does.
The training forward also uses the biased IN variance where the official code uses the
unbiased one: the paper's Eq. 4, and a 1 x 1 map then gives a zero IN variance, not NaN.

Synchronized BN: with a ``process_group`` (``convert_sync_norms``, Lightning's
``sync_batchnorm=True``), the BN part's mean and variance are those of every rank's batch
(sums of the per-rank sums over the counts, with gradients through the reductions), as for
normzoo's other ``BatchStatNorm`` layers; IN and LN are per sample and stay local.

Bias: ``cancels_bias`` is False. IN and BN subtract a per-channel mean, which removes a
per-channel bias b before the layer, but LN subtracts the mean over channels, which removes
only mean_c(b): with w_ln > 0 the output keeps ``w_ln * (b - mean_c(b))`` in the numerator,
and var_ln grows with the spread of b. So models keep the bias of the layer before SN.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normzoo.errors import BatchStatisticsError
from normzoo.norms.batch_stats import BatchStatNorm, all_reduce_sum


class SwitchNorm(BatchStatNorm):
    """Switchable Normalization (registry key ``switch_norm``): a learned mixture of IN, LN and BN statistics.

    See the module docstring for the formula, the running statistics and the ``dims=1`` case.

    Args:
        num_features, dims, eps, momentum, affine, track_running_stats: as in ``BatchStatNorm``
            (the running statistics are those of the BN part).

    Attributes:
        mean_weight: importance logits of the means (the paper's lambda), ordered as ``parts``.
        var_weight: importance logits of the variances (lambda').
        parts: the statistics mixed: ``("in", "ln", "bn")`` for maps, ``("ln", "bn")`` for vectors.
    """

    cancels_bias = False  # the NormLayer protocol: LN's mean is shared by the channels (module docstring)

    def __init__(
        self,
        num_features: int,
        dims: int = 2,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__(num_features, dims, eps, momentum, affine, track_running_stats)
        self.parts = ("in", "ln", "bn") if dims == 2 else ("ln", "bn")
        self.mean_weight = nn.Parameter(torch.ones(len(self.parts)))
        self.var_weight = nn.Parameter(torch.ones(len(self.parts)))

    def importance(self) -> tuple[Tensor, Tensor]:
        """The importance weights ``(w, w')`` of the means and variances: softmaxes of the logits."""
        return torch.softmax(self.mean_weight, 0), torch.softmax(self.var_weight, 0)

    def normalize_batch(self, x: Tensor) -> Tensor:
        """Mix IN, LN and this batch's BN statistics; fold the BN ones into the running statistics."""
        if x.numel() == x.shape[1] and not self.syncing:
            raise BatchStatisticsError(
                f"SwitchNorm got 1 value per channel (input shape {tuple(x.shape)}): its BN statistics need at "
                "least 2. Train with a batch of 2 or more samples, or use a batch-independent norm (ln, gn)."
            )
        mu_in, var_in = self.instance_moments(x)
        mu_bn, var_bn, count = self.batch_moments(mu_in, var_in, x)
        self.update_running_stats(mu_bn.detach(), var_bn.detach(), count)
        return self.mix(x, mu_in, var_in, mu_bn, var_bn)

    def normalize_with_running_stats(self, x: Tensor) -> Tensor:
        """Eval mode: IN and LN from the sample, BN from ``running_mean`` and the unbiased ``running_var``."""
        mu_in, var_in = self.instance_moments(x)
        return self.mix(x, mu_in, var_in, self.running_mean.to(x.dtype), self.running_var.to(x.dtype))

    def instance_moments(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(mu_in, var_in)``, each ``(N, C)``: per sample and channel over (H, W); for vectors ``(x, None)``."""
        if self.dims == 1:
            return x, None
        var, mean = torch.var_mean(x, (2, 3), correction=0)
        return mean, var

    def batch_moments(self, mu_in: Tensor, var_in: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(mu_bn, var_bn, count)`` per channel, from the IN moments over the batch (and over ranks when syncing).

        ``var_bn`` is biased; ``count`` is the number of values behind it, N * H * W summed over ranks.
        """
        group = self.sync_group
        samples = torch.tensor(mu_in.shape[0], dtype=mu_in.dtype, device=mu_in.device)
        total = mu_in.sum(0)
        if group is not None:
            total, samples = all_reduce_sum(total, group), all_reduce_sum(samples, group)
        mean = total / samples
        squares = _spread(mu_in, var_in, mean.unsqueeze(0)).sum(0)
        if group is not None:
            squares = all_reduce_sum(squares, group)
        return mean, squares / samples, samples * (x[0, 0].numel())

    def mix(self, x: Tensor, mu_in: Tensor, var_in: Tensor | None, mu_bn: Tensor, var_bn: Tensor) -> Tensor:
        """Eq. 3: normalize ``x`` with the importance-weighted means and variances, then the affine transform."""
        mu_ln = mu_in.mean(1, keepdim=True)
        var_ln = _spread(mu_in, var_in, mu_ln).mean(1, keepdim=True)
        w, w_var = (weights.to(x.dtype) for weights in self.importance())
        means = (mu_ln, mu_bn.unsqueeze(0))
        variances = (var_ln, var_bn.unsqueeze(0))
        if var_in is not None:
            means, variances = (mu_in, *means), (var_in, *variances)
        mean = sum(weight * part for weight, part in zip(w, means, strict=True))
        var = sum(weight * part for weight, part in zip(w_var, variances, strict=True))
        shape = (*mean.shape, *([1] * (x.dim() - 2)))  # (N, C) statistics against (N, C, ...) inputs
        xhat = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        return self.affine_transform(xhat)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, parts={self.parts}"


def _spread(mu_in: Tensor, var_in: Tensor | None, mean: Tensor) -> Tensor:
    """``var_in + (mu_in - mean)^2``: a value's squared spread around ``mean``, averaged within its instance."""
    deviation = mu_in - mean
    squares = deviation * deviation
    return squares if var_in is None else var_in + squares
