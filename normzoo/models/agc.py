"""Adaptive Gradient Clipping (Brock, De, Smith & Simonyan, ICML 2021, Eq. 3), unit-wise.

"High-Performance Large-Scale Image Recognition Without Normalization" clips each unit's
gradient by its size relative to the unit's weight, not by a global norm:

    if ||G_i|| / max(||W_i||, eps) > lambda:   G_i <- lambda * max(||W_i||, eps) / ||G_i|| * G_i

A unit ``i`` is one output unit: the row ``W[i]`` of a linear weight, the filter ``W[i]`` of a
conv kernel (dim 0 of any tensor with ``dim() >= 2``); a 1-D or 0-d parameter (a bias, a gain,
a scalar) is one unit as a whole, as in the reference code and timm. ``eps = 1e-3`` keeps
zero-initialized units (a SkipInit scalar, a zero-init conv) from having their gradients
clipped to zero. The paper does not clip the final linear layer: ``agc_parameters(model,
exclude=["head"])`` are the parameters to pass.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from normzoo.errors import ConfigError
from normzoo.models.weight_norms import modules_outside

__all__ = ["adaptive_clip_grad_", "agc_parameters", "unitwise_norm"]


def unitwise_norm(x: Tensor) -> Tensor:
    """The l2 norm of each unit of ``x``: of each slice ``x[i]``, shaped ``(out, 1, ..., 1)``; 0-d if ``dim() <= 1``."""
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(parameters: Tensor | Iterable[Tensor], clipping: float, eps: float = 1e-3) -> Tensor:
    """Clip the gradients of ``parameters`` in place, unit by unit (Brock et al. 2021, Eq. 3).

    Like ``torch.nn.utils.clip_grad_norm_``: call it after ``backward`` (after AMP unscaling)
    and before the optimizer step; parameters without a gradient are skipped. A unit's gradient
    is multiplied by ``min(1, clipping * max(||W_i||, eps) / ||G_i||)``.

    Args:
        parameters: a tensor or tensors whose ``.grad`` to clip (``agc_parameters``).
        clipping: ``lambda``, the largest allowed ``||G_i|| / max(||W_i||, eps)`` (the paper uses
            0.01 to 0.16, smaller for larger batches).
        eps: the floor of a unit's weight norm; 1e-3 in the paper.

    Returns:
        The fraction of units whose gradient was clipped, a 0-d tensor on the gradients' device
        (no host sync); 0 when no parameter has a gradient.
    """
    if not clipping > 0:
        raise ConfigError(f"Adaptive gradient clipping needs clipping > 0, got {clipping}.")
    if not eps > 0:
        raise ConfigError(f"Adaptive gradient clipping needs eps > 0, got {eps}.")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    clipped: Tensor | None = None
    units = 0
    for param in params:
        grad = param.grad
        if grad is None:
            continue
        max_norm = unitwise_norm(param).clamp(min=eps) * clipping
        grad_norm = unitwise_norm(grad)
        over = grad_norm > max_norm  # max_norm > 0, so a zero gradient is never over
        factor = torch.where(over, max_norm / grad_norm, torch.ones_like(grad_norm))
        grad.mul_(factor.to(grad.dtype))
        count = over.sum()
        clipped = count if clipped is None else clipped + count
        units += factor.numel()
    if clipped is None:
        return torch.zeros(())
    return clipped / units


def agc_parameters(model: nn.Module, exclude: Iterable[str | nn.Module] = ()) -> list[nn.Parameter]:
    """The trainable parameters of ``model`` outside the modules of ``exclude`` (``["head"]`` as in the paper).

    ``exclude`` holds module names or modules, as in ``apply_weight_norm``. Weight-normalized
    layers contribute their raw weights (``parametrizations.weight.original``) and their gains.
    """
    return [
        param for _, module in modules_outside(model, exclude)
        for param in module.parameters(recurse=False) if param.requires_grad
    ]
