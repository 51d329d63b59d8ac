"""DeadUnits on constructed activations: exact dead and saturated fractions, image, no side effects."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from normzoo.callbacks import DeadUnits
from normzoo.callbacks.capture import Captured
from normzoo.errors import ConfigError
from tests.fixtures import gaussian_loader
from tests.tb_events import load_events


class ConstructedNet(L.LightningModule):
    """A user's own LightningModule: 8 ReLU units of which 2 are dead, 6 tanh units of which 3 saturate."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.relu = nn.Linear(4, 8), nn.ReLU()
        self.fc2, self.tanh = nn.Linear(8, 6), nn.Tanh()
        self.head = nn.Linear(6, 2)
        with torch.no_grad():
            self.fc1.weight.normal_(0, 0.1)
            self.fc1.bias.fill_(1.0)
            self.fc1.weight[:2] = 0.0
            self.fc1.bias[:2] = -1.0  # units 0, 1: input -1 for every example: dead
            self.fc2.weight.zero_()
            self.fc2.bias.copy_(torch.tensor([10.0, -10.0, 10.0, 0.0, 0.1, -0.2]))  # 3 saturated units

    def forward(self, x):
        return self.head(self.tanh(self.fc2(self.relu(self.fc1(x)))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # keep the construction through training


def data() -> DataLoader:
    return gaussian_loader(64, 4, 2)


def test_dead_and_saturated_fractions_are_exact(tmp_path, trainer_kwargs):
    callback = DeadUnits(every_n_steps=2, probe_size=16)
    logger = TensorBoardLogger(tmp_path, name="dead", default_hp_metric=False)
    L.Trainer(**trainer_kwargs(max_steps=4, callbacks=[callback], logger=logger)).fit(ConstructedNet(), data())
    # tagged with their layers: relu follows fc1, tanh follows fc2
    assert [r["fc1/dead_fraction"] for r in callback.history] == [0.25, 0.25]
    assert [r["fc2/saturated_fraction"] for r in callback.history] == [0.5, 0.5]
    events = load_events(tmp_path / "dead" / "version_0")
    assert [e.value for e in events.Scalars("zoo/dead_units/fc1/dead_fraction")] == [0.25, 0.25]
    assert [e.step for e in events.Scalars("zoo/dead_units/fc2/saturated_fraction")] == [0, 2]
    assert "zoo/dead_units/fc2/saturation" in events.Tags()["images"]


def test_threshold_moves_the_cut():
    net = ConstructedNet()
    loose = DeadUnits(threshold=0.05)
    x = net.fc2(net.relu(net.fc1(torch.randn(10, 4))))
    captured = Captured()
    captured.add("tanh", "tanh", x, wanted=None)
    # tanh(0.1) = 0.0997 and tanh(-0.2) = -0.197 now count as saturated, tanh(0) does not
    stats = loose.measure(L.Trainer(accelerator="cpu", logger=False), net, captured, None, step=0)
    assert float(stats["tanh/saturated_fraction"]) == pytest.approx(5 / 6)


def test_bad_threshold_is_clear():
    with pytest.raises(ConfigError, match="threshold must lie in"):
        DeadUnits(threshold=1.5)
