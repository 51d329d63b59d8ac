"""``LossLandscape``: loss and gradient along the gradient direction (Santurkar et al. 2018, Fig 4)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from normzoo.callbacks.layout import Charts, write_layout
from normzoo.callbacks.objective import BatchObjective, LossFn, assign, resolve_loss, snapshot
from normzoo.callbacks.probe import RngState, capture_rng, preserved_state
from normzoo.errors import ConfigError

PREFIX = "diagnostics/loss_landscape"


class LossLandscape(L.Callback):
    """How smooth the loss is where training is: Lipschitzness and smoothness along the gradient.

    Every ``every_n_steps`` optimizer steps (from ``trainer.global_step``), just before the
    optimizer steps, with ``g`` the gradient of the step's batch loss at the current weights
    ``w`` and ``lr`` each parameter's current learning rate, the callback evaluates the loss
    and its gradient at ``w - eta * lr * g`` for ``num_points`` multipliers ``eta`` evenly
    spaced over ``step_range`` (Santurkar et al. use [0.5, 4] x LR), and logs:

    - ``loss_variation``: ``max - min`` of the loss over those points (with ``loss_min``,
      ``loss_max`` and the starting ``loss``): the Lipschitzness of the loss (Fig 4a);
    - ``grad_change_min`` / ``grad_change_max``: the range of ``||grad(w') - g||_2``, the
      gradient predictiveness (Fig 4b; small means the gradient predicts the path well);
    - ``beta_smoothness``: ``max ||grad(w') - g||_2 / ||w' - w||_2``, the effective
      beta-smoothness (Fig 4c).

    All evaluations use the step's batch with its random draws replayed (noisy-BN noise,
    dropout), the model's training modes (BN on batch statistics) and precision, and
    gradients averaged over DDP ranks. Afterwards the weights, BN buffers and RNG are
    restored exactly, and neither ``.grad`` nor the optimizer state is touched, so training
    continues as if nothing had been measured. Cost per measurement: ``num_points + 1``
    forward and backward passes.

    Logged metrics: ``diagnostics/loss_landscape/{loss,loss_min,loss_max,loss_variation,
    grad_change_min,grad_change_max,beta_smoothness}``.

    Args:
        every_n_steps: optimizer steps between measurements (step 0 is measured too).
        step_range: the smallest and largest step, as multiples of the learning rate.
        num_points: how many steps along the gradient, evenly spaced over ``step_range``.
        loss: the objective, see ``normzoo.callbacks.objective.resolve_loss``.

    Raises:
        ConfigError: bad cadence, range or point count, or an unknown loss.

    Example::

        trainer = Trainer(callbacks=[LossLandscape(every_n_steps=200, step_range=(0.5, 4.0))])
    """

    name = "loss_landscape"

    def __init__(
        self,
        every_n_steps: int = 1000,
        step_range: tuple[float, float] = (0.5, 4.0),
        num_points: int = 8,
        loss: str | LossFn = "cross_entropy",
    ) -> None:
        self.every_n_steps = every_n_steps
        self.step_range = (float(step_range[0]), float(step_range[1]))
        self.num_points = num_points
        self.loss = loss
        self.loss_fn = resolve_loss(loss)
        self.history: list[dict[str, float]] = []
        self._last_step = -1
        self._rng: RngState | None = None
        self._batch: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.every_n_steps < 1 or self.num_points < 1:
            raise ConfigError("LossLandscape needs every_n_steps >= 1 and num_points >= 1.")
        low, high = self.step_range
        if not 0 < low <= high:
            raise ConfigError(
                f"LossLandscape step_range must be (low, high) with 0 < low <= high, got {self.step_range}."
            )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_layout(trainer, pl_module, self)

    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """Santurkar Fig 4's three panels: loss range, gradient change, beta-smoothness."""
        tags = {"loss_variation": ["loss", "loss_min", "loss_max", "loss_variation"],
                "gradient_predictiveness": ["grad_change_min", "grad_change_max"],
                "beta_smoothness": ["beta_smoothness"]}
        return {title: [f"^{PREFIX}/{stat}$" for stat in stats] for title, stats in tags.items()}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step != self._last_step:
            self._rng, self._batch = capture_rng(), batch  # this step's batch and random draws, to replay

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self._batch is None:
            return
        try:
            metrics = self._measure(trainer, pl_module, optimizer)
        finally:
            self._last_step = trainer.global_step
            self._forget()
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=self._last_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._forget()  # nothing kept past the step (with accumulation the next micro-batch re-arms)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._forget()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._forget()

    def step_multipliers(self) -> Tensor:
        """The step sizes along the gradient, in multiples of the learning rate."""
        return torch.linspace(*self.step_range, self.num_points, dtype=torch.float64)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> dict[str, float]:
        groups = [(p, float(group["lr"])) for group in optimizer.param_groups for p in group["params"]
                  if p.requires_grad]
        params = [p for p, _ in groups]
        start = snapshot(params)
        objective = BatchObjective(trainer, pl_module, self._batch, self.loss_fn, self._rng)
        multipliers = self.step_multipliers()
        losses, changes = [], []
        with preserved_state(pl_module):
            try:
                loss, grads = objective(params)
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
        stats = torch.stack([
            loss.double(), losses_t.min(), losses_t.max(), losses_t.max() - losses_t.min(),
            changes_t.min(), changes_t.max(), (changes_t / distances.clamp_min(1e-300)).max(),
        ]).tolist()  # the one host sync
        names = ["loss", "loss_min", "loss_max", "loss_variation", "grad_change_min", "grad_change_max",
                 "beta_smoothness"]
        record = dict(zip(names, stats, strict=True))
        self.history.append({"step": float(trainer.global_step), **record})
        return {f"{PREFIX}/{key}": value for key, value in record.items()}

    def _forget(self) -> None:
        self._rng, self._batch = None, None

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history, self._last_step = state_dict["history"], state_dict["last_step"]


def _norm(tensors: list[Tensor]) -> Tensor:
    """The l2 norm of a list of tensors taken as one vector, in float64."""
    return torch.sqrt(sum(t.double().pow(2).sum() for t in tensors))


def _distance(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return torch.sqrt(sum((x.double() - y.double()).pow(2).sum() for x, y in zip(a, b, strict=True)))
