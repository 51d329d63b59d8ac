"""StopOnDivergence: a NaN/inf loss stops the run at the next check and marks it in its logs."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from normzoo.callbacks import StopOnDivergence
from normzoo.errors import ConfigError, DataError
from normzoo.models import MLPClassifier
from tests.fixtures import gaussian_loader
from tests.tb_events import load_events, scalar_series


def loader() -> DataLoader:
    return gaussian_loader(256, 8, 2, labels=lambda x: (x[:, 0] > 0).long())


def model(lr: float) -> MLPClassifier:
    optimizer = {"class_path": "torch.optim.SGD", "init_args": {"lr": lr}}
    return MLPClassifier(input_shape=(8,), num_classes=2, depth=2, width=16, norm="none", optimizer=optimizer)


def fit(lr: float, tmp_path, **callback_kwargs) -> tuple[StopOnDivergence, L.Trainer]:
    L.seed_everything(0)
    callback = StopOnDivergence(**callback_kwargs)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=60, callbacks=[callback], enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1,
        logger=TensorBoardLogger(str(tmp_path), name="run", version=0, default_hp_metric=False),
    )
    trainer.fit(model(lr), loader())
    return callback, trainer


def test_a_huge_learning_rate_stops_at_the_next_check_and_is_marked(tmp_path):
    with pytest.warns(UserWarning, match="NaN or infinite.*detected at step"):
        callback, trainer = fit(1e12, tmp_path, check_every_n_steps=5)
    assert callback.diverged_at is not None and callback.diverged_at % 5 == 0
    assert trainer.global_step == callback.diverged_at < 60
    events = load_events(tmp_path / "run" / "version_0")
    assert scalar_series(events, "zoo/run/diverged")[0] == (callback.diverged_at, 1.0)
    assert scalar_series(events, "zoo/run/completed") == [(callback.diverged_at, 1.0)]


def test_a_healthy_run_trains_to_the_end_marked_not_diverged(tmp_path):
    callback, trainer = fit(0.1, tmp_path)
    assert callback.diverged_at is None and trainer.global_step == 60
    events = load_events(tmp_path / "run" / "version_0")
    assert scalar_series(events, "zoo/run/diverged") == [(60, 0.0)]
    assert scalar_series(events, "zoo/run/completed") == [(60, 1.0)]


def test_state_survives_a_checkpoint_and_bad_settings_are_clear(tmp_path):
    callback = StopOnDivergence()
    callback.diverged_at = 7
    restored = StopOnDivergence()
    restored.load_state_dict(callback.state_dict())
    assert restored.diverged_at == 7
    with pytest.raises(ConfigError, match="check_every_n_steps must be >= 1"):
        fit(0.1, tmp_path, check_every_n_steps=0)


def poisoned(batch_with_nan: int, value: float = float("nan")) -> DataLoader:
    """64 samples in batches of 8; one value of batch ``batch_with_nan`` is NaN (or inf)."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=generator), torch.randint(0, 3, (64,), generator=generator)
    x[batch_with_nan * 8 + 2, 4] = value
    return DataLoader(TensorDataset(x, y), batch_size=8)


def classifier() -> MLPClassifier:
    return MLPClassifier(input_shape=(6,), num_classes=3, depth=1, width=8, norm="ln")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_bad_training_data_is_named_as_bad_data_not_a_divergence(value, trainer_kwargs):
    trainer = L.Trainer(**trainer_kwargs(max_steps=8, callbacks=[StopOnDivergence(check_every_n_steps=4)]))
    with pytest.raises(DataError, match=r"training inputs hold NaN or inf values, first in batch 3 of epoch 0 "
                                          r"\(step 4\): the data is bad, not the learning rate"):
        trainer.fit(classifier(), poisoned(3, value))


@pytest.mark.parametrize("split", ["validation", "test"])
def test_bad_evaluation_data_is_an_error_naming_the_split_and_batch(split, trainer_kwargs):
    trainer = L.Trainer(**trainer_kwargs(max_epochs=1, limit_train_batches=2, num_sanity_val_steps=0))
    with pytest.raises(DataError, match=rf"The {split} inputs hold NaN or inf values, first in batch 5\."):
        if split == "validation":
            trainer.fit(classifier(), poisoned(7), poisoned(5))
        else:
            trainer.test(classifier(), poisoned(5))
