"""EffectiveLR against hand computations and the equilibrium theory of scale-invariant weights.

Oracles: on Linear -> BatchNorm1d(affine=False), the raw gradient is orthogonal to the weight,
``effective_lr`` is ``lr / ||w||^2`` of the weight read back, ``angular_update`` is the arccos of
the weights before and after one SGD step computed by hand; under SGD with momentum and weight
decay, a scale-invariant weight driven by random gradients turns by ``sqrt(2 lr wd / (1 + mu))``
per step once ``O(1 / (lr wd))`` steps have passed (Wan et al. 2020).
"""

from __future__ import annotations

import copy
import math
import re

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from normzoo.callbacks.effective_lr import EffectiveLR, angular_update, scale_invariant_weights
from normzoo.errors import ConfigError, DiagnosticError
from normzoo.models import MLPClassifier
from normzoo.norms import FrozenBatchNorm
from tests.fixtures import gaussian_loader
from tests.tb_events import custom_scalars_layout, load_events

LR, MU, WD = 0.2, 0.9, 0.01
STATS = ("weight_norm", "effective_lr", "angular_update", "angular_equilibrium", "grad_cosine", "relative_grad_norm")


class NormedLinear(L.LightningModule):
    """Linear (no bias) -> BatchNorm1d(affine=False) -> tanh -> head -> cross-entropy, SGD with momentum and decay.

    ``linear.weight`` is exactly scale-invariant; the head feeds no norm.
    """

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.norm = nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8, affine=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.norm(self.linear(x))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR, momentum=MU, weight_decay=WD)


class WeightsPerStep(L.Callback):
    """Each parameter before every optimizer step, and the optimizer that took it."""

    def __init__(self) -> None:
        self.before: list[dict[str, torch.Tensor]] = []
        self.optimizers: list[torch.optim.Optimizer] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})
        self.optimizers.append(optimizer)


def data() -> DataLoader:
    return gaussian_loader(64, 6, 3, scale=2, shift=1)


def arccos_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return math.acos((a @ b / (a.norm() * b.norm())).item())


def test_matches_a_hand_computation_and_logs_to_tensorboard(tmp_path):
    L.seed_everything(0)
    model = NormedLinear()
    initial = copy.deepcopy(model)
    callback, weights = EffectiveLR(every_n_steps=1), WeightsPerStep()
    logger = TensorBoardLogger(tmp_path, name="run", default_hp_metric=False)
    L.Trainer(accelerator="cpu", max_steps=2, logger=logger, callbacks=[weights, callback], enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(model, data())
    assert callback.norm_of == {"linear.weight": "norm"}  # the head feeds no norm
    record = {key.removeprefix("linear/"): value for key, value in callback.history[0].items()}

    # the first step by hand: the raw gradient, then SGD's update w1 = w0 - lr * (g + wd * w0) (momentum buffer = g)
    x, y = next(iter(data()))
    F.cross_entropy(initial.train()(x), y).backward()
    w0, grad = initial.linear.weight.detach().double(), initial.linear.weight.grad.double()
    cosine = (w0 * grad).sum() / (w0.norm() * grad.norm())
    assert abs(cosine.item()) < 1e-5  # scale invariance: the gradient is orthogonal to the weight
    assert record["grad_cosine"] == pytest.approx(cosine.item(), abs=1e-6)
    assert record["weight_norm"] == pytest.approx(w0.norm().item(), rel=1e-12)
    assert record["effective_lr"] == pytest.approx(LR / w0.norm().item() ** 2, rel=1e-12)
    assert record["relative_grad_norm"] == pytest.approx((grad.norm() / w0.norm()).item(), rel=1e-5)
    w1 = w0 - LR * (grad + WD * w0)
    assert torch.allclose(w1.float(), weights.before[1]["linear.weight"], rtol=1e-5, atol=1e-7)
    assert record["angular_update"] == pytest.approx(arccos_angle(w0, w1), rel=1e-4)
    assert record["angular_equilibrium"] == pytest.approx(math.sqrt(2 * LR * WD / (1 + MU)), rel=1e-12)
    # step 1 against the weights read before and after it
    w_1, w_2 = weights.before[1]["linear.weight"], model.linear.weight.detach()
    assert callback.history[1]["linear/angular_update"] == pytest.approx(arccos_angle(w_1, w_2), rel=1e-6)
    assert callback.history[1]["linear/effective_lr"] == pytest.approx(
        LR / w_1.double().norm().item() ** 2, rel=1e-12)

    events = load_events(tmp_path / "run" / "version_0")
    tags = {f"{callback.prefix}/linear/{stat}" for stat in STATS}
    assert tags <= set(events.Tags()["scalars"])
    for tag in tags:
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        expected = [(step, callback.history[step][tag.removeprefix(f"{callback.prefix}/")]) for step in (0, 1)]
        assert [s for s, _ in logged] == [0, 1] and all(v == pytest.approx(e, rel=1e-6)
                                                        for (_, v), (_, e) in zip(logged, expected, strict=True))
    charts = custom_scalars_layout(events)[callback.prefix]
    (angular,) = charts["linear: angular update (rad)"]
    assert {tag.rsplit("/", 1)[1] for tag in tags if re.search(angular, tag)} == {"angular_update",
                                                                                 "angular_equilibrium"}
    assert len(charts) == len(EffectiveLR.families)  # one chart per family: different scales apart


OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}}


def test_training_is_bit_identical_and_accumulated_steps_are_measured_at_the_real_step(trainer_kwargs):
    """Noisy BN draws random numbers in the forward that finds the weights; the real update spans 2 micro-batches."""

    def run(callbacks):
        L.seed_everything(0)
        model = MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=10, norm="noisy_bn", optimizer=OPTIMIZER)
        trainer = L.Trainer(**trainer_kwargs(max_steps=3, accumulate_grad_batches=2, callbacks=callbacks))
        trainer.fit(model, gaussian_loader(96, 6, 3, scale=2, shift=1, shuffle=True))
        return model, trainer.optimizers[0].state_dict()

    weights = WeightsPerStep()
    callback = EffectiveLR(every_n_steps=2)
    measured, measured_optimizer = run([weights, callback])
    plain, plain_optimizer = run([])
    assert all(torch.equal(value, measured.state_dict()[key]) for key, value in plain.state_dict().items())
    assert all(torch.equal(a["momentum_buffer"], b["momentum_buffer"])
               for a, b in zip(plain_optimizer["state"].values(), measured_optimizer["state"].values(), strict=True))
    assert [r["step"] for r in callback.history] == [0.0, 2.0]
    name = "backbone.blocks.1.linear.weight"
    assert set(callback.weights) == {"backbone.blocks.0.linear.weight", name}
    before, after = weights.before[2][name], measured.get_parameter(name).detach()
    layer = "backbone.blocks.1"  # the weight's layer: its block
    assert callback.history[1][f"{layer}/angular_update"] == pytest.approx(arccos_angle(before, after), rel=1e-6)
    assert all(abs(r[f"{layer}/grad_cosine"]) < 1e-4 for r in callback.history)


class TwoOptimizers(L.LightningModule):
    """Manual optimization: ``a`` then ``b``, each Linear -> BN with its own SGD and learning rate; ``a``'s loss
    reaches ``b`` too, so ``b`` has a gradient at ``a``'s step."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a, self.a_norm = nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8)
        self.b, self.b_norm = nn.Linear(8, 3, bias=False), nn.BatchNorm1d(3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        for optimizer in self.optimizers():
            optimizer.zero_grad()
            self.manual_backward(F.cross_entropy(self.b_norm(self.b(torch.tanh(self.a_norm(self.a(x))))), y))
            optimizer.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.3)


def test_each_optimizer_measures_its_own_weights_at_its_own_step(trainer_kwargs):
    L.seed_everything(0)
    model, weights, callback = TwoOptimizers(), WeightsPerStep(), EffectiveLR(every_n_steps=1)
    L.Trainer(**trainer_kwargs(max_steps=2, callbacks=[weights, callback])).fit(model, data())
    (record,) = callback.history  # one batch, two optimizer steps: one record, at the batch's step
    for name, step, lr in (("a.weight", 0, 0.1), ("b.weight", 1, 0.3)):
        before = weights.before[step][name]
        after = weights.before[step + 1][name] if step + 1 < len(weights.before) else model.get_parameter(name)
        layer = name.removesuffix(".weight")
        assert record[f"{layer}/effective_lr"] == pytest.approx(lr / before.double().norm().item() ** 2, rel=1e-12)
        assert record[f"{layer}/angular_update"] == pytest.approx(arccos_angle(before, after.detach()), rel=1e-6)
        assert f"{layer}/angular_equilibrium" not in record  # SGD without weight decay: no equilibrium


def test_angular_update_settles_at_sqrt_2_lr_wd_over_1_plus_mu():
    """A scale-invariant weight (loss ``<xi_t, w / ||w||>``, fresh Gaussian ``xi_t`` each step: the gradient is
    ``xi_t``'s part orthogonal to ``w``, over ``||w||``) under ``torch.optim.SGD``, started 30x too long.

    Tolerance 3%: the theory drops terms of relative order ``lr * wd`` (1% here); the per-step angle varies
    with ``||xi_perp||`` by ~``1 / sqrt(2 d)`` = 4.4%, and means over 50 steps scatter by ~1%, so the mean
    over the last 200 by ~0.5%; ``||w||``, 30x too long at the start, shrinks by ``1 - lr wd / (1 - mu)``
    = 0.9 per step until the noise balances it, so the start has gone after ~50 steps (``(1 - mu) / (lr wd)``
    = 10 per e-fold). Measured: 0.034 of the theory over the first 5 steps, 1.0004 over steps 200-400.
    """
    lr, mu, wd, d = 0.1, 0.9, 0.1, 256  # 1 / (lr wd) = 100 steps
    generator = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(d, generator=generator) * 30 / math.sqrt(d))
    optimizer = torch.optim.SGD([w], lr=lr, momentum=mu, weight_decay=wd)
    noise = torch.randn(400, d, generator=generator)
    angles = []
    for t, xi in enumerate(noise):
        with torch.no_grad():
            norm = w.norm()
            w.grad = (xi - (xi @ w) / norm**2 * w) / norm
            before = w.detach().clone()
        optimizer.step()
        if t < 5 or t >= 200:
            angles.append(angular_update(before, w).item())
    equilibrium = math.sqrt(2 * lr * wd / (1 + mu))
    assert sum(angles[:5]) / 5 < 0.1 * equilibrium  # far from it at the start
    assert sum(angles[5:]) / len(angles[5:]) == pytest.approx(equilibrium, rel=0.03)  # after 2 / (lr wd) steps


def test_angular_update_is_arccos_of_the_cosine_also_at_tiny_angles():
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(100, generator=generator, dtype=torch.float64)
    turn = torch.randn(100, generator=generator, dtype=torch.float64)
    turn -= (turn @ w) / (w @ w) * w
    for angle in (1e-6, 1e-3, 0.5, 2.0):
        rotated = math.cos(angle) * w / w.norm() + math.sin(angle) * turn / turn.norm()
        assert angular_update(w, 3 * rotated).item() == pytest.approx(angle, rel=1e-9)


@pytest.mark.parametrize(("layer", "norm", "invariant"), [
    (lambda: nn.Linear(4, 8), lambda: nn.BatchNorm1d(8), True),  # BN cancels the bias
    (lambda: nn.Linear(4, 8, bias=False), lambda: nn.LayerNorm(8), True),
    (lambda: nn.Linear(4, 8), lambda: nn.LayerNorm(8), False),  # LN keeps the bias: invariant to (W, b), not W
    (lambda: nn.Linear(4, 8, bias=False), lambda: nn.Sequential(nn.ReLU(), nn.BatchNorm1d(8)), False),  # not direct
    (lambda: nn.Linear(4, 8, bias=False), lambda: FrozenBatchNorm(8, dims=1), False),  # fixed statistics
    (lambda: nn.Linear(4, 8, bias=False), lambda: nn.BatchNorm1d(8).eval(), False),  # running statistics
], ids=["bn_with_bias", "ln", "ln_with_bias", "relu_between", "frozen_bn", "bn_eval"])
def test_which_weights_feed_a_norm(layer, norm, invariant):
    model = nn.Sequential(layer(), norm(), nn.Tanh(), nn.Linear(8, 2))
    with torch.no_grad():
        found = scale_invariant_weights(model, lambda: model(torch.randn(16, 4, generator=torch.Generator())))
    assert found == ({"0.weight": "1"} if invariant else {})


def test_bad_options_are_config_errors():
    for options in ({"every_n_steps": 0}, {"weights": "linear.weight"}, {"weights": []}, {"weights": [""]},
                    {"forward": "no_such_package.forward"}):
        with pytest.raises(ConfigError):
            EffectiveLR(**options)
    with pytest.raises(DiagnosticError, match=r"'head\.bias'.*weights=.*linear\.weight, head\.weight"):
        EffectiveLR(weights=["head.bias"]).setup(None, NormedLinear(), "fit")


class NoNorm(NormedLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.linear(x)))


def test_without_a_norm_it_warns_and_named_weights_are_measured(trainer_kwargs):
    callback = EffectiveLR(every_n_steps=1)
    with pytest.warns(UserWarning, match="EffectiveLR stops measuring: NoNorm has no weight .* weights="):
        L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[callback])).fit(NoNorm(), data())
    assert callback.history == []
    named = EffectiveLR(every_n_steps=1, weights=["linear.weight"])
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[named])).fit(NoNorm(), data())
    assert abs(named.history[0]["linear/grad_cosine"]) > 1e-3  # not scale-invariant: the cosine says so


def failing_forward(pl_module, batch):
    raise RuntimeError("boom")


def test_a_failing_search_at_the_first_batch_is_a_clear_error(trainer_kwargs):
    callback = EffectiveLR(every_n_steps=1, forward=failing_forward)
    with pytest.raises(DiagnosticError, match="EffectiveLR.*forward=.*boom"):
        L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[callback])).fit(NormedLinear(), data())
