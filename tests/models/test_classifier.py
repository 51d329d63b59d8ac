"""The LightningModule in a real Trainer: the BatchNorm batch-of-one error names the layer."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from normzoo.models import MLPClassifier
from normzoo.norms import BatchStatisticsError


def test_fit_with_batches_of_one_stops_with_the_layer_name(trainer_kwargs):
    data = TensorDataset(torch.randn(4, 6), torch.randint(0, 3, (4,)))
    model = MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=8, norm="bn")
    trainer = L.Trainer(**trainer_kwargs(max_steps=2))
    with pytest.raises(BatchStatisticsError, match=r"'backbone\.blocks\.0\.norm' \(BatchNorm1d\)"):
        trainer.fit(model, DataLoader(data, batch_size=1))


def test_batch_independent_norms_train_on_batches_of_one(trainer_kwargs):
    data = TensorDataset(torch.randn(4, 6), torch.randint(0, 3, (4,)))
    model = MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=8, norm="ln")
    trainer = L.Trainer(**trainer_kwargs(max_steps=2))
    trainer.fit(model, DataLoader(data, batch_size=1))
    assert trainer.global_step == 2
