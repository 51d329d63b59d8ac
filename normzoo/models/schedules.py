"""``WeightDecayAsExponentialLR``: weight decay traded for an exponentially increasing learning rate.

Li & Arora 2020 ("An Exponential Learning Rate Schedule for Deep Learning", arXiv 1910.07454):
for weights the loss is invariant to the scale of (every weight that feeds a normalization),
SGD with momentum ``mu``, learning rate ``lr`` and weight decay ``wd`` follows the same path of
directions ``w / ||w||`` as SGD with the same momentum, no weight decay and the learning rate

    lr_t = lr * alpha ** -(2 t + 1),   alpha the larger root of  x**2 - (1 + mu - lr * wd) x + mu = 0,

for step ``t = 0, 1, ...``: the weights of the second run are those of the first divided by
``alpha ** t``. Without momentum ``alpha = 1 - lr * wd``. Derivation: write the decayed run as the
heavy-ball recursion ``w' = (1 + mu - lr wd) w - mu w_prev - lr g(w)``, substitute ``w_t = alpha**t u_t``
and use ``g(c w) = g(w) / c``; ``u`` then follows the heavy ball with momentum ``mu / alpha**2`` and
step ``lr_t``, which is exactly what ``torch.optim.SGD`` with momentum ``mu`` does when its
learning rate grows by ``alpha ** -2`` per step (its buffer carries the previous step's rate).

Exactness: without momentum the two runs agree to rounding error. With momentum they differ
slightly from the first step on, because ``torch.optim.SGD`` starts its buffer at the first
gradient (the recursion's past weight equals the current one), which in ``u`` coordinates is
not the same start; the directions then stay close rather than equal. Weights that are not
scale-invariant (a classifier's last layer) are trained differently by the two runs.
"""

from __future__ import annotations

import math
from typing import ClassVar

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from normzoo.errors import ConfigError


def equivalence_factor(lr: float, weight_decay: float, momentum: float) -> float:
    """``alpha``: the larger root of ``x**2 - (1 + momentum - lr * weight_decay) x + momentum = 0``.

    Raises:
        ConfigError: no real root below 1 (``lr * weight_decay`` too large for the momentum).
    """
    if weight_decay == 0:
        return 1.0  # exactly: an undecayed group keeps its rate (the formula's root is 1 up to rounding)
    b = 1.0 + momentum - lr * weight_decay
    discriminant = b * b - 4.0 * momentum
    if lr * weight_decay < 0 or discriminant < 0 or b <= 0:
        raise ConfigError(f"WeightDecayAsExponentialLR: lr * weight_decay = {lr * weight_decay:g} with momentum "
                          f"{momentum:g} has no equivalent exponential schedule (it needs "
                          "lr * weight_decay <= (1 - sqrt(momentum))**2); lower the weight decay or the learning rate.")
    return (b + math.sqrt(discriminant)) / 2.0


class WeightDecayAsExponentialLR(LRScheduler):
    """Removes each param group's weight decay and grows its learning rate as Li & Arora's equivalence says.

    At construction, every param group's ``weight_decay`` is read and set to 0; each step multiplies
    the group's learning rate by ``alpha ** -2`` from ``lr * alpha ** -1`` (module docstring; ``alpha``
    from the group's initial ``lr``, its ``momentum`` and the weight decay it had). A group without
    weight decay keeps a constant learning rate. So a config keeps its optimizer (weight decay
    included) and adds this scheduler to train the equivalent run without weight decay. Steps once
    per optimizer step (``interval``).

    Args:
        optimizer: a ``torch.optim.SGD`` (the equivalence is SGD's; no Nesterov, no dampening).
        last_epoch: as in torch's schedulers (-1: a new run).

    Raises:
        ConfigError: another optimizer, Nesterov or dampening, or a group whose ``lr * weight_decay``
            has no equivalent schedule.
    """

    interval: ClassVar[str] = "step"
    """normzoo steps a scheduler at this interval (``normzoo.models.optim``): this schedule is per step."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if type(optimizer).__name__ != "SGD" or any(group.get("nesterov") or group.get("dampening")
                                                    for group in optimizer.param_groups):
            raise ConfigError("WeightDecayAsExponentialLR needs torch.optim.SGD without Nesterov or dampening (the "
                              f"equivalence is SGD's), got {type(optimizer).__name__}.")
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group["initial_weight_decay"] = group["weight_decay"]
                group["weight_decay"] = 0.0
        self.alphas = [equivalence_factor(group.get("initial_lr", group["lr"]), group["initial_weight_decay"],
                                          group.get("momentum", 0.0)) for group in optimizer.param_groups]
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """``base_lr * alpha ** -(2 t + 1)`` per group, ``t`` the steps taken (``last_epoch``)."""
        return [base * alpha ** -(2 * self.last_epoch + 1) for base, alpha in zip(self.base_lrs, self.alphas,
                                                                                   strict=True)]
