"""``GradientICS``: internal covariate shift as a change of gradient (Santurkar et al. 2018, Definition 2.1)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from normzoo.callbacks.layout import Charts, chart_per_group, write_layout
from normzoo.callbacks.objective import BatchObjective, LossFn, assign, resolve_loss, snapshot
from normzoo.callbacks.probe import RngState, capture_rng, preserved_state
from normzoo.errors import ConfigError

PREFIX = "diagnostics/gradient_ics"


def layer_weights(module: nn.Module) -> list[Tensor]:
    """A layer's own weights: its direct, trainable parameters with ``dim() >= 2`` (Linear, Conv)."""
    return [p for p in module.parameters(recurse=False) if p.requires_grad and p.dim() >= 2]


@contextmanager
def execution_order(model: nn.Module) -> Iterator[list[str]]:
    """Names of the parameter-owning modules in the order a forward inside the block first calls them.

    Registration order is not forward order (normzoo's DenseBlock registers its norm before
    its linear layer; ResNet shortcuts run after the main path), so "the layers before
    layer i" is read from an actual forward pass.
    """
    order: list[str] = []

    def recorder(name: str) -> Any:
        def record(module: nn.Module, inputs: Any) -> None:
            if name not in order:
                order.append(name)

        return record

    handles = [module.register_forward_pre_hook(recorder(name)) for name, module in model.named_modules()
               if any(p.requires_grad for p in module.parameters(recurse=False))]
    try:
        yield order
    finally:
        for handle in handles:
            handle.remove()


class GradientICS(L.Callback):
    """How much a layer's gradient changes when the layers before it take their update.

    Santurkar et al. (2018) define internal covariate shift through the optimization: at
    step ``t``, ``G_i`` is the gradient of the loss with respect to layer ``i``'s weights
    and ``G'_i`` the gradient on the same batch after layers ``1..i-1`` have taken step
    ``t``'s update, later layers unchanged. Every ``every_n_steps`` optimizer steps (from
    ``trainer.global_step``), right after the optimizer's real step, this callback
    recomputes both for every watched layer:

    - ``l2_diff``: ``||G_i - G'_i||_2``; ``relative_l2_diff``: the same over ``||G_i||_2``;
    - ``cosine``: ``cos(G_i, G'_i)``.

    "Layers before ``i``" are all modules owning parameters (norm layers' affine parameters
    included) that a forward pass calls before layer ``i``, read from the forward itself.
    All passes run on the measured step's batch with its random draws replayed (noisy-BN
    noise, dropout), in the model's training modes and precision, with gradients averaged
    over DDP ranks. Afterwards the parameters hold exactly the optimizer's result, BN
    buffers and the RNG are restored, and neither ``.grad`` nor the optimizer state is
    touched, so the run is bit-identical to one without the callback. Cost per
    measurement: one forward and a partial backward per watched layer.

    Logged metrics: ``diagnostics/gradient_ics/<layer>/{l2_diff,relative_l2_diff,cosine}``.

    Args:
        every_n_steps: optimizer steps between measurements (step 0 is measured too).
        layers: module names of the layers to measure (each must own a weight with
            ``dim() >= 2``); default every such layer except the first one called (nothing
            comes before it, so ``G' = G``).
        loss: the objective, see ``normzoo.callbacks.objective.resolve_loss``: a
            ``torch.nn.functional`` loss name applied to ``(pl_module(inputs), targets)``, or a
            function ``(pl_module, batch) -> loss`` (or its dotted import path).

    Raises:
        ConfigError: ``every_n_steps`` < 1, an unknown loss, or a named layer without weights.

    Example::

        trainer = Trainer(callbacks=[GradientICS(every_n_steps=500)])
    """

    name = "gradient_ics"

    def __init__(
        self, every_n_steps: int = 2000, layers: Sequence[str] | None = None, loss: str | LossFn = "cross_entropy"
    ) -> None:
        self.every_n_steps = every_n_steps
        self.layer_names = list(layers) if layers else None
        self.loss = loss
        self.loss_fn = resolve_loss(loss)
        self.history: list[dict[str, float]] = []
        self._last_step = -1
        self._rng: RngState | None = None
        self._before: list[Tensor] | None = None
        self._step = -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.every_n_steps < 1:
            raise ConfigError("GradientICS needs every_n_steps >= 1.")
        modules = dict(pl_module.named_modules())
        for name in self.layer_names or []:
            if name not in modules or not layer_weights(modules[name]):
                weighted = [n for n, m in modules.items() if layer_weights(m)]
                raise ConfigError(
                    f"GradientICS layer {name!r} is not a module with weights (dim >= 2) in "
                    f"{type(pl_module).__name__}. Layers with weights: {', '.join(weighted[:12])}, ..."
                )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_layout(trainer, pl_module, self)

    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """One chart per measured layer.

        The forward order is only known at the first measurement; by default the first
        weighted layer in registration order (in practice the first one called, which is
        not measured) gets no chart.
        """
        names = self.layer_names or [name for name, module in pl_module.named_modules() if layer_weights(module)][1:]
        return chart_per_group(self.name, names)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step != self._last_step:
            self._rng = capture_rng()  # the draws this step's forward makes, to replay them

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self._rng is not None and self._before is None:
            self._step = trainer.global_step
            self._before = snapshot(self._parameters(pl_module))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           idx: int) -> None:
        if self._before is None:
            return
        try:
            metrics = self._measure(trainer, pl_module, batch)
        finally:
            self._last_step = self._step
            self._forget()
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=self._last_step)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._forget()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._forget()

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> dict[str, float]:
        params = self._parameters(pl_module)
        before, after = self._before, snapshot(params)
        updated_value = {id(p): value for p, value in zip(params, after, strict=True)}
        objective = BatchObjective(trainer, pl_module, batch, self.loss_fn, self._rng)
        modules = dict(pl_module.named_modules())
        weights = {name: layer_weights(module) for name, module in modules.items() if layer_weights(module)}
        stats: dict[str, Tensor] = {}
        with preserved_state(pl_module):
            try:
                assign(params, before)
                with execution_order(pl_module) as order:
                    _, grads = objective([w for layer in weights.values() for w in layer])
                pieces = iter(grads)
                original = {name: [next(pieces) for _ in layer] for name, layer in weights.items()}
                updated = 0
                for name in self._watched(order, weights):
                    position = order.index(name)
                    for earlier in order[updated:position]:  # layers 1..i-1 take this step's update
                        _take_update(modules[earlier], updated_value)
                    updated = max(updated, position)
                    _, shifted = objective(weights[name])
                    stats.update(_compare(name, original[name], shifted))
            finally:
                assign(params, after)
        values = torch.stack(list(stats.values())).tolist() if stats else []  # the one host sync
        record = dict(zip(stats, values, strict=True))
        self.history.append({"step": float(self._step), **record})
        return {f"{PREFIX}/{key}": value for key, value in record.items()}

    def _watched(self, order: list[str], weighted: dict[str, list[Tensor]]) -> list[str]:
        """The measured layers in forward order: the named ones, or every weighted layer after the first."""
        called = [name for name in order if name in weighted]
        if self.layer_names:
            return [name for name in called if name in self.layer_names]
        return called[1:]

    @staticmethod
    def _parameters(pl_module: L.LightningModule) -> list[Tensor]:
        return [p for p in pl_module.parameters() if p.requires_grad]

    def _forget(self) -> None:
        self._rng, self._before = None, None

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history, self._last_step = state_dict["history"], state_dict["last_step"]


def _take_update(module: nn.Module, updated_value: dict[int, Tensor]) -> None:
    """Give a module's own trainable parameters their post-step values."""
    for param in module.parameters(recurse=False):
        if id(param) in updated_value:
            assign([param], [updated_value[id(param)]])


def _compare(name: str, original: list[Tensor], shifted: list[Tensor]) -> dict[str, Tensor]:
    g = torch.cat([t.reshape(-1) for t in original]).double()
    g_shifted = torch.cat([t.reshape(-1) for t in shifted]).double()
    difference = (g - g_shifted).norm()
    norms = g.norm() * g_shifted.norm()
    return {
        f"{name}/l2_diff": difference,
        f"{name}/relative_l2_diff": difference / g.norm().clamp_min(1e-300),
        f"{name}/cosine": (g @ g_shifted) / norms.clamp_min(1e-300),
    }
