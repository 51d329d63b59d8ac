"""The optimizer and LR schedule of a classifier, from plain ``{"class_path", "init_args"}`` dicts.

Weight decay applies to parameters with ``dim() >= 2`` only (nanoGPT's rule), so norm
scales and biases are never decayed, whatever the norm. A module may exempt more of its own
parameters by timm's convention, a ``no_weight_decay()`` method returning their names (the ViT's
position embedding).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import instantiate_class
from torch import nn

DEFAULT_OPTIMIZER: dict[str, Any] = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}
"""Used when no optimizer is given (plain-Python use); the CLI configs always name theirs."""


def decay_groups(model: nn.Module) -> list[dict[str, Any]]:
    """The trainable parameters as two optimizer groups: decayed (``dim() >= 2``, not exempted by a module's
    ``no_weight_decay()``) and not (weight decay 0)."""
    exempt = {
        id(module.get_parameter(name)) for module in model.modules()
        if callable(getattr(module, "no_weight_decay", None)) for name in module.no_weight_decay()
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2 and id(p) not in exempt]
    no_decay = [p for p in trainable if p.dim() < 2 or id(p) in exempt]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def configure_optimization(
    model: nn.Module, optimizer: dict[str, Any] | None, lr_scheduler: dict[str, Any] | None
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns for these configs.

    The optimizer defaults to ``DEFAULT_OPTIMIZER``; without a scheduler the learning rate is
    constant. The schedule steps once per epoch, or once per optimizer step where its class says
    ``interval = "step"`` (``normzoo.models.schedules``); ``ReduceLROnPlateau`` monitors ``val/loss``.
    """
    built = instantiate_class(decay_groups(model), optimizer or DEFAULT_OPTIMIZER)
    if not lr_scheduler:
        return built
    scheduler = instantiate_class(built, lr_scheduler)
    schedule: dict[str, Any] = {"scheduler": scheduler, "interval": getattr(scheduler, "interval", "epoch")}
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        schedule["monitor"] = "val/loss"
    return {"optimizer": built, "lr_scheduler": schedule}
