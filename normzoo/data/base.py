"""What every normzoo datamodule shares: linkable shapes and BatchNorm-safe loaders.

A datamodule states ``input_shape`` and ``num_classes`` as soon as it is constructed, so
``NormZooCLI`` can link them into the model (``link_arguments``) before any data is read.
Training loaders drop a last batch that would hand BatchNorm a single sample (per rank
under DDP); evaluation loaders keep every sample.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler

from normzoo.data.device_loader import DeviceImageLoader
from normzoo.data.resumable import ResumableDataLoader, ResumableShuffle
from normzoo.errors import ConfigError

MIN_TRAIN_BATCH = 2
"""Smallest batch a BatchNorm layer can compute statistics from."""


class NormZooDataModule(L.LightningDataModule):
    """Base datamodule: subclasses set ``train_set``/``val_set``/``test_set`` in ``setup``.

    Args:
        batch_size: training batch size per device.
        eval_batch_size: batch size for validation/test/predict; defaults to ``batch_size``.
        num_workers: DataLoader worker processes (0 loads in the main process).
    """

    train_set: Dataset
    val_set: Dataset
    test_set: Dataset

    def __init__(self, batch_size: int = 64, eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, known before ``setup``."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        """Number of classes, known before ``setup``."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader | Iterable[tuple[Tensor, Tensor]]:
        drop_last = self._drop_last(len(self.train_set))
        device = self.data_device()
        if device is not None:
            return DeviceImageLoader(self.train_set, self.batch_size, self._shuffling_sampler(), device, drop_last)
        return self._loader(self.train_set, self.batch_size, sampler=self._shuffling_sampler(), drop_last=drop_last,
                            loader_class=ResumableDataLoader)

    def data_device(self) -> torch.device | None:
        """Where batches are made, if not by a per-sample ``DataLoader`` (see ``ImageDataModule``)."""
        return None

    def _world(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) without one."""
        return (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)

    def _shuffling_sampler(self) -> ResumableShuffle:
        """This rank's share of a seeded per-epoch shuffle, the same permutation for any world size.

        ``torch.randperm`` seeded with ``seed + epoch``, dealt to the ranks round-robin: one
        process with batch 2B sees, step by step, the union of what two ranks with batch B see,
        so DDP and single-process runs are comparable. The seed is ``seed_everything``'s
        (``PL_GLOBAL_SEED``), as in Lightning's own DDP sampler. The epoch and the batches of
        it already trained come from the trainer's loop state (``_training_position``), so a
        resumed run continues the uninterrupted run's order exactly.
        """
        world_size, rank = self._world()
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return ResumableShuffle(self.train_set, world_size, rank, seed, self.batch_size, self._training_position)

    def _training_position(self) -> tuple[int, int] | None:
        """(epoch, batches of it already trained) during a fit, from the trainer's (restored) loop state."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return None
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def val_dataloader(self) -> DataLoader | Iterable[tuple[Tensor, Tensor]]:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader | Iterable[tuple[Tensor, Tensor]]:
        return self._eval_loader(self.test_set)

    def predict_dataloader(self) -> DataLoader | Iterable[tuple[Tensor, Tensor]]:
        return self._eval_loader(self.test_set, predicting=True)

    def _eval_loader(self, dataset: Dataset, predicting: bool = False) -> DataLoader | Iterable[tuple[Tensor, Tensor]]:
        """Every sample of ``dataset`` in order, batched on ``data_device()`` or by a ``DataLoader``."""
        device = self.data_device()
        if device is None:
            return self._loader(dataset, self.eval_batch_size)  # Lightning shards it under DDP
        return DeviceImageLoader(dataset, self.eval_batch_size, self._eval_sampler(dataset, predicting), device)

    def _eval_sampler(self, dataset: Dataset, predicting: bool = False) -> Sampler[int]:
        """This rank's share of ``dataset`` in order: the shard Lightning gives an evaluation ``DataLoader``.

        Under DDP Lightning injects a non-shuffling ``DistributedSampler`` (padded with repeats
        so every rank runs the same number of steps), or for prediction its unpadded variant;
        a loader that is not a ``DataLoader`` gets none, so this one brings its own.
        """
        world_size, rank = self._world()
        if world_size == 1:
            return SequentialSampler(dataset)
        if predicting:
            return UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)

    def _drop_last(self, num_samples: int) -> bool:
        """Drop the last training batch only if a rank's last batch would be too small for BN."""
        world_size, _ = self._world()
        per_rank = math.ceil(num_samples / world_size)
        return 0 < per_rank % self.batch_size < MIN_TRAIN_BATCH

    def _loader(
        self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None, drop_last: bool = False,
        loader_class: type[DataLoader] = DataLoader,
    ) -> DataLoader:
        return loader_class(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
