"""``GradientFlow``: per-layer gradient norms, update-to-data ratios and the entropy of normalized outputs."""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from normzoo.callbacks.base import Diagnostic
from normzoo.callbacks.capture import select_per_stage
from normzoo.callbacks.distribution import channel_moments
from normzoo.callbacks.layer_names import own_weight_layer, weight_layers_before
from normzoo.callbacks.layout import Charts, family_charts
from normzoo.callbacks.probe import after_next_step, eager_calls, measuring, snapshot, sum_over_ranks
from normzoo.norms import norm_layers

LOG_2_PI_E = math.log(2 * math.pi * math.e)


class _OutputMoments:
    """Forward hook: adds each call's per-channel count, sum and sum of squares (float64) of a layer's output."""

    def __init__(self, store: dict[str, Tensor], name: str) -> None:
        self.store, self.name = store, name

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.dim() >= 2 and not measuring():  # training passes only
            moments = channel_moments(output)
            self.store[self.name] = moments + self.store[self.name] if self.name in self.store else moments


class GradientFlow(Diagnostic):
    """How gradients and updates flow through the layers, in the makemore lectures' terms.

    Every ``every_n_steps`` optimizer steps (from ``trainer.global_step``), at each optimizer
    step of that training batch, for every weight (a parameter with ``dim() >= 2``) that the
    stepping optimizer holds and that has a gradient (above 12 weights, the last one of each
    stage of the model):

    - ``grad_norm``: the l2 norm of its gradient (after DDP averaging, identical on all ranks);
    - ``update_ratio_log10``: ``log10(std(w_after - w_before) / std(w_before))``, the update the
      optimizer really made (Adam, momentum, weight decay, clipping included) relative to the
      weight; around -3 is the lectures' healthy range;
    - ``lr_grad_ratio_log10``: ``log10(std(lr * grad) / std(w))``, the plain-SGD update the
      lectures plot, next to it;

    a ratio whose numerator is zero (no update, a zero gradient) is left out rather than
    logged as ``-inf``; parameters outside the stepping optimizer are never read, so a GAN's
    generator step does not report the discriminator's stale gradients. And for every norm
    layer's output on that batch (all micro-batches of an accumulated step, all calls):

    - ``entropy``: the differential entropy of a Gaussian with each unit's variance,
      ``0.5 * log(2 * pi * e * var)``, averaged over units; BN's standardized outputs sit
      at ~1.42 nats, plus ``log(gamma)`` once the scale is learned. Under DDP the moments
      are summed over ranks, so the variance is that of the union of the shards.

    The output hooks and the optimizer's step hook are attached only for the measured
    batch and removed after it.

    Logged metrics: ``zoo/gradient_flow/<parameter>/{grad_norm,update_ratio_log10,
    lr_grad_ratio_log10}``, ``zoo/gradient_flow/<norm layer>/entropy``.

    Args:
        every_n_steps: optimizer steps between measurements.
        entropy: measure the norm layers' output entropy too.
        strict: raise on any measurement error instead of warning and stopping.

    Raises:
        ConfigError: ``every_n_steps`` < 1.

    Example::

        trainer = Trainer(callbacks=[GradientFlow(every_n_steps=100)])
    """

    name = "gradient_flow"

    def __init__(self, every_n_steps: int = 100, entropy: bool = True, strict: bool = False) -> None:
        super().__init__(every_n_steps, strict)
        self.entropy = entropy
        self.weights: list[str] = []
        self.norms: list[str] = []
        self._stats: dict[str, Tensor] = {}
        self._moments: dict[str, Tensor] = {}
        self._norm_weight_layers: dict[str, str | None] = {}
        self._norm_hooks: list[RemovableHandle] = []
        self._step_hooks: list[RemovableHandle] = []
        self._eager = ExitStack()
        self._armed_step = -1
        self._stepped = False

    @override
    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """Per weight: its gradient norm, and the two log10 ratios apart; per norm layer: its entropy."""
        families = {"grad_norm": ("grad_norm",), "log10 ratios": ("update_ratio_log10", "lr_grad_ratio_log10")}
        return {**family_charts(self.name, [self.layer(w) for w in self.weights], families),
                **family_charts(self.name, [self.layer(n) for n in self.norms], {"entropy": ("entropy",)})}

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.weights = select_per_stage([name for name, p in pl_module.named_parameters() if p.dim() >= 2])
        self.norms = select_per_stage([name for name, _ in norm_layers(pl_module) if name]) if self.entropy else []
        self.groups = self.weights + self.norms

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._arm(trainer, pl_module)

    @override
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self._armed_step >= 0:
            with self.failure_policy(trainer, pl_module, self._armed_step):
                self._before_step(pl_module, optimizer)

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._finish(trainer, pl_module)

    def forget(self) -> None:
        for handle in self._norm_hooks + self._step_hooks:
            handle.remove()
        self._norm_hooks, self._step_hooks = [], []
        self._eager.close()
        self._stats, self._moments = {}, {}
        self._armed_step, self._stepped = -1, False

    def _arm(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """On a due step, hook the norm layers' outputs for this batch (every micro-batch of the step)."""
        step = trainer.global_step
        if self._armed_step != step and not self.due(step):
            return
        self._armed_step = step
        if self.norms and not self._norm_hooks:
            modules = dict(pl_module.named_modules())
            self._norm_weight_layers = self._eager.enter_context(weight_layers_before(pl_module, self.norms))
            self._norm_hooks = [modules[name].register_forward_hook(_OutputMoments(self._moments, name))
                                for name in self.norms]
            self._eager.enter_context(eager_calls(pl_module))  # a compiled forward would skip the hooks

    @torch.no_grad()
    def _before_step(self, pl_module: L.LightningModule, optimizer: Any) -> None:
        """Gradient statistics of the stepping optimizer's weights, and a copy of them to measure its update."""
        self._stepped = True
        lrs = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        names = {id(p): name for name, p in pl_module.named_parameters()}
        watched = set(self.weights)
        params = [(names[id(p)], p) for group in optimizer.param_groups for p in group["params"]
                  if id(p) in names and names[id(p)] in watched and p.grad is not None and p.numel() > 1]
        for name, param in params:
            grad = param.grad.float()
            self._stats[f"{name}/grad_norm"] = grad.norm()
            self._stats[f"{name}/lr_grad_ratio_log10"] = torch.log10(
                (lrs[id(param)] * grad).std() / param.float().std())
        before = snapshot([p for _, p in params])

        def after_step() -> None:
            for (name, param), old in zip(params, before, strict=True):
                self._stats[f"{name}/update_ratio_log10"] = torch.log10(
                    (param.detach().float() - old.float()).std() / old.float().std())

        self._step_hooks.append(after_next_step(optimizer, after_step))

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After the measured step: entropies from the summed moments, then one record of the finite values."""
        if self._armed_step < 0 or not self._stepped:
            return  # not measuring, or an accumulating micro-batch before the step
        step, stats, moments = self._armed_step, dict(self._stats), dict(self._moments)
        self.forget()
        with self.failure_policy(trainer, pl_module, step):
            if not self.layer_of:
                weights = {name: own_weight_layer(pl_module, name) for name in self.weights}
                norms = {name: self._norm_weight_layers.get(name) for name in self.norms}
                self.name_layers(trainer, pl_module, weights, norms)
            for name, sums in moments.items():
                count, total, squares = sum_over_ranks(trainer, sums)
                variance = (squares / count - (total / count) ** 2).clamp_min(1e-12)
                stats[f"{name}/entropy"] = (0.5 * (LOG_2_PI_E + variance.log())).mean().float()
            self.record(trainer, step, stats, finite_only=True)
