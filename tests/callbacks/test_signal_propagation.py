"""SignalPropagation: the first batch measured at initialization, logged, and training left bit-identical."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger

from normzoo.callbacks.signal_propagation import SignalPropagation
from normzoo.models import MLPClassifier
from normzoo.signal_propagation import signal_propagation
from tests.fixtures import gaussian_loader
from tests.tb_events import load_events

OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}


class Snapshot(L.Callback):
    """Keeps the model's state, modes, gradients and the RNG state at the first batch (callbacks run in order)."""

    def __init__(self) -> None:
        self.state: tuple | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.state is None:
            self.state = ({k: v.clone() for k, v in pl_module.state_dict().items()}, torch.get_rng_state(),
                          [m.training for m in pl_module.modules()], [p.grad for p in pl_module.parameters()])


def same(a: tuple, b: tuple) -> bool:
    (state_a, rng_a, modes_a, grads_a), (state_b, rng_b, modes_b, grads_b) = a, b
    return (all(torch.equal(state_a[k], state_b[k]) for k in state_a) and torch.equal(rng_a, rng_b)
            and modes_a == modes_b and grads_a == grads_b == [None] * len(grads_a))


def test_measures_the_first_batch_once_logs_it_and_changes_nothing(tmp_path, trainer_kwargs):
    """Before and after the measurement (the callbacks around it), the weights, BN running statistics,
    modes, gradients and RNG are the same: training goes on bit-identical."""
    before, callback, after = Snapshot(), SignalPropagation(), Snapshot()
    logger = TensorBoardLogger(tmp_path, name="spp", default_hp_metric=False)
    L.seed_everything(0)
    model = MLPClassifier(input_shape=(6,), num_classes=3, depth=3, width=12, norm="noisy_bn", optimizer=OPTIMIZER)
    initial = copy.deepcopy(model)
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[before, callback, after], logger=logger)).fit(
        model, gaussian_loader(16, 6, 3))
    assert same(before.state, after.state)
    assert any("running_mean" in key for key in before.state[0])

    (record,) = callback.history
    assert record["step"] == 0
    layers = [layer.name for layer in callback.report.layers]
    assert layers == ["backbone.blocks.0.act", "backbone.blocks.1.act", "backbone.blocks.2.act"]
    x, y = next(iter(gaussian_loader(16, 6, 3)))
    torch.set_rng_state(before.state[1])  # the noisy BN's draws
    direct = signal_propagation(initial, x, y, F.cross_entropy)
    for layer in layers:
        for stat in ("channel_var", "stable_rank", "cosine", "grad_norm"):
            assert record[f"{layer}/{stat}"] == pytest.approx(direct.scalars()[f"{layer}/{stat}"], rel=1e-5)

    events = load_events(tmp_path / "spp" / "version_0")
    assert f"{callback.prefix}/backbone.blocks.2.act/stable_rank" in events.Tags()["scalars"]
    assert f"{callback.prefix}/vs_depth" in events.Tags()["images"]
