"""``LossLandscape``: loss and gradient along the gradient direction (Santurkar et al. 2018, Fig 4)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from typing_extensions import override

from normzoo.callbacks.base import LossDiagnostic
from normzoo.callbacks.evaluate import LossFn
from normzoo.callbacks.layout import Charts, family_charts, margin_chart
from normzoo.callbacks.probe import assign, preserved_state, snapshot
from normzoo.errors import ConfigError


class LossLandscape(LossDiagnostic):
    """How smooth the loss is where training is: Lipschitzness and smoothness along the gradient.

    Every ``every_n_steps`` optimizer steps (from ``trainer.global_step``), just before the
    optimizer steps, with ``g`` the gradient of the step's loss at the current weights ``w``
    and ``lr`` each parameter's current learning rate, the callback evaluates the loss and
    its gradient at ``w - eta * lr * g`` for ``num_points`` multipliers ``eta`` evenly
    spaced over ``step_range`` (Santurkar et al. use [0.5, 4] x LR), and logs:

    - ``loss_variation``: ``max - min`` of the loss over those points (with ``loss_min``,
      ``loss_max`` and the starting ``loss``): the Lipschitzness of the loss (Fig 4a);
    - ``grad_change_min`` / ``grad_change_max``: the range of ``||grad(w') - g||_2``, the
      gradient predictiveness (Fig 4b; small means the gradient predicts the path well);
    - ``beta_smoothness``: ``max ||grad(w') - g||_2 / ||w' - w||_2``, the effective
      beta-smoothness (Fig 4c).

    The loss is the model's own ``training_step`` loss, replayed (``loss=`` replaces it),
    over all micro-batches of the step (``accumulate_grad_batches``), with their random draws
    replayed (noisy-BN noise, dropout), the model's training modes (BN on batch statistics)
    and precision, and gradients averaged over DDP ranks; the parameters moved are those of
    the stepping optimizer that require gradients. Afterwards the weights, BN buffers,
    attributes and RNG are restored exactly, and neither ``.grad`` nor the optimizer state is
    touched, so training continues as if nothing had been measured. Cost per measurement:
    ``num_points + 1`` forward and backward passes.

    Logged metrics: ``zoo/loss_landscape/{loss,loss_min,loss_max,loss_variation,
    grad_change_min,grad_change_max,beta_smoothness}``.

    Args:
        every_n_steps: optimizer steps between measurements (step 0 is measured too).
        step_range: the smallest and largest step, as multiples of the learning rate.
        num_points: how many steps along the gradient, evenly spaced over ``step_range``.
        loss: the objective; None for the ``training_step``'s own loss (see ``GradientICS``).
        strict: raise on any measurement error instead of warning and stopping.

    Raises:
        ConfigError: bad cadence, range or point count, or an unknown loss.

    Example::

        trainer = Trainer(callbacks=[LossLandscape(every_n_steps=200, step_range=(0.5, 4.0))])
    """

    name = "loss_landscape"
    STATS = ("loss", "loss_min", "loss_max", "loss_variation", "grad_change_min", "grad_change_max",
             "beta_smoothness")

    def __init__(
        self,
        every_n_steps: int = 1000,
        step_range: tuple[float, float] = (0.5, 4.0),
        num_points: int = 8,
        loss: str | LossFn | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(every_n_steps, loss, strict)
        if not isinstance(num_points, int) or num_points < 1:
            raise ConfigError(f"LossLandscape needs num_points >= 1, got {num_points!r}.")
        self.step_range = (float(step_range[0]), float(step_range[1]))
        if not 0 < self.step_range[0] <= self.step_range[1]:
            raise ConfigError(
                f"LossLandscape step_range must be (low, high) with 0 < low <= high, got {self.step_range}."
            )
        self.num_points = num_points

    @override
    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """Santurkar Fig 4's three panels: the loss at the weights with, as a band, its range over the steps
        along the gradient (a margin chart; the start may lie outside it), the range's width, the gradient
        change, and beta-smoothness: a chart each, as their scales differ."""
        families = {"loss_variation": ("loss_variation",), "gradient_predictiveness": ("grad_change_min",
                    "grad_change_max"), "beta_smoothness": ("beta_smoothness",)}
        return {"loss, band: range along the step": margin_chart(self.name, "", "loss", "loss_min", "loss_max"),
                **family_charts(self.name, [""], families)}

    @override
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not self.micro_batches:
            return
        step = trainer.global_step
        with self.failure_policy(trainer, pl_module, step):
            try:
                stats = self._measure(trainer, pl_module, optimizer)
            finally:
                self.last_step = step
                self.forget()
            if stats is not None:
                self.record(trainer, step, stats)

    def step_multipliers(self) -> Tensor:
        """The step sizes along the gradient, in multiples of the learning rate."""
        return torch.linspace(*self.step_range, self.num_points, dtype=torch.float64)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> dict[str, Tensor] | None:
        groups = [(p, float(group["lr"])) for group in optimizer.param_groups for p in group["params"]
                  if p.requires_grad]
        params = [p for p, _ in groups]
        start = snapshot(params)
        objective = self.objective(trainer, pl_module)
        multipliers = self.step_multipliers()
        losses, changes = [], []
        with preserved_state(pl_module):
            try:
                result = objective(params)
                if result is None:
                    return None
                loss, grads = result
                direction = [lr * g for (_, lr), g in zip(groups, grads, strict=True)]
                for eta in multipliers.tolist():
                    with torch.no_grad():
                        for param, origin, step in zip(params, start, direction, strict=True):
                            param.copy_(origin).sub_(step, alpha=eta)
                    moved_loss, moved_grads = objective(params)
                    losses.append(moved_loss)
                    changes.append(_distance(moved_grads, grads))
            finally:
                assign(params, start)
        losses_t, changes_t = torch.stack(losses).double(), torch.stack(changes)
        distances = multipliers.to(changes_t.device) * _norm(direction)
        values = [loss.double(), losses_t.min(), losses_t.max(), losses_t.max() - losses_t.min(),
                  changes_t.min(), changes_t.max(), (changes_t / distances.clamp_min(1e-300)).max()]
        return dict(zip(self.STATS, values, strict=True))


def _norm(tensors: list[Tensor]) -> Tensor:
    """The l2 norm of a list of tensors taken as one vector, in float64."""
    return torch.sqrt(sum(t.double().pow(2).sum() for t in tensors))


def _distance(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return torch.sqrt(sum((x.double() - y.double()).pow(2).sum() for x, y in zip(a, b, strict=True)))
