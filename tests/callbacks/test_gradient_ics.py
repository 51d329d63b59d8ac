"""GradientICS against an explicit two-pass computation of Santurkar et al.'s Definition 2.1."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from normzoo.callbacks import GradientICS
from normzoo.errors import ConfigError, DiagnosticError
from normzoo.models import MLPClassifier

OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.2, "momentum": 0.9}}


def data() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=generator) * 2 + 1
    return DataLoader(TensorDataset(x, torch.randint(0, 3, (48,), generator=generator)), batch_size=16)


def net(norm: str = "bn") -> MLPClassifier:
    return MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=10, norm=norm, optimizer=OPTIMIZER)


class WeightsPerStep(L.Callback):
    """Keeps the parameters at the start of every step and the final ones: the test's w_t."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.weights.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})

    def on_train_end(self, trainer, pl_module):
        self.weights.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})


def gradient_after_earlier_updates(initial, before, after, batch, layer, earlier):
    """Pass two: layer's weight gradient with the ``earlier`` modules at ``after``, the rest at ``before``."""
    model = copy.deepcopy(initial).train()
    weights = {name: (after if name.rsplit(".", 1)[0] in earlier else before)[name] for name in before}
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(weights[name])
    x, y = batch
    F.cross_entropy(model(x), y).backward()
    return dict(model.named_parameters())[f"{layer}.weight"].grad.double().flatten()


def test_matches_an_explicit_two_pass_computation(trainer_kwargs):
    L.seed_everything(0)
    model = net()
    initial = copy.deepcopy(model)
    ics, weights = GradientICS(every_n_steps=1), WeightsPerStep()
    L.Trainer(**trainer_kwargs(max_steps=3, callbacks=[ics, weights])).fit(model, data())
    batches = list(data())
    # Forward order: blocks.0.linear -> blocks.0.norm -> blocks.1.linear -> blocks.1.norm -> head.
    earlier_than = {
        "backbone.blocks.1.linear": {"backbone.blocks.0.linear", "backbone.blocks.0.norm"},
        "backbone.head": {"backbone.blocks.0.linear", "backbone.blocks.0.norm",
                          "backbone.blocks.1.linear", "backbone.blocks.1.norm"},
    }
    assert [r["step"] for r in ics.history] == [0.0, 1.0, 2.0]
    for step, record in enumerate(ics.history):
        before, after = weights.weights[step], weights.weights[step + 1]
        tagged = {"backbone.blocks.1.linear": "backbone.blocks.1", "backbone.head": "backbone.head"}  # their layers
        assert set(record) == {"step"} | {f"{tagged[layer]}/{stat}" for layer in earlier_than
                                          for stat in ("l2_diff", "relative_l2_diff", "cosine")}
        for layer, earlier in earlier_than.items():
            g = gradient_after_earlier_updates(initial, before, after, batches[step], layer, set())
            g_shifted = gradient_after_earlier_updates(initial, before, after, batches[step], layer, earlier)
            assert (g - g_shifted).norm() > 1e-4  # the update really moves the gradient
            assert record[f"{tagged[layer]}/l2_diff"] == pytest.approx((g - g_shifted).norm().item(), rel=1e-4)
            assert record[f"{tagged[layer]}/relative_l2_diff"] == pytest.approx(
                ((g - g_shifted).norm() / g.norm()).item(), rel=1e-4)
            assert record[f"{tagged[layer]}/cosine"] == pytest.approx(
                (g @ g_shifted / (g.norm() * g_shifted.norm())).item(), rel=1e-6)


def test_named_layers_and_cadence(trainer_kwargs):
    ics = GradientICS(every_n_steps=2, layers=["backbone.blocks.0.linear", "backbone.head"])
    model = net()
    L.Trainer(**trainer_kwargs(max_steps=5, callbacks=[ics])).fit(model, data())
    assert [r["step"] for r in ics.history] == [0.0, 2.0, 4.0]
    first = ics.history[0]
    assert first["backbone.blocks.0/l2_diff"] == 0.0  # nothing comes before the first layer
    assert first["backbone.blocks.0/cosine"] == pytest.approx(1.0)
    assert first["backbone.head/l2_diff"] > 0
    plain = net()
    L.Trainer(**trainer_kwargs(max_steps=1)).fit(plain, data())
    hooks = [len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()]
    assert hooks == [len(m._forward_pre_hooks) + len(m._forward_hooks) for m in plain.modules()]  # none left


def test_bad_settings_name_the_fix(trainer_kwargs):
    with pytest.raises(ConfigError, match="not a module with weights"):
        L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[GradientICS(layers=["backbone.blocks.0.act"])])).fit(
            net(), data())
    with pytest.raises(ConfigError, match="Unknown loss 'accuracy'"):
        GradientICS(loss="accuracy")
    with pytest.raises(ConfigError, match="Cannot import the loss= function"):
        GradientICS(loss="no_such_package.loss")


def exploding_loss(model, batch):
    model(batch[0])  # the forward runs with the order-recording hooks attached, then the loss fails
    raise RuntimeError("boom")


def test_a_failing_measurement_leaves_no_hooks_and_the_optimizers_weights(trainer_kwargs):
    def one_step(model, callbacks):
        L.Trainer(**trainer_kwargs(max_steps=1, callbacks=callbacks)).fit(model, data())

    def seeded_net():
        L.seed_everything(0)
        return net()

    plain, failed = seeded_net(), seeded_net()
    one_step(plain, [])
    with pytest.raises(DiagnosticError, match="GradientICS could not evaluate .*loss= function raised RuntimeError"):
        one_step(failed, [GradientICS(every_n_steps=1, loss=exploding_loss)])
    assert all(torch.equal(value, failed.state_dict()[key]) for key, value in plain.state_dict().items())
    assert [len(m._forward_pre_hooks) for m in failed.modules()] == [len(m._forward_pre_hooks) for m in plain.modules()]
