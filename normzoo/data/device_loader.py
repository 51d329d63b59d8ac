"""``DeviceImageLoader``: batches cut from uint8 images held in device memory.

A CPU ``DataLoader`` decodes, crops, flips and collates one image at a time in Python:
~10k images/s, far below what a GPU trains on (50k+ images/s for a ResNet-18 in bf16), and ~10 ms per
evaluation step even for MNIST-5k on a CPU. MNIST, Fashion-MNIST, CIFAR and MNIST-5k fit
in GPU memory many times over as uint8, so this loader puts them on the device once (a
no-op on the CPU) and does everything per batch there: gather the batch by index, then
the dataset's own crop + flip and normalization (``normzoo.data.image_tensors``), applied to
the whole batch at once.

It makes the same batches as the ``DataLoader`` path: the same order, taken from the same
sampler, and the same inputs from the same functions (augmentation draws its crops per
batch rather than per sample, so augmented pixels differ, not their distribution). That is
why ``ImageDataModule`` uses it by default for its in-memory data on a GPU, and on a CPU
unless ``DataLoader`` workers are asked for.

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
from torch import Tensor
from torch.utils.data import Sampler

from normzoo.data.image_tensors import ImageTensorDataset


class DeviceImageLoader:
    """Iterate ``(images, labels)`` batches of ``dataset`` on ``device``, in ``sampler``'s order.

    Args:
        dataset: the in-memory uint8 dataset; its images go to ``device`` once, and it makes each batch.
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
        self.dataset = dataset.to(self.device)
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
            yield self.dataset[order[start : start + self.batch_size]]
