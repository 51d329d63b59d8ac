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


class EveryStepClassifier(MLPClassifier):
    """The classifier as it was: train metrics computed and logged at every step."""

    def _logs_this_step(self) -> bool:
        return True


@pytest.mark.parametrize("log_every_n_steps", [5, 1])
def test_train_metrics_reach_the_logger_as_if_logged_every_step(log_every_n_steps, tmp_path, trainer_kwargs):
    from lightning.pytorch.loggers import TensorBoardLogger

    from tests.tb_events import load_events, scalar_series

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=generator)
    data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
    logged = {}
    for model_class in (MLPClassifier, EveryStepClassifier):
        L.seed_everything(0)
        model = model_class(input_shape=(8,), num_classes=2, depth=1, width=8)
        logger = TensorBoardLogger(str(tmp_path), name=model_class.__name__, version=0)
        trainer = L.Trainer(**trainer_kwargs(max_steps=17, logger=logger, log_every_n_steps=log_every_n_steps))
        trainer.fit(model, data)
        events = load_events(tmp_path / model_class.__name__ / "version_0")
        logged[model_class] = [scalar_series(events, tag) for tag in ("train/loss", "train/acc")]
        logged[model_class].append(float(trainer.callback_metrics["train/loss"]))  # the last step's
    assert logged[MLPClassifier] == logged[EveryStepClassifier]
    assert len(logged[MLPClassifier][0]) == 17 // log_every_n_steps
