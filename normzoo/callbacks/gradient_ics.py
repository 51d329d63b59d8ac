"""``GradientICS``: internal covariate shift as a change of gradient (Santurkar et al. 2018, Definition 2.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from typing_extensions import override

from normzoo.callbacks.base import LossDiagnostic
from normzoo.callbacks.capture import select_per_stage
from normzoo.callbacks.evaluate import LossFn
from normzoo.callbacks.layer_names import own_weight_layer
from normzoo.callbacks.probe import assign, preserved_state, snapshot
from normzoo.errors import ConfigError
from normzoo.norms.forward_order import forward_order


def layer_weights(module: nn.Module) -> list[Tensor]:
    """A layer's own weights: its direct, trainable parameters with ``dim() >= 2`` (Linear, Conv)."""
    return [p for p in module.parameters(recurse=False) if p.requires_grad and p.dim() >= 2]


def parameter_owners(model: nn.Module) -> dict[str, nn.Module]:
    """The modules of ``model`` that own trainable parameters directly, by name: the layers whose order counts."""
    return {name: module for name, module in model.named_modules()
            if any(p.requires_grad for p in module.parameters(recurse=False))}


class GradientICS(LossDiagnostic):
    """How much a layer's gradient changes when the layers before it take their update.

    Santurkar et al. (2018) define internal covariate shift through the optimization: at
    step ``t``, ``G_i`` is the gradient of the loss with respect to layer ``i``'s weights
    and ``G'_i`` the gradient on the same batch after layers ``1..i-1`` have taken step
    ``t``'s update, later layers unchanged. Every ``every_n_steps`` optimizer steps (from
    ``trainer.global_step``), right after the optimizer's real step, this callback
    recomputes both for every watched layer:

    - ``l2_diff``: ``||G_i - G'_i||_2``; ``relative_l2_diff``: the same over ``||G_i||_2``;
    - ``cosine``: ``cos(G_i, G'_i)``.

    "Layers before ``i``" are all modules owning trainable parameters (norm layers' affine
    parameters included) that a forward pass calls before layer ``i``, read from the forward
    itself. The loss is the model's own ``training_step`` loss, replayed (``loss=`` replaces
    it), over all micro-batches of the step with their random draws replayed (noisy-BN
    noise, dropout), in the model's training modes and precision, with gradients averaged
    over DDP ranks. Afterwards the parameters hold exactly the optimizer's result, BN
    buffers, attributes and the RNG are restored, and neither ``.grad`` nor the optimizer
    state is touched, so the run is bit-identical to one without the callback. Cost per
    measurement: one forward and a partial backward per watched layer.

    Logged metrics: ``zoo/gradient_ics/<layer>/{l2_diff,relative_l2_diff,cosine}``.

    Args:
        every_n_steps: optimizer steps between measurements (step 0 is measured too).
        layers: module names of the layers to measure (each must own a weight with
            ``dim() >= 2``); default every such trainable layer except the first one called
            (nothing comes before it, so ``G' = G``), one per stage above 12.
        loss: the objective; None for the ``training_step``'s own loss, else a
            ``torch.nn.functional`` loss name applied to ``(pl_module(inputs), targets)``, or a
            function ``(pl_module, batch) -> loss`` (or its dotted import path).
        strict: raise on any measurement error instead of warning and stopping.

    Raises:
        ConfigError: ``every_n_steps`` < 1, an unknown loss, or a named layer without weights.

    Example::

        trainer = Trainer(callbacks=[GradientICS(every_n_steps=500)])
    """

    name = "gradient_ics"
    families = {"l2_diff": ("l2_diff",), "relative_l2_diff": ("relative_l2_diff",), "cosine": ("cosine",)}

    def __init__(self, every_n_steps: int = 2000, layers: Sequence[str] | None = None,
                 loss: str | LossFn | None = None, strict: bool = False) -> None:
        super().__init__(every_n_steps, loss, strict)
        self.layer_names = list(layers) if layers else None
        self._before: list[Tensor] | None = None
        self._step = -1

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        modules = dict(pl_module.named_modules())
        for name in self.layer_names or []:
            if name not in modules or not layer_weights(modules[name]):
                weighted = [n for n, m in modules.items() if layer_weights(m)]
                raise ConfigError(
                    f"GradientICS layer {name!r} is not a module with weights (dim >= 2) in "
                    f"{type(pl_module).__name__}. Layers with weights: {', '.join(weighted[:12])}, ..."
                )

    @override
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self.micro_batches and self._before is None:
            self._step = trainer.global_step
            self._before = snapshot(self._parameters(pl_module))

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           idx: int) -> None:
        if self._before is None:
            return
        with self.failure_policy(trainer, pl_module, self._step):
            try:
                stats = self._measure(trainer, pl_module)
            finally:
                self.last_step = self._step
                self.forget()
            if stats is not None:
                self.record(trainer, self.last_step, stats)

    def forget(self) -> None:
        super().forget()
        self._before = None

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Tensor] | None:
        params = self._parameters(pl_module)
        before, after = self._before, snapshot(params)
        updated_value = {id(p): value for p, value in zip(params, after, strict=True)}
        objective = self.objective(trainer, pl_module)
        modules = dict(pl_module.named_modules())
        weights = {name: layer_weights(module) for name, module in modules.items() if layer_weights(module)}
        stats: dict[str, Tensor] = {}
        with preserved_state(pl_module):
            try:
                assign(params, before)
                with forward_order(parameter_owners(pl_module)) as order:
                    result = objective([w for layer in weights.values() for w in layer])
                if result is None:
                    return None
                pieces = iter(result[1])
                original = {name: [next(pieces) for _ in layer] for name, layer in weights.items()}
                updated = 0
                watched = self._watched(order, weights)
                self.name_layers(trainer, pl_module, {name: own_weight_layer(pl_module, name) for name in watched})
                for name in watched:
                    position = order.index(name)
                    for earlier in order[updated:position]:  # layers 1..i-1 take this step's update
                        _take_update(modules[earlier], updated_value)
                    updated = max(updated, position)
                    _, shifted = objective(weights[name])
                    stats.update(_compare(name, original[name], shifted))
            finally:
                assign(params, after)
        return stats

    def _watched(self, order: list[str], weighted: dict[str, list[Tensor]]) -> list[str]:
        """The measured layers in forward order: the named ones, or the default selection after the first."""
        called = [name for name in order if name in weighted]
        if self.layer_names:
            return [name for name in called if name in self.layer_names]
        return select_per_stage(called[1:])

    @staticmethod
    def _parameters(pl_module: L.LightningModule) -> list[Tensor]:
        return [p for p in pl_module.parameters() if p.requires_grad]


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
