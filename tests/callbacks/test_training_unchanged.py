"""GradientICS and LossLandscape move the weights to measure; afterwards training must not notice.

Over 20 steps (same seed), the parameters, BN buffers and optimizer state are bit-identical
with and without the callback, for a noisy-BN model (RNG in the forward) under Adam
(optimizer state) and under SGD with momentum.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from normzoo.callbacks import GradientICS, LossLandscape
from normzoo.models import MLPClassifier
from tests.fixtures import gaussian_loader

OPTIMIZERS = {
    "adam": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
    "sgd_momentum": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}},
}


def loader() -> DataLoader:
    return gaussian_loader(80, 6, 3, scale=2, shift=1, shuffle=True)


def train(callbacks, optimizer: str, trainer_kwargs) -> tuple[dict, dict]:
    L.seed_everything(0)
    model = MLPClassifier(input_shape=(6,), num_classes=3, depth=3, width=12, norm="noisy_bn",
                          optimizer=OPTIMIZERS[optimizer])
    trainer = L.Trainer(**trainer_kwargs(max_steps=20, callbacks=callbacks))
    trainer.fit(model, loader())
    return model.state_dict(), trainer.optimizers[0].state_dict()


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("make", [lambda: GradientICS(every_n_steps=3), lambda: LossLandscape(every_n_steps=3)],
                         ids=["gradient_ics", "loss_landscape"])
def test_weights_buffers_and_optimizer_state_are_bit_identical(make, optimizer, trainer_kwargs):
    callback = make()
    plain_model, plain_optimizer = train([], optimizer, trainer_kwargs)
    measured_model, measured_optimizer = train([callback], optimizer, trainer_kwargs)
    assert len(callback.history) == 7  # steps 0, 3, ..., 18 were measured
    assert any("running_mean" in key for key in plain_model)
    assert same(plain_model, measured_model)
    assert same(plain_optimizer, measured_optimizer)
