"""How many samples BatchNorm computes its statistics from, and when that is too few.

Under DDP each rank normalizes with its own batch unless the layers are synchronized, so
the BN batch is the per-rank batch, not the global one. Wu & He (2018, Fig 1) show BN's
error rising fast below 16 images per GPU (ResNet-50 on ImageNet: 23.7% at 16, 24.8% at
8, 27.3% at 4, 34.7% at 2), while GN stays flat.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from normzoo.norms.introspect import uses_batch_statistics

SMALL_BN_BATCH = 16
"""Below this many samples per BN statistic, Wu & He measure BN's error rising."""


@dataclass(frozen=True)
class BNBatchSize:
    """The batch that a model's batch-statistics layers normalize over."""

    per_rank: int
    world_size: int
    synced: bool

    @property
    def effective(self) -> int:
        """Samples behind each batch statistic: all ranks' when synchronized, else one rank's."""
        return self.per_rank * self.world_size if self.synced else self.per_rank

    def warning(self) -> str | None:
        """Advice when BN trains on fewer than ``SMALL_BN_BATCH`` samples, else None."""
        if self.effective >= SMALL_BN_BATCH:
            return None
        sync = "" if self.world_size == 1 or self.synced else (
            f" (its {self.world_size} ranks do not share statistics: --trainer.sync_batchnorm=true on GPUs would "
            f"make it {self.per_rank * self.world_size})"
        )
        return (
            f"BatchNorm computes its statistics from {self.effective} samples per batch{sync}. Wu & He (2018) "
            f"measure BN's error rising fast below {SMALL_BN_BATCH} per GPU. Use a larger batch, synchronized BN, "
            "or a batch-independent norm (gn, ln)."
        )


def bn_batch_size(model: nn.Module, per_rank: int, world_size: int = 1) -> BNBatchSize | None:
    """The BN batch of ``model`` for a per-rank batch of ``per_rank`` samples; None without batch-statistics layers.

    Layers count as synchronized when they are torch ``SyncBatchNorm``s or normzoo layers with
    a ``process_group`` (see ``normzoo.norms.sync``); all of them must be for the model to be.
    A ghost BN layer (``virtual_batch_size``) normalizes chunks of its batch, on one rank: the
    smallest chunk is the batch the model's statistics come from.
    """
    layers = [m for m in model.modules() if uses_batch_statistics(m) and m.training]
    if not layers:
        return None
    chunks = [m.virtual_batch_size for m in layers if getattr(m, "virtual_batch_size", None)]
    synced = world_size > 1 and not chunks and all(
        isinstance(m, nn.SyncBatchNorm) or getattr(m, "process_group", None) is not None for m in layers
    )
    return BNBatchSize(per_rank=min([per_rank, *chunks]), world_size=world_size, synced=synced)
