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
from normzoo.tags import diagnostic_callback
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
    # one name per layer: conv features.0 with its BN features.1 and ReLU features.2; conv features.3 with .4 and .5
    expected = [
        "zoo/activation_drift/features.0/p50",
        "zoo/dead_units/features.0/dead_fraction",
        "zoo/dead_units/features.3/saturated_fraction",
        "zoo/gradient_flow/features.0/update_ratio_log10",
        "zoo/gradient_flow/features.0/entropy",
        "zoo/running_stats/features.3/mean_gap",
        "zoo/running_stats/train_eval/loss_gap",
        "zoo/gradient_ics/features.3/l2_diff",
        "zoo/gradient_ics/head/cosine",
        "zoo/loss_landscape/loss_variation",
        "zoo/loss_landscape/grad_change_max",
        "zoo/loss_landscape/beta_smoothness",
    ]
    for tag in expected:
        assert tag in tags["scalars"], tag
        assert [event.step for event in events.Scalars(tag)] == [0, 4, 8], tag
    layers = {tag.split("/")[2] for tag in tags["scalars"] if diagnostic_callback(tag) and tag.count("/") == 3}
    assert layers == {"features.0", "features.3", "head", "train_eval"}
    assert "zoo/activation_drift/features.3/bands" in tags["images"]
    assert "zoo/dead_units/features.3/saturation" in tags["images"]

    layout = custom_scalars_layout(events)  # a chart per (layer, family), so runs overlay layer by layer
    assert set(layout) == {f"zoo/{name}" for name in ("activation_drift", "dead_units", "gradient_flow",
                                                      "running_stats", "gradient_ics", "loss_landscape")} | {
        "zoo/activation_drift bands", "zoo/loss_landscape bands"}
    assert set(layout["zoo/activation_drift bands"]) | set(layout["zoo/activation_drift"]) == {
        f"{layer}: {family}" for layer in ("features.0", "features.3")
        for family in ("p50 in p15-p85", "mean, std", "w1 distance")}
    assert set(layout["zoo/loss_landscape bands"]) == {"loss, band: range along the step"}
    assert set(layout["zoo/loss_landscape"]) == {"loss_variation",
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
