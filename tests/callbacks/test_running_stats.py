"""RunningStatsConvergence: gaps against a direct computation, zero after recalibration, train/eval gap."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from normzoo.callbacks import RunningStatsConvergence
from normzoo.errors import ConfigError
from normzoo.models import MLPClassifier
from normzoo.norms import recalibrate_bn


class LinearBN(L.LightningModule):
    """A user's module: fixed Linear, BatchNorm1d, Linear head; no training (lr 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn, self.head = nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.bn(self.fc(x)))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def data(n: int = 64) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator) * 3 + 5
    return DataLoader(TensorDataset(x, torch.randint(0, 2, (n,), generator=generator)), batch_size=n)


def test_gaps_match_a_direct_computation(trainer_kwargs):
    torch.manual_seed(0)
    model = LinearBN()
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        model.bn.running_var.copy_(torch.tensor([1.0, 4.0, 0.5]))
    expected_mean, expected_var = model.bn.running_mean.clone(), model.bn.running_var.clone()
    callback = RunningStatsConvergence(every_n_steps=1, probe_size=64)
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[callback])).fit(model, data())
    x = data().dataset.tensors[0]
    with torch.no_grad():
        inputs = model.fc(x).double()
    mu, var = inputs.mean(0), inputs.var(0)
    record = callback.history[0]
    assert record["bn/mean_gap"] == pytest.approx(((expected_mean - mu).abs() / torch.sqrt(var + 1e-5)).mean().item())
    assert record["bn/var_gap"] == pytest.approx(((expected_var - var).abs() / (var + 1e-5)).mean().item())
    assert record["train_eval/loss_gap"] != 0.0


def test_gaps_vanish_after_recalibration_on_the_probe(trainer_kwargs):
    torch.manual_seed(0)
    model = LinearBN()
    recalibrate_bn(model, data())  # exact population statistics of the same 64 samples
    callback = RunningStatsConvergence(every_n_steps=1, probe_size=64)
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[callback])).fit(model, data())
    record = callback.history[0]
    assert record["bn/mean_gap"] < 1e-6 and record["bn/var_gap"] < 1e-6
    # train mode normalizes with the biased batch variance, eval with the unbiased one: a 1/64 effect
    assert abs(record["train_eval/loss_gap"]) < 0.02 and abs(record["train_eval/acc_gap"]) <= 1 / 64  # <= 1 sample


def test_running_stats_catch_up_during_training(trainer_kwargs):
    L.seed_everything(0)
    model = MLPClassifier(input_shape=(4,), num_classes=2, depth=1, width=8, norm="bn",
                          optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.0}})
    callback = RunningStatsConvergence(every_n_steps=10, probe_size=16)
    loader = DataLoader(data(256).dataset, batch_size=16)
    L.Trainer(**trainer_kwargs(max_steps=31, callbacks=[callback])).fit(model, loader)
    gaps = [r["backbone.blocks.0.norm/mean_gap"] for r in callback.history]
    assert len(gaps) == 4 and gaps[-1] < 0.2 * gaps[0]  # momentum 0.1: the lag decays over ~30 steps


def test_a_model_without_batchnorm_is_skipped_with_a_warning(trainer_kwargs):
    """One callback list serves a BN-vs-no-BN comparison: the no-BN run warns and measures nothing."""
    model = MLPClassifier(input_shape=(4,), num_classes=2, depth=1, width=8, norm="ln")
    callback = RunningStatsConvergence(every_n_steps=1, probe_size=16)
    with pytest.warns(UserWarning, match="no BatchNorm layer with running statistics"):
        L.Trainer(**trainer_kwargs(max_steps=2, callbacks=[callback])).fit(model, data())
    assert callback.history == [] and callback.probe.batch is None
    with pytest.raises(ConfigError, match="'backbone.nope' is not a BatchNorm layer"):
        L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[RunningStatsConvergence(layers=["backbone.nope"])])).fit(
            model, data())
