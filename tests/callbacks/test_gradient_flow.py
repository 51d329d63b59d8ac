"""GradientFlow: gradient norms, update ratios and entropy against a direct computation."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from normzoo.callbacks import GradientFlow
from normzoo.models import MLPClassifier

OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05}}


def data() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=generator) * 3 + 1
    return DataLoader(TensorDataset(x, torch.randint(0, 3, (64,), generator=generator)), batch_size=16)


def net(norm: str = "bn") -> MLPClassifier:
    return MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=10, norm=norm, optimizer=OPTIMIZER)


def test_first_step_matches_a_direct_computation(trainer_kwargs):
    L.seed_everything(0)
    model = net()
    initial = copy.deepcopy(model)
    flow = GradientFlow(every_n_steps=1)
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[flow])).fit(model, data())
    record = flow.history[0]

    x, y = next(iter(data()))
    outputs = {}

    def keep_output(module, inputs, output):  # returns None: a returned value would replace the output
        outputs["norm"] = output.detach()

    initial.backbone.blocks[1].norm.register_forward_hook(keep_output)
    F.cross_entropy(initial.train()(x), y).backward()
    weight = initial.backbone.blocks[0].linear.weight
    assert record["backbone.blocks.0.linear.weight/grad_norm"] == pytest.approx(weight.grad.norm().item(), rel=1e-5)
    ratio = math.log10((0.05 * weight.grad).std().item() / weight.std().item())
    assert record["backbone.blocks.0.linear.weight/update_ratio_log10"] == pytest.approx(ratio, rel=1e-5)
    variance = outputs["norm"].double().var(dim=0, unbiased=False)
    entropy = (0.5 * torch.log(2 * math.pi * math.e * variance)).mean().item()
    assert record["backbone.blocks.1.norm/entropy"] == pytest.approx(entropy, rel=1e-5)
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
