"""All six of normzoo's callbacks on a LightningModule that is not normzoo's: metrics land in TensorBoard."""

from __future__ import annotations

import re

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from normzoo.callbacks import (
    ActivationDrift,
    DeadUnits,
    GradientFlow,
    GradientICS,
    LossLandscape,
    RunningStatsConvergence,
)
from tests.fixtures import gaussian_loader
from tests.tb_events import custom_scalars_layout, load_events


class UserCNN(L.LightningModule):
    """A plain user model: conv, BatchNorm2d, ReLU, pooling, linear head; its own optimizer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Tanh())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def loader() -> DataLoader:
    return gaussian_loader(64, (3, 8, 8), 4)


def callbacks():
    return [ActivationDrift(every_n_steps=4, probe_size=16), DeadUnits(every_n_steps=4, probe_size=16),
            GradientFlow(every_n_steps=4), RunningStatsConvergence(every_n_steps=4, probe_size=16),
            GradientICS(every_n_steps=4), LossLandscape(every_n_steps=4)]


def test_every_callback_logs_for_a_user_module(tmp_path, trainer_kwargs):
    logger = TensorBoardLogger(tmp_path, name="user", default_hp_metric=False)
    L.Trainer(**trainer_kwargs(max_steps=9, callbacks=callbacks(), logger=logger)).fit(UserCNN(), loader())
    events = load_events(tmp_path / "user" / "version_0")
    tags = events.Tags()
    expected = [
        "diagnostics/activation_drift/features.2/p50",
        "diagnostics/dead_units/features.2/dead_fraction",
        "diagnostics/dead_units/features.5/saturated_fraction",
        "diagnostics/gradient_flow/features.0.weight/update_ratio_log10",
        "diagnostics/gradient_flow/features.1/entropy",
        "diagnostics/running_stats/features.4/mean_gap",
        "diagnostics/running_stats/train_eval/loss_gap",
        "diagnostics/gradient_ics/features.3/l2_diff",
        "diagnostics/gradient_ics/head/cosine",
        "diagnostics/loss_landscape/loss_variation",
        "diagnostics/loss_landscape/grad_change_max",
        "diagnostics/loss_landscape/beta_smoothness",
    ]
    for tag in expected:
        assert tag in tags["scalars"], tag
        assert [event.step for event in events.Scalars(tag)] == [0, 4, 8], tag
    assert "diagnostics/activation_drift/features.5/bands" in tags["images"]
    assert "diagnostics/dead_units/features.5/saturation" in tags["images"]

    layout = custom_scalars_layout(events)  # a chart per (layer, family), so runs overlay layer by layer
    assert set(layout) == {f"diagnostics/{name}" for name in ("activation_drift", "dead_units", "gradient_flow",
                                                             "running_stats", "gradient_ics", "loss_landscape")}
    assert set(layout["diagnostics/activation_drift"]) == {
        f"{layer}: {family}" for layer in ("features.2", "features.5")
        for family in ("p50 in p15-p85", "mean, std", "w1 distance")}
    assert set(layout["diagnostics/loss_landscape"]) == {"loss, band: range along the step", "loss_variation",
                                                         "gradient_predictiveness", "beta_smoothness"}
    for charts in layout.values():
        for regexes in charts.values():
            assert any(re.search(regex, tag) for regex in regexes for tag in tags["scalars"]), regexes


def test_all_callbacks_together_leave_training_bit_identical(trainer_kwargs):
    def run(extra):
        L.seed_everything(0)
        model = UserCNN()
        L.Trainer(**trainer_kwargs(max_steps=9, callbacks=extra)).fit(model, loader())
        return model.state_dict()

    plain, measured = run([]), run(callbacks())
    assert all(torch.equal(value, measured[key]) for key, value in plain.items())
