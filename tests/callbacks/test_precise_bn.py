"""PreciseBNGap: against a float64 computation by hand, zero where the EMA is exact, and training left unchanged.

Oracles: a float64 LightningModule with frozen weights (lr 0), so the precise statistics are
the average over the epoch's batches of each batch's mean and unbiased variance, computed
here with plain tensor operations; with ``momentum=None`` the EMA is that same average, so
every gap vanishes; with ``momentum=1`` it is the last batch alone.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from normzoo.callbacks.precise_bn import PreciseBNGap
from normzoo.errors import ConfigError, DiagnosticError
from normzoo.models import MLPClassifier
from tests.callbacks.test_training_unchanged import same
from tests.fixtures import gaussian_data
from tests.tb_events import custom_scalars_layout, load_events, scalar_series
from tests.test_readme import glossary_patterns

BATCHES, BATCH = 4, 8


class TwoBN(L.LightningModule):
    """A user's float64 module: Linear-BN-ReLU-Linear-BN-Linear, cross-entropy, frozen weights (lr 0)."""

    def __init__(self, momentum: float | None) -> None:
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(4, 5), nn.BatchNorm1d(5, momentum=momentum)
        self.fc2, self.bn2 = nn.Linear(5, 4), nn.BatchNorm1d(4, momentum=momentum)
        self.head = nn.Linear(4, 3)
        self.double()

    def forward(self, x):
        return self.head(self.bn2(self.fc2(F.relu(self.bn1(self.fc1(x))))))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def loaders() -> tuple[DataLoader, DataLoader]:
    data = gaussian_data(BATCHES * BATCH + 16, 4, 3, scale=3.0, shift=5.0)
    x, y = data.tensors[0].double(), data.tensors[1]
    train = DataLoader(TensorDataset(x[:-16], y[:-16]), batch_size=BATCH)
    return train, DataLoader(TensorDataset(x[-16:], y[-16:]), batch_size=BATCH)


def fit(momentum: float | None, trainer_kwargs, **options) -> tuple[TwoBN, PreciseBNGap]:
    torch.manual_seed(0)
    model, callback = TwoBN(momentum), PreciseBNGap()
    trainer = L.Trainer(**trainer_kwargs(max_epochs=1, num_sanity_val_steps=0, callbacks=[callback], **options))
    trainer.fit(model, *loaders())
    return model, callback


def precise_by_hand(model: TwoBN, x: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Per BN layer, the average over the training batches of the batch mean and unbiased variance."""
    totals = [[0.0, 0.0], [0.0, 0.0]]
    for batch in x.split(BATCH):
        h = batch
        for index, (linear, bn) in enumerate([(model.fc1, model.bn1), (model.fc2, model.bn2)]):
            h = F.linear(F.relu(h) if index else h, linear.weight, linear.bias)
            mean, var = h.mean(0), h.var(0)
            totals[index] = [totals[index][0] + mean / BATCHES, totals[index][1] + var / BATCHES]
            h = (h - mean) / torch.sqrt(h.var(0, correction=0) + bn.eps) * bn.weight + bn.bias
    return [(mean, var) for mean, var in totals]


def evaluate_by_hand(model: TwoBN, stats: list[tuple[Tensor, Tensor]], x: Tensor, y: Tensor) -> tuple[float, float]:
    """Validation loss and error with the given statistics in both BN layers."""
    h = x
    for index, (linear, bn) in enumerate([(model.fc1, model.bn1), (model.fc2, model.bn2)]):
        h = F.linear(F.relu(h) if index else h, linear.weight, linear.bias)
        mean, var = stats[index]
        h = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    logits = F.linear(h, model.head.weight, model.head.bias)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) != y).double().mean().item()


def test_every_gap_vanishes_where_the_ema_is_the_exact_average(trainer_kwargs):
    """momentum=None over exactly the batches the precise statistics read, weights frozen: EMA == precise."""
    _, callback = fit(None, trainer_kwargs)
    (record,) = callback.history
    assert record["step"] == BATCHES  # after the validation at the end of the epoch
    assert abs(record["val_loss_gap"]) < 1e-12 and record["val_error_gap"] == 0.0
    for layer in ("fc1", "fc2"):  # each BN is tagged with its layer: the linear it follows
        assert record[f"{layer}/mean_gap"] < 1e-12 and record[f"{layer}/var_gap"] < 1e-12


def test_a_fast_ema_against_precise_statistics_computed_by_hand_and_logged(trainer_kwargs, tmp_path):
    """momentum=1: the EMA holds the last batch alone. Precise statistics and both evaluations by hand."""
    logger = TensorBoardLogger(tmp_path, name="run", default_hp_metric=False)
    model, callback = fit(1.0, trainer_kwargs, logger=logger)
    (record,) = callback.history
    (train_x, _), (val_x, val_y) = (loader.dataset.tensors for loader in loaders())
    with torch.no_grad():
        precise = precise_by_hand(model, train_x)
        ema = [(bn.running_mean, bn.running_var) for bn in (model.bn1, model.bn2)]  # the EMA is back
        loss_ema, error_ema = evaluate_by_hand(model, ema, val_x, val_y)
        loss_precise, error_precise = evaluate_by_hand(model, precise, val_x, val_y)

    assert record["val_loss_ema"] == pytest.approx(loss_ema, rel=1e-12)
    assert record["val_loss_precise"] == pytest.approx(loss_precise, rel=1e-12)
    assert record["val_loss_gap"] == pytest.approx(loss_ema - loss_precise, rel=1e-9, abs=1e-12)
    assert abs(record["val_loss_gap"]) > 1e-3  # a fast-moving EMA is off
    assert (record["val_error_ema"], record["val_error_precise"]) == pytest.approx((error_ema, error_precise))
    for layer, (mean, var), (ema_mean, ema_var) in zip(("fc1", "fc2"), precise, ema, strict=True):
        mean_gap = ((ema_mean - mean).abs() / torch.sqrt(var + 1e-5)).mean().item()
        var_gap = ((ema_var - var).abs() / (var + 1e-5)).mean().item()
        assert record[f"{layer}/mean_gap"] == pytest.approx(mean_gap, rel=1e-10) and mean_gap > 0.01
        assert record[f"{layer}/var_gap"] == pytest.approx(var_gap, rel=1e-10) and var_gap > 0.01

    events = load_events(tmp_path / "run" / "version_0")
    glossary = glossary_patterns()  # the README's tag glossary names each of them
    for key, value in record.items():
        if key != "step":
            assert scalar_series(events, f"{callback.prefix}/{key}") == [(BATCHES, pytest.approx(value, rel=1e-6))]
            assert any(pattern.match(f"{callback.prefix}/{key}") for pattern in glossary), key
    charts = custom_scalars_layout(events)[callback.prefix]
    assert set(charts) == {"val_loss_ema, val_loss_precise", "val_loss_gap", "val_error_ema, val_error_precise",
                           "val_error_gap", "fc1: mean_gap, var_gap", "fc2: mean_gap, var_gap"}


def test_train_mode_evaluation_normalizes_each_validation_batch_with_its_own_statistics(trainer_kwargs):
    """``batch_statistics=True``: BN in train mode on each validation batch (of 8), computed here by hand."""
    torch.manual_seed(0)
    model, callback = TwoBN(1.0), PreciseBNGap(batch_statistics=True)
    trainer = L.Trainer(**trainer_kwargs(max_epochs=1, num_sanity_val_steps=0, callbacks=[callback]))
    trainer.fit(model, *loaders())
    (record,) = callback.history
    _, (val_x, val_y) = (loader.dataset.tensors for loader in loaders())
    losses, errors = [], []
    with torch.no_grad():
        for x, y in zip(val_x.split(BATCH), val_y.split(BATCH), strict=True):
            own = []  # each layer's biased batch statistics, as BN in train mode normalizes with them
            h = x
            for index, (linear, bn) in enumerate([(model.fc1, model.bn1), (model.fc2, model.bn2)]):
                h = F.linear(F.relu(h) if index else h, linear.weight, linear.bias)
                own.append((h.mean(0), h.var(0, correction=0)))
                h = (h - own[-1][0]) / torch.sqrt(own[-1][1] + bn.eps) * bn.weight + bn.bias
            loss, error = evaluate_by_hand(model, own, x, y)
            losses.append(loss)
            errors.append(error)
    assert record["val_loss_batch"] == pytest.approx(sum(losses) / 2, rel=1e-12)
    assert record["val_error_batch"] == pytest.approx(sum(errors) / 2)
    assert abs(record["val_loss_batch"] - record["val_loss_ema"]) > 1e-3
    assert "val_loss_batch" not in fit(1.0, trainer_kwargs)[1].history[0]  # off by default


def test_training_is_bit_identical_with_and_without_the_callback(trainer_kwargs):
    """Noisy BN (random draws), Adam, a loader shuffling with its own generator: at the validation cadence
    and mid-epoch at a step cadence, over two epochs."""

    def train(callbacks):
        L.seed_everything(0)
        model = MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=8, norm="noisy_bn",
                              optimizer={"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}})
        data = gaussian_data(64, 6, 3, scale=2.0, shift=1.0)
        train_loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1))
        trainer = L.Trainer(**trainer_kwargs(max_epochs=2, num_sanity_val_steps=0, callbacks=callbacks))
        trainer.fit(model, train_loader, DataLoader(data, batch_size=32))
        return model.state_dict(), trainer.optimizers[0].state_dict()

    callbacks = [PreciseBNGap(num_batches=3, batch_statistics=True),
                 PreciseBNGap(every_n_steps=3, num_batches=2, val_batches=1)]
    measured = train(callbacks)
    assert [[r["step"] for r in c.history] for c in callbacks] == [[4.0, 8.0], [0.0, 3.0, 6.0]]
    assert same(train([]), measured)


def test_a_model_without_batchnorm_or_a_fit_without_validation_is_said_once(trainer_kwargs):
    model = MLPClassifier(input_shape=(6,), num_classes=3, depth=1, width=8, norm="ln")
    with pytest.warns(UserWarning, match=r"PreciseBNGap stops measuring: MLPClassifier has no BatchNorm layer"):
        PreciseBNGap().setup(L.Trainer(**trainer_kwargs()), model, "fit")
    with pytest.warns(UserWarning, match=r"no validation data .*limit_val_batches=0"):
        PreciseBNGap().setup(L.Trainer(**trainer_kwargs(limit_val_batches=0)), TwoBN(None), "fit")
    callback = PreciseBNGap()
    with pytest.warns(UserWarning, match=r"PreciseBNGap stops measuring: no validation ran in this fit"):
        L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[callback])).fit(TwoBN(None), loaders()[0])
    assert callback.history == []


def test_a_first_measurement_that_fails_names_the_callback_and_the_fix(trainer_kwargs):
    def forward(pl_module, batch):
        raise RuntimeError("no such input")

    callback = PreciseBNGap(every_n_steps=1, forward=forward)
    with pytest.raises(DiagnosticError, match=r"PreciseBNGap could not evaluate TwoBN: the forward= function raised "
                                              r"RuntimeError: no such input"):
        L.Trainer(**trainer_kwargs(max_steps=1, num_sanity_val_steps=0, callbacks=[callback])).fit(
            TwoBN(None), *loaders())


@pytest.mark.parametrize(("options", "message"), [
    ({"every_n_steps": 0}, "every_n_steps to be a positive number or None, got 0"),
    ({"num_batches": None}, "num_batches to be a positive number, got None"),
    ({"num_batches": 2.5}, "num_batches to be a positive number, got 2.5"),
    ({"val_batches": -1}, "val_batches to be a positive number or None, got -1"),
    ({"eps": -1.0}, "eps >= 0, got -1.0"),
    ({"loss": "hinge"}, "Unknown loss 'hinge'"),
])
def test_a_bad_option_is_one_clear_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        PreciseBNGap(**options)


def test_normzoos_own_resumable_data_is_read_from_the_start_of_its_epoch(trainer_kwargs):
    """normzoo's training loaders resume from the run's position; re-read at an epoch's end they still give
    a whole pass (not the nothing left of the epoch), and training goes on exactly as without the callback."""
    from normzoo.data import ImageDataModule

    def run(callbacks):
        L.seed_everything(0)
        model = MLPClassifier(depth=1, width=16, norm="bn")
        options = trainer_kwargs(max_steps=10, callbacks=callbacks, limit_val_batches=1)
        L.Trainer(**options).fit(model, ImageDataModule("mnist5k", batch_size=500))
        return model

    callback = PreciseBNGap(num_batches=3)
    measured, plain = run([callback]), run([])
    assert [record["step"] for record in callback.history] == [8.0]  # 4,000 training samples: 8 steps an epoch
    assert callback.history[0]["val_loss_gap"] != 0.0
    assert same(measured.state_dict(), plain.state_dict())
