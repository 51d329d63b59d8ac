"""``DeviceImageLoader``: batches cut from uint8 images held in device memory.

A CPU ``DataLoader`` decodes, crops, flips and collates one image at a time in Python:
~10k images/s, far below what a GPU trains on (50k+ images/s for a ResNet-18 in bf16), and ~10 ms per
evaluation step even for MNIST-5k on a CPU. MNIST, Fashion-MNIST, CIFAR and MNIST-5k fit
in GPU memory many times over as uint8, so this loader puts them on the device once (a
no-op on the CPU) and does everything per batch there: gather the batch by index, crop
with zero padding and flip (``random_crop_flip``'s augmentation), normalize.

It makes the same batches as the ``DataLoader`` path: the same order, taken from the same
sampler, and the same augmentation distribution (other random draws, so augmented pixels
differ). That is why ``ImageDataModule`` uses it by default for its in-memory data on a
GPU, and on a CPU unless ``DataLoader`` workers are asked for.

Training follows the seeded ``DistributedSampler`` (a permutation per epoch, dealt to ranks
round robin), which Lightning advances through ``loader.sampler``; evaluation follows a
``SequentialSampler``, or under DDP the non-shuffling ``DistributedSampler`` that Lightning
itself would inject into an evaluation ``DataLoader``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Sampler

from normzoo.data.base import ImageTensorDataset

CROP_PADDING = 4


class DeviceImageLoader:
    """Iterate ``(images, labels)`` batches of ``dataset`` on ``device``, in ``sampler``'s order.

    Args:
        dataset: the in-memory uint8 dataset (its mean, std and augment setting are used).
        batch_size: samples per batch (per rank).
        sampler: the sample indices of this rank, in order, with ``len``: for training a
            shuffling ``DistributedSampler``, whose ``set_epoch`` reshuffles (Lightning calls
            it every epoch); for evaluation a ``SequentialSampler`` or a non-shuffling
            ``DistributedSampler``. It is read once per pass.
        device: where the images live and the batches are made.
        drop_last: drop a last batch smaller than ``batch_size``.
    """

    batch_sampler: None = None
    """As in a ``DataLoader`` given a ``sampler``: Lightning reads both to tell if it shuffles."""

    def __init__(
        self,
        dataset: ImageTensorDataset,
        batch_size: int,
        sampler: Sampler[int],
        device: torch.device | str,
        drop_last: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.mean = dataset.mean.to(self.device)
        self.std = dataset.std.to(self.device)
        self.augment = dataset.augment
        self.batch_size = batch_size
        self.sampler = sampler
        self.drop_last = drop_last

    def state_dict(self) -> dict[str, Any]:
        """Nothing of its own: a ``ResumableShuffle`` sampler resumes from the trainer's loop state."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore (see ``state_dict``); declaring both makes Lightning treat the loader as resumable."""

    def __len__(self) -> int:
        count = len(self.sampler)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long).to(self.device)  # shorter after a mid-epoch resume
        count = len(order) // self.batch_size * self.batch_size if self.drop_last else len(order)
        for start in range(0, count, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images[index]
            if self.augment:
                images = crop_flip_batch(images)
            yield (images.float() - self.mean) / self.std, self.labels[index]


def crop_flip_batch(images: Tensor, padding: int = CROP_PADDING) -> Tensor:
    """``random_crop_flip`` for a whole ``(N, C, H, W)`` batch at once, on its device.

    Each image gets its own offsets, uniform in ``[0, 2 * padding]``, into the zero-padded
    image, and is flipped left-right with probability 1/2.
    """
    count, _, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (count, 1, 1), device=device)
    left = torch.randint(0, 2 * padding + 1, (count, 1, 1), device=device)
    rows = top + torch.arange(height, device=device).view(1, height, 1)
    columns = left + torch.arange(width, device=device).view(1, 1, width)
    flip = torch.rand(count, 1, 1, device=device) < 0.5
    columns = torch.where(flip, 2 * left + width - 1 - columns, columns)  # mirror within the crop
    batch = torch.arange(count, device=device).view(count, 1, 1)
    return padded[batch, :, rows, columns].permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)
