"""The training order as a position in the run, so a resumed fit sees exactly the batches the uninterrupted one would.

Two things went wrong when a run was resumed with Lightning's own bookkeeping: the epoch it
passes to ``set_epoch`` after a checkpoint saved at an epoch's end is one too many (the
resumed epoch was shuffled as the next one), and a loader restarted mid-epoch begins its
epoch again. ``ResumableShuffle`` therefore reads both from the trainer's restored loop
state when a pass begins: the epoch (``trainer.current_epoch``) seeds the permutation, and
the batches this epoch has already trained are left out. ``ResumableDataLoader`` (and
``DeviceImageLoader``) declare themselves resumable to Lightning, whose loop state is the
one record of the position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler

Position = Callable[[], tuple[int, int] | None]
"""``() -> (epoch, batches of it already trained)``, or None outside a fit."""


class ResumableShuffle(DistributedSampler):
    """This rank's share of a seeded per-epoch shuffle, starting where the run's restored position says.

    Args:
        dataset: the training set.
        num_replicas, rank, seed: as in ``DistributedSampler`` (``torch.randperm`` seeded with
            ``seed + epoch``, dealt to the ranks round-robin).
        batch_size: samples per batch of this rank, to turn trained batches into samples.
        position: where the run is (see ``Position``); without one, ``set_epoch``'s epoch and no skip.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, batch_size: int,
                 position: Position) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.position = position

    def __iter__(self) -> Iterator[int]:
        where = self.position()
        skip = 0
        if where is not None:
            self.epoch, batches_done = where
            skip = batches_done * self.batch_size
        return iter(list(super().__iter__())[skip:])

    @contextmanager
    def from_the_start(self) -> Iterator[None]:
        """Inside the block, a new pass is the current epoch's whole order, whatever has been trained of it: for a
        callback that re-reads the training data mid-fit (``PreciseBNGap``) without moving the run's position."""
        position = self.position
        where = position()
        self.position = lambda: None if where is None else (where[0], 0)
        try:
            yield
        finally:
            self.position = position


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that Lightning treats as resumable mid-epoch: its sampler resumes from the loop state."""

    def state_dict(self) -> dict[str, Any]:
        """Nothing of its own: the position is the trainer's loop progress, saved in every checkpoint."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore (see ``state_dict``)."""
