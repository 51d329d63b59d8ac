"""Ghost (virtual) BatchNorm (Hoffer, Hubara & Soudry 2017, arXiv 1705.08741): registry key ``ghost_bn``.

The normalization batch is decoupled from the optimizer's batch: in training, the batch is
split into chunks of ``virtual_batch_size`` consecutive samples and each chunk is normalized
with its own per-channel mean and biased variance, exactly as BatchNorm normalizes a batch of
that size. Wu & Johnson (2021, "Rethinking 'Batch' in BatchNorm") find the error U-shaped in
this normalization batch size: small chunks give noisy statistics, large ones lose BN's
regularization, and the gap between training and eval outputs grows as chunks shrink.

The rules, for a batch of n samples and ``virtual_batch_size`` v:

- Chunks: ``max(1, n // v)`` chunks of v consecutive samples, the ``n % v`` samples left over
  joining the last chunk. No statistic comes from fewer than v samples, unless the whole batch
  is smaller than v: it is then one chunk, and the layer is plain BatchNorm. A batch that does
  not divide into chunks is therefore not an error: normzoo's training loaders keep the short
  last batch of an epoch, and ``virtual_batch_size`` would rarely divide it.
- Vectorized: a batch that divides evenly is viewed as ``(n / v, v, C, ...)`` and reduced in
  one pass; otherwise the first chunks and the larger last one are two such blocks. There is
  no loop over chunks, and channels-last inputs give channels-last outputs.
- Running statistics (for eval mode): once per training forward, as in BatchNorm with its
  ``momentum`` (``None``: cumulative average), ``running_mean`` moves towards the mean over
  chunks of the chunk means and ``running_var`` towards the mean over chunks of the unbiased
  chunk variances. For i.i.d. samples both estimate the population mean and variance without
  bias, which is what eval mode divides by and what ``recalibrate_bn`` measures. One update
  per forward keeps ``momentum`` the weight of one optimizer step, as for ``bn``; an update per
  chunk would weigh the chunks by their position in the batch.
- Eval mode normalizes with the running statistics; without them
  (``track_running_stats=False``) eval batches are chunked as training batches are.
- Affine: one per-channel ``weight`` and ``bias``, shared by every chunk, after normalizing.
- Inputs ``(N, C)`` (``dims=1``) and ``(N, C, H, W)`` (``dims=2``); statistics in float32
  under autocast (``BatchStatNorm``).
- Synchronized BN: chunks never span ranks, so a ``process_group`` set by ``sync_batchnorm``
  changes nothing; each rank normalizes its own chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normzoo.errors import BatchStatisticsError, ConfigError
from normzoo.norms.batch_stats import BatchStatNorm

DEFAULT_VIRTUAL_BATCH_SIZE = 32
"""Samples per statistic by default: the per-GPU BN batch of Goyal et al. 2017's ImageNet recipe."""


class GhostBatchNorm(BatchStatNorm):
    """BatchNorm whose training statistics come from chunks of ``virtual_batch_size`` samples (``ghost_bn``).

    See the module docstring for the rules (uneven batches, running statistics, eval mode).

    Args:
        num_features, dims, eps, momentum, affine, track_running_stats: as in ``BatchStatNorm``.
        virtual_batch_size: samples per chunk, the normalization batch size; an integer >= 2.

    Raises:
        ConfigError: ``virtual_batch_size`` is not an integer >= 2.
    """

    def __init__(
        self,
        num_features: int,
        dims: int = 2,
        virtual_batch_size: int = DEFAULT_VIRTUAL_BATCH_SIZE,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__(num_features, dims, eps, momentum, affine, track_running_stats)
        if isinstance(virtual_batch_size, bool) or not isinstance(virtual_batch_size, int) or virtual_batch_size < 2:
            raise ConfigError(
                f"Norm 'ghost_bn' needs virtual_batch_size to be an integer >= 2 (the samples behind each "
                f"statistic; one sample has no variance), got {virtual_batch_size!r}. Set norm_kwargs "
                "{virtual_batch_size: V} with V >= 2; a V at least the batch size is plain BatchNorm."
            )
        self.virtual_batch_size = virtual_batch_size

    def normalize_batch(self, x: Tensor) -> Tensor:
        """Normalize each chunk with its own statistics and fold their averages into the running ones."""
        blocks = [self._normalize_block(block) for block in chunk_blocks(x, self.virtual_batch_size)]
        xhats, means, variances = zip(*blocks, strict=True)
        self.fold_running_stats(torch.cat(means).mean(0).detach(), torch.cat(variances).mean(0).detach())
        return self.affine_transform(torch.cat(xhats) if len(xhats) > 1 else xhats[0])

    def _normalize_block(self, block: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(xhat, chunk means, unbiased chunk variances)`` of a ``(chunks, samples, C, ...)`` block.

        ``xhat`` has the batch layout ``(chunks * samples, C, ...)``; the statistics are ``(chunks, C)``.
        """
        dims = (1, *range(3, block.dim()))
        count = block[0, :, 0].numel()  # values behind one chunk's statistic of one channel
        if count < 2:
            raise BatchStatisticsError(
                f"GhostBatchNorm got 1 value per channel (a chunk of shape {tuple(block.shape[1:])}): batch "
                "statistics need at least 2. Train with a batch of 2 or more samples."
            )
        var, mean = torch.var_mean(block, dims, correction=0, keepdim=True)
        xhat = (block - mean) * torch.rsqrt(var + self.eps)
        chunks = block.shape[0]
        return xhat.flatten(0, 1), mean.view(chunks, -1), var.view(chunks, -1) * (count / (count - 1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"


def chunk_blocks(x: Tensor, size: int) -> list[Tensor]:
    """``x`` cut along the batch into ghost-BN chunks, as one or two blocks of equal chunks.

    A block is a view ``(chunks, samples, C, ...)`` of ``x``, so one reduction over its dim 1
    (and H, W) gives every chunk's statistics. ``max(1, n // size)`` chunks of ``size`` samples,
    the leftover samples joining the last chunk: one block when the batch divides evenly (or is
    a single chunk), else the chunks of ``size`` samples and the larger last chunk.
    """
    n = x.shape[0]
    chunks = max(1, n // size)
    if chunks == 1 or n == chunks * size:
        return [x.reshape(chunks, n // chunks, *x.shape[1:])]
    head = (chunks - 1) * size
    return [x[:head].reshape(chunks - 1, size, *x.shape[1:]), x[head:].unsqueeze(0)]
