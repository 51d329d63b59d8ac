"""The failure policy: fail fast at the first measurement with the fix named; never end a run after that.
And the loss-based diagnostics measure the whole accumulated batch."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from normzoo.callbacks import ActivationDrift, LossLandscape
from normzoo.errors import DiagnosticError
from tests.fixtures import gaussian_loader


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data(n: int = 64) -> DataLoader:
    return gaussian_loader(n, 4, 2)


class FailsFrom:
    """A forward= function that works ``ok`` times, then raises."""

    def __init__(self, ok: int) -> None:
        self.ok, self.calls = ok, 0

    def __call__(self, pl_module, batch):
        self.calls += 1
        if self.calls > self.ok:
            raise RuntimeError("probe exploded")
        return pl_module(batch[0])


class TrainingStepNeedsMore(Net):
    def training_step(self, batch, batch_idx):
        x, y, weights = batch  # a loader of triples that the probe never sees
        return F.cross_entropy(self(x), y)


def test_an_error_at_the_first_measurement_names_the_callback_module_and_fix(trainer_kwargs):
    with pytest.raises(DiagnosticError, match=r"ActivationDrift could not evaluate TrainingStepNeedsMore: "
                                              r"TrainingStepNeedsMore.training_step \(replayed\) raised ValueError.*"
                                              r"pass forward=\(pl_module, batch\) -> outputs to ActivationDrift"):
        L.Trainer(**trainer_kwargs(max_steps=2, callbacks=[ActivationDrift(every_n_steps=1, probe_size=8)])).fit(
            TrainingStepNeedsMore(), data())


def test_after_a_first_measurement_an_error_warns_once_and_training_goes_on(trainer_kwargs):
    drift = ActivationDrift(every_n_steps=1, probe_size=16, forward=FailsFrom(ok=2))  # discovery + step 0
    model = Net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L.Trainer(**trainer_kwargs(max_steps=6, callbacks=[drift])).fit(model, data())
    assert [r["step"] for r in drift.history] == [0.0]  # the discovery pass and step 0; step 1 raised
    said = [w for w in caught if "ActivationDrift stops measuring" in str(w.message)]
    assert len(said) == 1 and "measuring at step 1 failed: " in str(said[0].message)
    assert "forward= function raised RuntimeError: probe exploded" in str(said[0].message)
    assert model.global_step == 6
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_strict_raises_instead(trainer_kwargs):
    drift = ActivationDrift(every_n_steps=1, probe_size=16, forward=FailsFrom(ok=2), strict=True)
    with pytest.raises(DiagnosticError, match="probe exploded"):
        L.Trainer(**trainer_kwargs(max_steps=6, callbacks=[drift])).fit(Net(), data())


def test_loss_landscape_uses_the_whole_accumulated_batch(trainer_kwargs):
    L.seed_everything(0)
    model = Net()
    initial = [p.detach().clone() for p in model.parameters()]
    landscape = LossLandscape(every_n_steps=1)
    L.Trainer(**trainer_kwargs(max_steps=1, accumulate_grad_batches=4, callbacks=[landscape])).fit(model, data())
    with torch.no_grad():
        for param, value in zip(model.parameters(), initial, strict=True):
            param.copy_(value)
        expected = torch.stack([model.training_step(batch, i) for i, batch in enumerate(data())]).mean()
    assert landscape.history[0]["loss"] == pytest.approx(expected.item(), rel=1e-6)


def cross_entropy_of_net(pl_module, batch):
    """A loss= function, named by its dotted path in the test below."""
    return F.cross_entropy(pl_module(batch[0]), batch[1])


def body_only(pl_module, batch):
    """A forward= function, named by its dotted path in the test below."""
    return pl_module.body(batch[0])


def test_loss_and_forward_by_dotted_path_equal_the_default_replay(trainer_kwargs):
    def run(**options):
        L.seed_everything(0)
        landscape = LossLandscape(every_n_steps=1, loss=options.get("loss"))
        drift = ActivationDrift(every_n_steps=1, probe_size=16, forward=options.get("forward"))
        L.Trainer(**trainer_kwargs(max_steps=2, callbacks=[landscape, drift])).fit(Net(), data())
        return landscape.history, drift.history

    default = run()
    named = run(loss="tests.callbacks.test_failure_policy.cross_entropy_of_net",
                forward="tests.callbacks.test_failure_policy.body_only")
    assert named == default  # the training_step's loss is this cross-entropy; its forward is this body
    with pytest.raises(ValueError, match="Cannot import the forward= function 'tests.nope'"):
        ActivationDrift(forward="tests.nope")
