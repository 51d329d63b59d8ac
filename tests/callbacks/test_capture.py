"""What the probe callbacks see: activation inputs before an in-place op, every call of a shared module,
functional activations, and a default layer selection that keeps big models readable."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torchvision
from lightning.pytorch import seed_everything
from torch import nn

from normzoo.callbacks import (
    ActivationDrift,
    DeadUnits,
    GradientFlow,
    GradientICS,
    LossLandscape,
    RunningStatsConvergence,
)
from normzoo.callbacks.capture import capture, select_per_stage
from tests.callbacks import gallery


def hand_capture(module: nn.Module, run) -> list[torch.Tensor]:
    """Copies of a module's input at each of its calls, taken by a pre-hook written for this test."""
    copies = []
    handle = module.register_forward_pre_hook(lambda m, inputs: copies.append(inputs[0].detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    return copies


def test_in_place_and_shared_relu_inputs_equal_a_hand_capture():
    seed_everything(0)
    model, loader = gallery.GALLERY["shared_relu"]()  # one nn.ReLU(inplace=True), called 3 times per forward
    x, y = next(iter(loader))
    model.train()
    rng = torch.get_rng_state()
    with torch.no_grad():
        expected = hand_capture(model.act, lambda: model.training_step((x, y), 0))
        torch.set_rng_state(rng)
        with capture(model) as captured:
            model.training_step((x, y), 0)
    assert list(captured) == ["act", "act#2", "act#3"]
    for name, copy in zip(captured, expected, strict=True):
        assert torch.equal(captured[name], copy), name
        assert (copy < 0).any()  # the input, not the in-place output


def test_in_place_relus_of_a_unet_keep_their_negative_inputs():
    seed_everything(0)
    model, loader = gallery.GALLERY["segmentation"]()
    batch = next(iter(loader))
    relu = next(m for m in model.modules() if isinstance(m, nn.ReLU))
    name = next(n for n, m in model.named_modules() if m is relu)
    with torch.no_grad():
        expected = hand_capture(relu, lambda: model.training_step(batch, 0))
        with capture(model) as captured:
            model.training_step(batch, 0)
    assert torch.equal(captured[name], expected[0]) and (captured[name] < 0).any()


def test_functional_activations_are_named_after_the_module_that_calls_them():
    seed_everything(0)
    model, loader = gallery.GALLERY["functional"]()
    batch = next(iter(loader))
    with torch.no_grad(), capture(model) as captured:
        model.training_step(batch, 0)
    names = list(captured.kinds)
    assert names == ["backbone.relu", "backbone.gelu", "backbone.sigmoid"], names
    assert captured.kinds == {"backbone.relu": "relu", "backbone.gelu": "gelu", "backbone.sigmoid": "sigmoid"}
    inputs = model.backbone.l1(batch[0].view(len(batch[0]), -1))
    assert torch.equal(captured["backbone.relu"], inputs)


def test_functions_inside_norm_layers_are_part_of_the_norm_not_activation_sites():
    from normzoo.models import MLP, ResNet

    model = MLP(input_shape=(6,), num_classes=3, depth=2, width=8, norm="dyt", activation="gelu")
    with torch.no_grad(), capture(model) as captured:
        model(torch.randn(4, 6))
    assert captured.kinds == {"blocks.0.act": "gelu", "blocks.1.act": "gelu"}  # not DyT's two tanh calls
    resnet = ResNet("resnet8", input_shape=(3, 8, 8), num_classes=3, norm="evonorm_s0",
                    norm_kwargs={"num_groups": 4}, width_factor=0.5)
    with torch.no_grad(), capture(resnet) as captured:
        resnet(torch.randn(2, 3, 8, 8))
    assert set(captured.kinds) == {f"stages.{s}.0.act2" for s in range(3)}  # the ReLUs after the additions


def test_functional_activations_are_measured_by_activation_drift_and_dead_units(trainer_kwargs):
    seed_everything(0)
    model, loader = gallery.GALLERY["functional"]()
    drift, dead = ActivationDrift(every_n_steps=2, probe_size=16), DeadUnits(every_n_steps=2, probe_size=16)
    L.Trainer(**trainer_kwargs(max_steps=3, callbacks=[drift, dead])).fit(model, loader)
    # tagged with their layers: the weight layer each one follows (relu after l1, gelu after l2, sigmoid after gate)
    assert "backbone.l2/p50" in drift.history[0]
    assert {"backbone.l1/dead_fraction", "backbone.gate/saturated_fraction"} <= set(dead.history[0])


def test_per_stage_selection():
    names = ["conv1", "layer1.0.relu", "layer1.1.relu", "layer2.0.relu", "fc"]
    assert select_per_stage(names, limit=12) == names
    assert select_per_stage(names, limit=3) == ["conv1", "layer2.0.relu", "fc"]  # 4 stages, 3 evenly spaced
    assert select_per_stage([f"layers.{i}" for i in range(40)], limit=4) == [
        "layers.0", "layers.13", "layers.26", "layers.39"]


class TorchvisionResNet(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torchvision.models.resnet18(num_classes=10)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


RESNET18_TAGS = {"activation_drift": 35, "dead_units": 5, "gradient_flow": 23, "running_stats": 13, "gradient_ics": 15,
                 "loss_landscape": 7}
"""Tags per callback for a torchvision ResNet-18 at the defaults (the README's table)."""


def test_a_torchvision_resnet18_gets_a_readable_number_of_tags(trainer_kwargs):
    seed_everything(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    callbacks = [ActivationDrift(probe_size=16), DeadUnits(probe_size=16), GradientFlow(),
                 RunningStatsConvergence(probe_size=16), GradientICS(), LossLandscape()]
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=callbacks)).fit(
        TorchvisionResNet(), torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16))
    counts = {c.name: len(c.history[0]) - 1 for c in callbacks}
    assert counts == RESNET18_TAGS
    assert callbacks[0].sites == ["net.relu", "net.layer1.1.relu#2", "net.layer2.1.relu#2", "net.layer3.1.relu#2",
                                  "net.layer4.1.relu#2"]
    assert callbacks[0].groups == ["net.conv1", "net.layer1.1.conv2", "net.layer2.1.conv2", "net.layer3.1.conv2",
                                   "net.layer4.1.conv2"]  # their layers: the weight layer each one follows


@pytest.mark.parametrize("callback_class", [ActivationDrift, DeadUnits, RunningStatsConvergence])
def test_step_zero_from_the_kept_copy_equals_a_direct_measurement(callback_class, trainer_kwargs):
    """A probe of 40 filled over 3 batches of 16 is measured on the untrained weights, as if it were one batch."""

    def step_zero(batch_size: int) -> dict[str, float]:
        seed_everything(0)
        model, loader = gallery.GALLERY["shared_relu"]()
        data = torch.utils.data.DataLoader(loader.dataset, batch_size=batch_size)  # same order for both
        callback = callback_class(every_n_steps=100, probe_size=40)
        L.Trainer(**trainer_kwargs(max_steps=4, callbacks=[callback])).fit(model, data)
        return callback.history[0]

    later, direct = step_zero(16), step_zero(40)
    assert later["step"] == direct["step"] == 0.0
    assert later.keys() == direct.keys()
    for key, value in direct.items():
        assert later[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
