"""GradientFlow: gradient norms, update ratios and entropy against a direct computation."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from normzoo.callbacks import GradientFlow, LossLandscape, RunningStatsConvergence
from normzoo.models import MLPClassifier
from tests.fixtures import gaussian_loader

OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05}}


def data() -> DataLoader:
    return gaussian_loader(64, 6, 3, scale=3, shift=1)


def net(norm: str = "bn") -> MLPClassifier:
    return MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=10, norm=norm, optimizer=OPTIMIZER)


@pytest.mark.parametrize("others", [False, True], ids=["alone", "with_other_diagnostics"])
def test_first_step_matches_a_direct_computation(others, trainer_kwargs):
    """Also beside diagnostics whose measuring passes run while GradientFlow's hooks are on: they are not counted."""
    L.seed_everything(0)
    model = net()
    initial = copy.deepcopy(model)
    flow = GradientFlow(every_n_steps=1)
    extra = [RunningStatsConvergence(every_n_steps=1, probe_size=16), LossLandscape(every_n_steps=1)] if others else []
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[flow, *extra])).fit(model, data())
    record = flow.history[0]

    x, y = next(iter(data()))
    outputs = {}

    def keep_output(module, inputs, output):  # returns None: a returned value would replace the output
        outputs["norm"] = output.detach()

    initial.backbone.blocks[1].norm.register_forward_hook(keep_output)
    F.cross_entropy(initial.train()(x), y).backward()
    weight = initial.backbone.blocks[0].linear.weight
    assert record["backbone.blocks.0/grad_norm"] == pytest.approx(weight.grad.norm().item(), rel=1e-5)
    ratio = math.log10((0.05 * weight.grad).std().item() / weight.std().item())
    assert record["backbone.blocks.0/lr_grad_ratio_log10"] == pytest.approx(ratio, rel=1e-5)
    # plain SGD: the real update is lr * grad
    assert record["backbone.blocks.0/update_ratio_log10"] == pytest.approx(ratio, rel=1e-4)
    variance = outputs["norm"].double().var(dim=0, unbiased=False)
    entropy = (0.5 * torch.log(2 * math.pi * math.e * variance)).mean().item()
    assert record["backbone.blocks.1/entropy"] == pytest.approx(entropy, rel=1e-5)
    assert entropy == pytest.approx(0.5 * math.log(2 * math.pi * math.e), abs=0.01)  # BN standardizes: ~1.42 nats
    assert not any(k.endswith(".bias/grad_norm") or "norm.weight" in k for k in record)  # weights (dim >= 2) only


def test_cadence_and_hooks_only_around_measured_steps(trainer_kwargs):
    flow = GradientFlow(every_n_steps=3)
    model = net()
    seen_hooks = []

    class Spy(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen_hooks.append(len(pl_module.backbone.blocks[0].norm._forward_hooks))

    L.Trainer(**trainer_kwargs(max_steps=7, callbacks=[flow, Spy()])).fit(model, data())
    assert [r["step"] for r in flow.history] == [0.0, 3.0, 6.0]
    assert seen_hooks == [1, 0, 0, 1, 0, 0, 1]
    assert all(not m._forward_hooks for m in model.modules())


def test_measuring_leaves_training_bit_identical(trainer_kwargs):
    def run(callbacks):
        L.seed_everything(0)
        model = net("noisy_bn")
        L.Trainer(**trainer_kwargs(max_steps=6, callbacks=callbacks)).fit(model, data())
        return model.state_dict()

    plain, measured = run([]), run([GradientFlow(every_n_steps=2)])
    assert all(torch.equal(value, measured[key]) for key, value in plain.items())


REAL_OPTIMIZERS = {
    "adam": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
    "sgd_momentum": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}},
    "adamw_decay": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01, "weight_decay": 0.5}},
}


class WeightsPerStep(L.Callback):
    """Records each weight before every optimizer step, to compare against what the step did."""

    def __init__(self) -> None:
        self.before: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})


@pytest.mark.parametrize("optimizer", sorted(REAL_OPTIMIZERS))
def test_update_ratio_is_the_real_update_under_any_optimizer(optimizer, trainer_kwargs):
    """``log10(std(w_after - w_before) / std(w_before))``, momentum and Adam's scaling included."""
    model = MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=10, norm="bn",
                          optimizer=REAL_OPTIMIZERS[optimizer])
    flow, weights = GradientFlow(every_n_steps=2), WeightsPerStep()
    L.Trainer(**trainer_kwargs(max_steps=4, callbacks=[weights, flow])).fit(model, data())
    after = weights.before[1:] + [{n: p.detach().clone() for n, p in model.named_parameters()}]
    for record in flow.history:
        step = int(record["step"])
        for name, layer in (("backbone.blocks.0.linear.weight", "backbone.blocks.0"),
                            ("backbone.head.weight", "backbone.head")):
            w_before, w_after = weights.before[step][name], after[step][name]
            expected = math.log10((w_after - w_before).std().item() / w_before.std().item())
            assert record[f"{layer}/update_ratio_log10"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
    sgd_view = [r["backbone.head/lr_grad_ratio_log10"] for r in flow.history]
    real = [r["backbone.head/update_ratio_log10"] for r in flow.history]
    if optimizer == "adam":  # Adam's first steps are ~lr per weight, far from lr * grad
        assert all(abs(a - b) > 0.5 for a, b in zip(sgd_view, real, strict=True))


def test_zero_updates_and_parameters_outside_the_optimizer_log_no_infinity(trainer_kwargs):
    class HalfTrained(MLPClassifier):
        def configure_optimizers(self):  # the first block is left out of the optimizer
            return torch.optim.SGD(self.backbone.blocks[1].parameters(), lr=0.0)

    model = HalfTrained(input_shape=(6,), num_classes=3, depth=2, width=10, norm="bn")
    flow = GradientFlow(every_n_steps=1)
    L.Trainer(**trainer_kwargs(max_steps=2, callbacks=[flow])).fit(model, data())
    for record in flow.history:
        assert all(math.isfinite(value) for value in record.values())
        outside = ("backbone.blocks.0/", "backbone.head/")  # not in the optimizer
        assert not any(key.startswith(outside) and "entropy" not in key for key in record)
        assert "backbone.blocks.1/grad_norm" in record
        assert "backbone.blocks.1/update_ratio_log10" not in record  # lr 0: no update, no -inf
