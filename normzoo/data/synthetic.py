"""``SyntheticDataModule``: generated, learnable classification data of any shape.

The default is the BatchNorm tutorial's task: 10,000 samples of 500 Gaussian inputs and
2 classes. Labels come from a fixed random linear teacher, ``y = argmax(x W)``, so the
task is learnable by every model; image-shaped inputs (e.g. ``[3, 32, 32]``) let tests
drive CNNs without a dataset on disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import TensorDataset

from normzoo.data.base import NormZooDataModule
from normzoo.errors import ConfigError


class SyntheticDataModule(NormZooDataModule):
    """Gaussian inputs labelled by a random linear teacher, split 80/10/10.

    Args:
        num_samples: samples in all three splits together.
        input_shape: shape of one sample, e.g. ``[500]`` or ``[3, 32, 32]``.
        num_classes: number of classes (>= 2).
        seed: seed of the inputs and of the teacher.
        batch_size, eval_batch_size, num_workers: see ``NormZooDataModule``.
    """

    def __init__(
        self,
        num_samples: int = 10_000,
        input_shape: Sequence[int] = (500,),
        num_classes: int = 2,
        seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self.save_hyperparameters(logger=False)
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}.")
        if num_samples < 10:
            raise ConfigError(f"num_samples must be >= 10 to split 80/10/10, got {num_samples}.")
        self._input_shape = tuple(int(d) for d in input_shape)
        self._num_classes = num_classes
        self.num_samples = num_samples
        self.seed = seed

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        generator = torch.Generator().manual_seed(self.seed)
        inputs = torch.randn(self.num_samples, *self._input_shape, generator=generator)
        teacher = torch.randn(math.prod(self._input_shape), self._num_classes, generator=generator)
        labels = (inputs.flatten(1) @ teacher).argmax(dim=1)
        n_eval = self.num_samples // 10
        n_train = self.num_samples - 2 * n_eval
        splits = torch.split(torch.arange(self.num_samples), [n_train, n_eval, n_eval])
        self.train_set, self.val_set, self.test_set = (TensorDataset(inputs[i], labels[i]) for i in splits)
