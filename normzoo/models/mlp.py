"""Fully connected networks with a pluggable norm: the Ioffe & Szegedy MNIST setup and kin."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor, nn

from normzoo.errors import ConfigError
from normzoo.models.layers import activation_after, build_norm, init_weights, make_activation
from normzoo.models.weight_norms import normalize_backbone_weights
from normzoo.norms import NormConstructor, NormSpec, cancels_bias, get_norm_layer

NormPosition = Literal["before", "after"]


class DenseBlock(nn.Module):
    """Linear -> norm -> activation (``before``) or Linear -> activation -> norm (``after``).

    "before" is Ioffe & Szegedy's placement, "immediately before the nonlinearity"; there
    the linear bias is dropped when the norm cancels it (BN, noisy BN). A norm-activation layer
    (``normzoo.norms.brings_activation``) replaces the activation "before"; "after" the activation it
    is the normalization alone (``apply_act=False``), so the block has one nonlinearity either way.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        norm_layer: NormConstructor,
        activation: str,
        norm_position: NormPosition = "before",
    ) -> None:
        super().__init__()
        if norm_position not in ("before", "after"):
            raise ConfigError(f"norm_position must be 'before' or 'after' the activation, got {norm_position!r}.")
        self.norm_position = norm_position
        before = norm_position == "before"
        self.norm = build_norm(norm_layer, out_features, activation_follows=before)
        self.linear = nn.Linear(in_features, out_features, bias=not before or not cancels_bias(self.norm))
        self.act = activation_after(self.norm, activation) if before else make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x)
        if self.norm_position == "before":
            return self.act(self.norm(x))
        return self.norm(self.act(x))


class MLP(nn.Module):
    """A multilayer perceptron: ``depth`` hidden ``DenseBlock``s of ``width`` units, then a linear head.

    Inputs of any shape are flattened, so image datasets plug in directly. The default is
    Ioffe & Szegedy's MNIST network (Sec 4.1): 3 hidden layers of 100 units.

    Args:
        input_shape: shape of one sample, e.g. ``(1, 28, 28)`` or ``(500,)``.
        num_classes: outputs of the head.
        depth: number of hidden layers.
        width: units per hidden layer.
        activation: relu, tanh, sigmoid, gelu, leaky_relu or identity.
        norm: a registered norm name (``bn``, ``ln``, ``gn``, ``none``, ...) or a constructor.
        norm_kwargs: options of the norm, e.g. ``{"num_groups": 20}`` for ``gn``.
        norm_position: ``before`` or ``after`` the activation.
        init: weight init scheme (see ``normzoo.models.layers.INIT_SCHEMES``).
        init_gain: multiplies the scheme's standard deviation.
        weight_norm: None, or a weight-side normalization of every linear layer but the head: ``ws``
            (Weight Standardization), ``sws`` (Scaled WS) or ``wn`` (Weight Normalization); see
            ``normzoo.models.weight_norms``.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        depth: int = 3,
        width: int = 100,
        activation: str = "relu",
        norm: NormSpec = "bn",
        norm_kwargs: dict[str, Any] | None = None,
        norm_position: NormPosition = "before",
        init: str = "default",
        init_gain: float = 1.0,
        weight_norm: str | None = None,
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ConfigError(f"MLP needs depth >= 1 and width >= 1, got depth={depth}, width={width}.")
        norm_layer = get_norm_layer(norm, dims=1, **(norm_kwargs or {}))
        widths = [math.prod(input_shape)] + [width] * depth
        self.flatten = nn.Flatten()
        self.blocks = nn.Sequential(
            *(DenseBlock(i, o, norm_layer, activation, norm_position) for i, o in zip(widths, widths[1:], strict=False))
        )
        self.head = nn.Linear(width, num_classes)
        init_weights(self, init, init_gain)
        normalize_backbone_weights(self, weight_norm, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.flatten(x)))
