"""The training loss of one optimizer step as a function of the weights.

``GradientICS`` and ``LossLandscape`` evaluate the model at weights other than the
current ones. ``StepObjective`` makes every such evaluation comparable: it covers all the
micro-batches of the step (``accumulate_grad_batches``), averaged as Lightning averages
them, replays each one's random draws (noisy-BN noise, dropout masks), runs in the model's
current modes and the trainer's precision, takes gradients with ``torch.autograd.grad``
(so ``.grad`` is never touched) and averages loss and gradients over DDP ranks, so the
numbers describe the union of the shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor

from normzoo.callbacks.evaluate import ModelEvaluation
from normzoo.callbacks.probe import RngState, restore_rng, sum_over_ranks
from normzoo.errors import DiagnosticError


@dataclass
class MicroBatch:
    """One batch of an optimizer step, with its index and the RNG state its forward started from."""

    batch: Any
    index: int
    rng: RngState


class StepObjective:
    """The step's loss, evaluated at whatever weights the model holds when it is called.

    Args:
        trainer: supplies the precision context and the DDP reduction.
        pl_module: the model; its modes are used as they are.
        micro_batches: the step's batches, in order.
        evaluation: how the loss is computed (the replayed ``training_step`` or ``loss=``).
    """

    def __init__(self, trainer: L.Trainer, pl_module: L.LightningModule, micro_batches: Sequence[MicroBatch],
                 evaluation: ModelEvaluation) -> None:
        self.trainer, self.pl_module = trainer, pl_module
        self.micro_batches, self.evaluation = micro_batches, evaluation

    def __call__(self, wrt: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]] | None:
        """The loss and its gradients with respect to ``wrt`` (zeros where unused), rank-averaged.

        None when a ``training_step`` returned no loss (Lightning skips such a step too).
        """
        loss = self.loss()
        if loss is None:
            return None
        grads = torch.autograd.grad(loss, list(wrt), allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True)]
        loss = loss.detach()
        if self.trainer.world_size == 1:
            return loss, grads
        return self._average_over_ranks(loss, grads)

    def loss(self) -> Tensor | None:
        """This rank's loss, still attached to its graph (not averaged over ranks); None as in ``__call__``.

        ``__call__`` differentiates it once; ``Sharpness`` twice (Hessian-vector products).
        """
        losses = []
        for micro in self.micro_batches:
            restore_rng(micro.rng)
            with torch.enable_grad():
                loss = self.evaluation.loss(self.trainer, self.pl_module, micro.batch, micro.index)
            if loss is None:
                return None
            if loss.numel() != 1 or not loss.requires_grad:
                raise DiagnosticError(
                    f"{self.evaluation.callback}: the loss of {type(self.pl_module).__name__} must be a scalar that "
                    f"depends on the weights; got shape {tuple(loss.shape)}, requires_grad={loss.requires_grad}. "
                    "Pass loss=(pl_module, batch) -> scalar loss."
                )
            losses.append(loss.reshape(()))
        with torch.enable_grad():
            return torch.stack(losses).mean()

    def _average_over_ranks(self, loss: Tensor, grads: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        dtype = torch.float64 if torch.float64 in {loss.dtype, *(g.dtype for g in grads)} else torch.float32
        flat = torch.cat([loss.to(dtype).reshape(1)] + [g.to(dtype).reshape(-1) for g in grads])
        flat = sum_over_ranks(self.trainer, flat) / self.trainer.world_size  # one collective
        pieces = flat[1:].split([g.numel() for g in grads])
        return flat[0].to(loss.dtype), [p.view_as(g).to(g.dtype) for p, g in zip(pieces, grads, strict=True)]
