"""Point-wise squashing layers that stand in for a norm: DyT and Derf (registry keys ``dyt``, ``derf``).

They do not normalize: they take no statistics at all (not over the batch, the sample or the
channel), so each output depends on its own input element only. They squash instead, through a
bounded S-shaped function of a learned scalar multiple of the input, then scale and shift each
channel:

- DyT, Dynamic Tanh (Zhu, Chen, He, LeCun & Liu, "Transformers without Normalization", CVPR 2025):
  ``y = gamma * tanh(alpha * x) + beta``. The paper's motivation: a trained Transformer's
  LayerNorm maps inputs to outputs along tanh-like S-curves, so an element-wise tanh with a learned
  input scale can replace it.
- Derf, Dynamic erf (Chen, Lu, Zhu, Sun & Liu, "Stronger Normalization-Free Transformers", arXiv
  2512.10938, 2025): ``y = gamma * erf(alpha * x + s) + beta``, ``erf`` the plain error function
  (``torch.erf``), with a learned scalar shift ``s`` inside it.

Parameters, as in the authors' released code (jiachenzhu/DyT, zlab-princeton/Derf), whose names
they keep so that state dicts carry over: ``alpha`` (and Derf's ``shift``) is one scalar per
layer, a tensor of shape ``(1,)``, initialized at ``alpha_init`` (0.5, the papers' value for
vision models; DyT's authors tune it lower for large language models) and ``shift_init`` (0.0);
``weight`` (gamma, ones) and ``bias`` (beta, zeros) are per channel. Being 1-d, none of them is
weight-decayed by normzoo's optimizers (which decay parameters with ``dim >= 2`` only, nanoGPT's
rule).

Layouts: ``dims=1`` for ``(N, C)`` feature vectors, gamma and beta per feature (any ``(..., C)``
works, e.g. ``(N, T, C)`` tokens); ``dims=2`` for ``(N, C, H, W)`` maps, gamma and beta per
channel, broadcast over (H, W). Under autocast the layer computes in the input's dtype (the
parameters are cast to it): there is no statistic to protect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from normzoo.errors import ConfigError
from normzoo.norms.layout import check_dims

DEFAULT_ALPHA = 0.5
"""The initial ``alpha`` of DyT (and of Derf's released code) for vision models."""


class PointwiseSquash(nn.Module):
    """Base of DyT and Derf: ``y = gamma * f(pre(x)) + beta``, ``f`` a bounded S-curve, ``pre`` affine in ``x``.

    A subclass sets ``squash`` (``f``) and, if its argument is more than ``alpha * x``, overrides
    ``pre_activation``. No statistics: not a normalization, see the module docstring.

    Args:
        num_features: features (``dims=1``) or channels (``dims=2``).
        dims: 1 for ``(N, C)`` (or ``(..., C)``) inputs, 2 for ``(N, C, H, W)``.
        alpha_init: initial value of the learned scalar ``alpha`` (shape ``(1,)``).
        affine: learn a per-channel ``weight`` (gamma) and ``bias`` (beta).
    """

    # the NormLayer protocol (normzoo.norms.introspect): a norm slot's layer, no statistics, no centring
    normzoo_norm = True
    cancels_bias = False
    batch_statistics = False
    squash: ClassVar[Callable[[Tensor], Tensor]]

    def __init__(
        self, num_features: int, dims: int = 2, alpha_init: float = DEFAULT_ALPHA, affine: bool = True
    ) -> None:
        super().__init__()
        check_dims(dims)
        self.num_features, self.dims, self.alpha_init = num_features, dims, alpha_init
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def pre_activation(self, x: Tensor) -> Tensor:
        """The argument of the squashing function: ``alpha * x``."""
        return self.alpha.to(x.dtype) * x

    def forward(self, x: Tensor) -> Tensor:
        channel_dim = -1 if self.dims == 1 else -3
        if x.dim() < (2 if self.dims == 1 else 4) or x.shape[channel_dim] != self.num_features:
            layout = "(N, C)" if self.dims == 1 else "(N, C, H, W)"
            raise ConfigError(
                f"{type(self).__name__}(num_features={self.num_features}, dims={self.dims}) expects inputs "
                f"of shape {layout} with C={self.num_features}, got {tuple(x.shape)}."
            )
        y = self.squash(self.pre_activation(x))
        if self.weight is None:
            return y
        shape = (-1,) if self.dims == 1 else (-1, 1, 1)
        return torch.addcmul(self.bias.to(y.dtype).view(shape), y, self.weight.to(y.dtype).view(shape))

    def extra_repr(self) -> str:
        return f"{self.num_features}, dims={self.dims}, alpha_init={self.alpha_init}, affine={self.weight is not None}"


class DynamicTanh(PointwiseSquash):
    """DyT (Zhu et al., CVPR 2025): ``y = gamma * tanh(alpha * x) + beta`` (registry key ``dyt``).

    Arguments as in ``PointwiseSquash``; ``alpha`` is one learned scalar of shape ``(1,)``.
    """

    squash = staticmethod(torch.tanh)


class DynamicErf(PointwiseSquash):
    """Derf (Chen et al., arXiv 2512.10938): ``y = gamma * erf(alpha * x + s) + beta`` (registry key ``derf``).

    Args:
        num_features, dims, alpha_init, affine: as in ``PointwiseSquash``.
        shift_init: initial value of the learned scalar shift ``s`` (parameter ``shift``, shape ``(1,)``).
    """

    squash = staticmethod(torch.erf)

    def __init__(
        self,
        num_features: int,
        dims: int = 2,
        alpha_init: float = DEFAULT_ALPHA,
        shift_init: float = 0.0,
        affine: bool = True,
    ) -> None:
        super().__init__(num_features, dims, alpha_init, affine)
        self.shift_init = shift_init
        self.shift = nn.Parameter(torch.full((1,), float(shift_init)))

    def pre_activation(self, x: Tensor) -> Tensor:
        """``alpha * x + s``."""
        return torch.addcmul(self.shift.to(x.dtype), self.alpha.to(x.dtype), x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, shift_init={self.shift_init}"
