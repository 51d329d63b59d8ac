"""The training loss of one fixed batch as a function of the weights.

``GradientICS`` and ``LossLandscape`` evaluate the model at weights other than the
current ones. ``BatchObjective`` makes every such evaluation comparable: it replays the
same random draws (noisy-BN noise, dropout masks) each time, runs in the trainer's
precision context and the model's current modes, takes gradients with
``torch.autograd.grad`` (so ``.grad`` is never touched) and averages loss and gradients
over DDP ranks, so the numbers describe the union of the shards.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normzoo.callbacks.probe import RngState, batch_inputs, batch_targets, restore_rng, sum_over_ranks
from normzoo.errors import ConfigError

LossFn = Callable[[nn.Module, Any], Tensor]
"""``loss_fn(pl_module, batch) -> scalar loss``, the objective whose gradient is measured."""


class FunctionalLoss:
    """``torch.nn.functional.<name>(pl_module(inputs), targets)``: a standard supervised loss.

    A class rather than a closure so that callbacks holding it pickle under ``ddp_spawn``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.function = getattr(F, name)

    def __call__(self, model: nn.Module, batch: Any) -> Tensor:
        targets = batch_targets(batch)
        if targets is None:
            raise ConfigError(
                f"loss={self.name!r} needs targets, but the batch ({type(batch).__name__}) has none. Pass "
                "loss='package.module.function', a function (pl_module, batch) -> loss, to the callback."
            )
        return self.function(model(batch_inputs(batch)), targets)


def resolve_loss(loss: str | LossFn) -> LossFn:
    """The loss function a callback evaluates.

    Args:
        loss: a ``torch.nn.functional`` loss name applied to ``(pl_module(inputs), targets)``
            ("cross_entropy", "mse_loss", ...), a dotted import path of a function
            ``(pl_module, batch) -> loss``, or that function itself.

    Raises:
        ConfigError: the name is neither a functional loss nor an importable callable.
    """
    if callable(loss):
        return loss
    if "." not in loss:
        if not hasattr(F, loss) or not ("loss" in loss or "entropy" in loss):
            raise ConfigError(
                f"Unknown loss {loss!r}. Use a torch.nn.functional loss such as 'cross_entropy', 'mse_loss', "
                "'nll_loss', 'binary_cross_entropy_with_logits', or a dotted path 'package.module.function' to a "
                "function (pl_module, batch) -> loss."
            )
        return FunctionalLoss(loss)
    module_name, _, attribute = loss.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"Cannot import the loss function {loss!r}: {error}.") from error
    if not callable(function):
        raise ConfigError(f"{loss!r} is not callable; it must be a function (pl_module, batch) -> loss.")
    return function


class BatchObjective:
    """One batch's loss, evaluated at whatever weights the model holds when it is called.

    Args:
        trainer: supplies the precision context and the DDP reduction.
        pl_module: the model; its modes are used as they are.
        batch: the (device-resident) batch.
        loss_fn: from ``resolve_loss``.
        rng: generator state replayed before every evaluation.
    """

    def __init__(self, trainer: L.Trainer, pl_module: nn.Module, batch: Any, loss_fn: LossFn, rng: RngState) -> None:
        self.trainer, self.pl_module, self.batch, self.loss_fn, self.rng = trainer, pl_module, batch, loss_fn, rng

    def __call__(self, wrt: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """The loss and its gradients with respect to ``wrt`` (zeros where unused), rank-averaged."""
        restore_rng(self.rng)
        with torch.enable_grad(), self.trainer.precision_plugin.train_step_context():
            loss = self.loss_fn(self.pl_module, self.batch)
        if isinstance(loss, dict):
            loss = loss["loss"]
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ConfigError(f"The diagnostics loss must return a scalar tensor, got {type(loss).__name__}.")
        grads = torch.autograd.grad(loss, list(wrt), allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True)]
        loss = loss.detach().reshape(())
        if self.trainer.world_size == 1:
            return loss, grads
        return self._average_over_ranks(loss, grads)

    def _average_over_ranks(self, loss: Tensor, grads: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        dtype = torch.float64 if torch.float64 in {loss.dtype, *(g.dtype for g in grads)} else torch.float32
        flat = torch.cat([loss.to(dtype).reshape(1)] + [g.to(dtype).reshape(-1) for g in grads])
        flat = sum_over_ranks(self.trainer, flat) / self.trainer.world_size  # one collective
        pieces = flat[1:].split([g.numel() for g in grads])
        return flat[0].to(loss.dtype), [p.view_as(g).to(g.dtype) for p, g in zip(pieces, grads, strict=True)]


def snapshot(params: Sequence[Tensor]) -> list[Tensor]:
    """Detached copies of the parameters' current values."""
    return [p.detach().clone() for p in params]


@torch.no_grad()
def assign(params: Sequence[Tensor], values: Sequence[Tensor]) -> None:
    """Write ``values`` into the parameters in place (optimizer state keeps pointing at them)."""
    for param, value in zip(params, values, strict=True):
        param.copy_(value)
