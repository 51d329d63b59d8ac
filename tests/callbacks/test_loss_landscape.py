"""LossLandscape against a quadratic loss whose smoothness constant is known exactly."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from normzoo.callbacks import LossLandscape
from normzoo.errors import ConfigError
from normzoo.models import MLPClassifier

EIGENVALUES = torch.tensor([8.0, 3.0, 1.0, 0.5], dtype=torch.float64)  # of the Hessian; beta = 8
LR = 0.05


class LeastSquares(L.LightningModule):
    """mean((x @ w - y)^2): a quadratic in w with Hessian (2/n) X^T X."""

    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(len(start), 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.linear.weight.copy_(start[None])

    def forward(self, x):
        return self.linear(x)

    def training_step(self, batch, batch_idx):
        return F.mse_loss(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def quadratic_problem() -> tuple[DataLoader, torch.Tensor, torch.Tensor]:
    """X = diag(sqrt(n * lambda / 2)) makes the Hessian diag(lambda); y = X w_star."""
    n = len(EIGENVALUES)
    x = torch.diag(torch.sqrt(n * EIGENVALUES / 2))
    w_star = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    loader = DataLoader(TensorDataset(x, (x @ w_star)[:, None]), batch_size=n)
    return loader, torch.diag(EIGENVALUES), w_star


def landscape_of(start: torch.Tensor, trainer_kwargs) -> dict[str, float]:
    loader, _, _ = quadratic_problem()
    landscape = LossLandscape(every_n_steps=1, step_range=(0.5, 4.0), num_points=5, loss="mse_loss")
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[landscape])).fit(LeastSquares(start), loader)
    return landscape.history[0]


def closed_form(start: torch.Tensor) -> dict[str, float]:
    _, hessian, w_star = quadratic_problem()
    loss = lambda w: 0.5 * (w - w_star) @ hessian @ (w - w_star)  # noqa: E731 (the loss, in closed form)
    g = hessian @ (start - w_star)
    etas = torch.linspace(0.5, 4.0, 5, dtype=torch.float64) * LR
    losses = torch.stack([loss(start - eta * g) for eta in etas])
    changes = torch.stack([(eta * hessian @ g).norm() for eta in etas])  # grad(w - eta g) - g = -eta H g
    return {"loss": loss(start).item(), "loss_min": losses.min().item(), "loss_max": losses.max().item(),
            "loss_variation": (losses.max() - losses.min()).item(), "grad_change_min": changes.min().item(),
            "grad_change_max": changes.max().item(), "beta_smoothness": ((hessian @ g).norm() / g.norm()).item()}


def test_a_quadratic_matches_its_closed_form(trainer_kwargs):
    start = torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    record = landscape_of(start, trainer_kwargs)
    expected = closed_form(start)
    for key, value in expected.items():
        assert record[key] == pytest.approx(value, rel=1e-9), key
    assert 0.5 < record["beta_smoothness"] < EIGENVALUES.max()


def test_along_the_top_eigenvector_beta_is_the_smoothness_constant(trainer_kwargs):
    _, _, w_star = quadratic_problem()
    start = w_star + torch.tensor([0.7, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert landscape_of(start, trainer_kwargs)["beta_smoothness"] == pytest.approx(8.0, rel=1e-12)


def test_the_start_loss_replays_the_training_step_noise_included(trainer_kwargs):
    """With noisy BN, the measured starting loss is the step's own training loss: same noise, same batch."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=generator), torch.randint(0, 3, (32,), generator=generator)
    losses = []

    class KeepLoss(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

    landscape = LossLandscape(every_n_steps=1)
    model = MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=10, norm="noisy_bn")
    L.Trainer(**trainer_kwargs(max_steps=2, callbacks=[landscape, KeepLoss()])).fit(
        model, DataLoader(TensorDataset(x, y), batch_size=16))
    assert [r["loss"] for r in landscape.history] == pytest.approx(losses, rel=1e-6)


def test_bad_settings_name_the_fix(trainer_kwargs):
    loader, _, _ = quadratic_problem()
    with pytest.raises(ConfigError, match="step_range"):
        LossLandscape(step_range=(4.0, 0.5))
    unlabelled = DataLoader(TensorDataset(torch.randn(8, 4, dtype=torch.float64)), batch_size=4)

    class Unsupervised(LeastSquares):
        def training_step(self, batch, batch_idx):
            return self(batch[0]).pow(2).mean()

    with pytest.raises(ConfigError, match="needs targets.*leave loss unset to use the training_step's loss"):
        L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[LossLandscape(every_n_steps=1, loss="mse_loss")])).fit(
            Unsupervised(torch.zeros(4, dtype=torch.float64)), unlabelled)
    landscape = LossLandscape(every_n_steps=1)  # the default: the training_step's own loss, no targets needed
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[landscape])).fit(
        Unsupervised(torch.zeros(4, dtype=torch.float64)), unlabelled)
    assert len(landscape.history) == 1
