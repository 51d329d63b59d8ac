"""``GradientFlow``: per-layer gradient norms, update-to-data ratios and the entropy of normalized outputs."""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from normzoo.callbacks.distribution import channel_moments
from normzoo.callbacks.layout import Charts, chart_per_group, write_layout
from normzoo.callbacks.probe import eager_calls, sum_over_ranks
from normzoo.errors import ConfigError
from normzoo.norms import norm_layers

PREFIX = "diagnostics/gradient_flow"
LOG_2_PI_E = math.log(2 * math.pi * math.e)


class _OutputMoments:
    """Forward hook: per-channel count, sum and sum of squares (float64) of a layer's output."""

    def __init__(self, store: dict[str, Tensor], name: str) -> None:
        self.store, self.name = store, name

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        self.store[self.name] = channel_moments(output)


class GradientFlow(L.Callback):
    """How gradients and updates flow through the layers, in the makemore lectures' terms.

    Every ``every_n_steps`` optimizer steps (from ``trainer.global_step``), just before the
    optimizer steps, for every weight (a parameter with ``dim() >= 2``):

    - ``grad_norm``: the l2 norm of its gradient (after DDP averaging, identical on all ranks);
    - ``update_ratio_log10``: ``log10(std(lr * grad) / std(weight))``, the size of the coming
      SGD update relative to the weight; around -3 is the lectures' healthy range.

    and for every norm layer's output on that step's training batch:

    - ``entropy``: the differential entropy of a Gaussian with each unit's variance,
      ``0.5 * log(2 * pi * e * var)``, averaged over units; BN's standardized outputs sit
      at ~1.42 nats, plus ``log(gamma)`` once the scale is learned. Under DDP the moments
      are summed over ranks, so the variance is that of the union of the shards.

    The output hooks are attached only for the measured step's forward and removed after it.

    Logged metrics: ``diagnostics/gradient_flow/<parameter>/grad_norm``,
    ``.../<parameter>/update_ratio_log10``, ``diagnostics/gradient_flow/<norm layer>/entropy``.

    Args:
        every_n_steps: optimizer steps between measurements.
        entropy: measure the norm layers' output entropy too.

    Raises:
        ConfigError: ``every_n_steps`` < 1.

    Example::

        trainer = Trainer(callbacks=[GradientFlow(every_n_steps=100)])
    """

    name = "gradient_flow"

    def __init__(self, every_n_steps: int = 100, entropy: bool = True) -> None:
        self.every_n_steps = every_n_steps
        self.entropy = entropy
        self.history: list[dict[str, float]] = []
        self._moments: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self._eager = ExitStack()
        self._last_step = -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.every_n_steps < 1:
            raise ConfigError("GradientFlow needs every_n_steps >= 1.")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_layout(trainer, pl_module, self)

    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """One chart per weight (gradient norm, update ratio) and per norm layer (entropy)."""
        weights = [name for name, p in pl_module.named_parameters() if p.dim() >= 2]
        norms = [name for name, _ in norm_layers(pl_module) if name] if self.entropy else []
        return chart_per_group(self.name, weights + norms)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self.entropy and self._due(trainer) and not self._handles:
            self._handles = [module.register_forward_hook(_OutputMoments(self._moments, name))
                             for name, module in norm_layers(pl_module) if name]
            self._eager.enter_context(eager_calls(pl_module))  # a compiled forward would skip the hooks

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._remove_hooks()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove_hooks()

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not self._due(trainer):
            return
        self._last_step = trainer.global_step
        lrs = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        stats: dict[str, Tensor] = {}
        for name, param in pl_module.named_parameters():
            if param.grad is None or param.dim() < 2:
                continue
            grad = param.grad.float()
            stats[f"{name}/grad_norm"] = grad.norm()
            update = (lrs.get(id(param), 0.0) * grad).std()
            stats[f"{name}/update_ratio_log10"] = torch.log10(update / param.float().std().clamp_min(1e-12))
        for name, moments in self._moments.items():
            count, total, squares = sum_over_ranks(trainer, moments)
            variance = (squares / count - (total / count) ** 2).clamp_min(1e-12)
            stats[f"{name}/entropy"] = (0.5 * (LOG_2_PI_E + variance.log())).mean().float()
        self._moments.clear()
        values = torch.stack(list(stats.values())).tolist() if stats else []  # the one host sync
        record = dict(zip(stats, values, strict=True))
        self.history.append({"step": float(trainer.global_step), **record})
        for logger in trainer.loggers:
            logger.log_metrics({f"{PREFIX}/{k}": v for k, v in record.items()}, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history, self._last_step = state_dict["history"], state_dict["last_step"]

    def _due(self, trainer: L.Trainer) -> bool:
        step = trainer.global_step
        return step % self.every_n_steps == 0 and step != self._last_step

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._eager.close()

