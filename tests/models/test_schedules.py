"""``WeightDecayAsExponentialLR`` against Li & Arora's equivalence on a scale-invariant loss, and in a real fit."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from normzoo.errors import ConfigError
from normzoo.models import MLPClassifier
from normzoo.models.schedules import WeightDecayAsExponentialLR, equivalence_factor

GENERATOR = torch.Generator().manual_seed(0)
A = torch.randn(20, 12, dtype=torch.float64, generator=GENERATOR)
B = torch.randn(20, 3, dtype=torch.float64, generator=GENERATOR)
W0 = torch.randn(12, 3, dtype=torch.float64, generator=GENERATOR)


def scale_invariant_loss(w: torch.Tensor) -> torch.Tensor:
    """A loss of ``w / ||w||`` only, as every weight that feeds a normalization sees it."""
    return ((A @ (w / w.norm()) - B) ** 2).sum()


def directions(momentum: float, weight_decay: float, exponential: bool, steps: int = 300) -> list[torch.Tensor]:
    """``w / ||w||`` after each SGD step (lr 0.02), with the decay or with the schedule that replaces it."""
    w = torch.nn.Parameter(W0.clone())
    optimizer = torch.optim.SGD([w], lr=0.02, momentum=momentum, weight_decay=weight_decay)
    schedule = WeightDecayAsExponentialLR(optimizer) if exponential else None
    seen = []
    for _ in range(steps):
        optimizer.zero_grad()
        scale_invariant_loss(w).backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        seen.append((w / w.norm()).detach().clone())
    return seen


def test_without_momentum_the_exponential_schedule_follows_the_decayed_run_exactly():
    decayed, exponential = directions(0.0, 0.05, False), directions(0.0, 0.05, True)
    assert max((a - b).norm().item() for a, b in zip(decayed, exponential, strict=True)) < 1e-12
    assert (decayed[0] - decayed[-1]).norm() > 0.1  # the path moved: the agreement is not at a standstill


def test_with_momentum_it_stays_close_and_ends_at_the_same_directions():
    """SGD's buffer starts at the first gradient, not at the recursion's past: close, not equal (module docstring)."""
    decayed, exponential = directions(0.9, 0.01, False), directions(0.9, 0.01, True)
    gaps = [(a - b).norm().item() for a, b in zip(decayed, exponential, strict=True)]
    assert 0 < gaps[0] < 1e-3 and max(gaps) < 0.02 and gaps[-1] < 1e-5
    assert (decayed[0] - decayed[-1]).norm() > 0.1
    plain = directions(0.9, 0.0, False)  # without the decay or its schedule the path is another one
    assert (plain[-1] - decayed[-1]).norm() > 100 * gaps[-1]


def test_the_factor_is_the_larger_root_and_the_rate_grows_by_its_inverse_square():
    alpha = equivalence_factor(0.1, 5e-4, 0.9)
    assert alpha**2 - (1 + 0.9 - 0.1 * 5e-4) * alpha + 0.9 == pytest.approx(0, abs=1e-15) and 0.99 < alpha < 1
    assert equivalence_factor(0.1, 0.01, 0.0) == pytest.approx(0.999)
    assert equivalence_factor(0.1, 0.0, 0.9) == 1.0  # no decay: a constant rate
    w = torch.nn.Parameter(torch.ones(2, 2))
    bias = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([{"params": [w]}, {"params": [bias], "weight_decay": 0.0}], lr=0.1, momentum=0.9,
                                weight_decay=5e-4)
    schedule = WeightDecayAsExponentialLR(optimizer)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.0, 0.0]
    for _ in range(10):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * alpha ** -21)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1)  # the undecayed group keeps its rate


def test_settings_without_an_equivalent_schedule_are_refused():
    w = torch.nn.Parameter(torch.ones(2, 2))
    with pytest.raises(ConfigError, match=r"lr \* weight_decay = 0.005 with momentum 0.9 has no equivalent"):
        WeightDecayAsExponentialLR(torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.05))
    with pytest.raises(ConfigError, match="needs torch.optim.SGD without Nesterov"):
        WeightDecayAsExponentialLR(torch.optim.Adam([w], weight_decay=0.01))
    with pytest.raises(ConfigError, match="needs torch.optim.SGD without Nesterov"):
        WeightDecayAsExponentialLR(torch.optim.SGD([w], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01))


def test_a_fit_steps_it_every_optimizer_step_and_a_resumed_fit_goes_on_from_its_state(tmp_path, trainer_kwargs):
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)  # 4 steps per epoch
    optimizer = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}}
    schedule = {"class_path": "normzoo.models.schedules.WeightDecayAsExponentialLR"}

    def fit(max_steps: int, ckpt_path: str | None = None) -> float:
        model = MLPClassifier(input_shape=(6,), num_classes=2, depth=2, width=8, norm="bn", optimizer=optimizer,
                              lr_scheduler=schedule)
        trainer = L.Trainer(**trainer_kwargs(max_steps=max_steps, enable_checkpointing=True,
                                             default_root_dir=str(tmp_path), limit_val_batches=0))
        trainer.fit(model, data, ckpt_path=ckpt_path)
        if ckpt_path is None:
            trainer.save_checkpoint(tmp_path / f"step{max_steps}.ckpt")
        assert trainer.optimizers[0].param_groups[0]["weight_decay"] == 0.0
        return trainer.optimizers[0].param_groups[0]["lr"]

    alpha = equivalence_factor(0.1, 0.01, 0.9)
    assert fit(6) == pytest.approx(0.1 * alpha ** -13)  # 6 steps: not a whole number of epochs
    assert fit(10, str(tmp_path / "step6.ckpt")) == pytest.approx(0.1 * alpha ** -21)
    assert math.isclose(fit(10), 0.1 * alpha ** -21)
