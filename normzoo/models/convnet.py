"""``ConvNet``: what every CNN backbone shares, so its options are defined once.

A CNN backbone is a body of conv-norm layers, then global average pooling and one linear
head, re-initialized by one weight scheme. ``VGG`` and ``ResNet`` differ only in their
body, their table of variants and the init of their paper; everything else, the option
list included, is here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from normzoo.errors import ConfigError
from normzoo.models.layers import init_weights
from normzoo.models.weight_norms import normalize_backbone_weights
from normzoo.norms import NormConstructor, NormSpec, get_norm_layer


class ConvNet(nn.Module):
    """A CNN backbone for ``(C, H, W)`` images: a family's body, global average pooling, a linear head.

    Subclasses set ``family``, ``variants``, ``default_variant`` and ``default_init``, and
    implement ``build_body`` and ``body``.

    Args:
        variant: a key of the family's ``variants``; None picks ``default_variant``.
        input_shape: ``(C, H, W)`` of one sample; any size >= 8x8 works (global pooling).
        num_classes: outputs of the head.
        norm: a registered norm name or a constructor; ``none`` gives the plain network.
        norm_kwargs: options of the norm, e.g. ``{"num_groups": 16}`` for ``gn``.
        activation: nonlinearity after each norm (ReLU in the papers).
        init: weight init scheme (see ``normzoo.models.layers.INIT_SCHEMES``); None picks the
            family's ``default_init``, the one its paper uses.
        init_gain: multiplies the scheme's standard deviation.
        width_factor: multiplies every layer's channel count (e.g. 0.125 for a quick CPU model).
        weight_norm: None, or a weight-side normalization of every conv and linear layer but the head:
            ``ws`` (Weight Standardization; with ``norm="gn"`` BiT's GN+WS), ``sws`` (Scaled WS, the
            NF-ResNets' weights) or ``wn`` (Weight Normalization); see ``normzoo.models.weight_norms``.
    """

    family: ClassVar[str]
    variants: ClassVar[Mapping[str, Any]]
    default_variant: ClassVar[str]
    default_init: ClassVar[str]

    def __init__(
        self,
        variant: str | None = None,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        norm: NormSpec = "bn",
        norm_kwargs: dict[str, Any] | None = None,
        activation: str = "relu",
        init: str | None = None,
        init_gain: float = 1.0,
        width_factor: float = 1.0,
        weight_norm: str | None = None,
    ) -> None:
        super().__init__()
        variant = variant or self.default_variant
        if variant not in self.variants:
            raise ConfigError(f"Unknown {self.family} variant {variant!r}. Choose one of: {', '.join(self.variants)}.")
        if len(input_shape) != 3:
            raise ConfigError(
                f"A CNN needs image inputs of shape (C, H, W), got input_shape={tuple(input_shape)}. "
                "Use MLPClassifier for feature vectors."
            )
        norm_layer = get_norm_layer(norm, dims=2, **(norm_kwargs or {}))
        channels = self.build_body(self.variants[variant], input_shape[0], norm_layer, activation, width_factor)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        init_weights(self, init or self.default_init, init_gain)
        normalize_backbone_weights(self, weight_norm, activation)

    def build_body(
        self, layout: Any, in_channels: int, norm_layer: NormConstructor, activation: str, width_factor: float
    ) -> int:
        """Register the body's modules for the variant's ``layout``; return its output channels."""
        raise NotImplementedError

    def body(self, x: Tensor) -> Tensor:
        """The body's feature maps of a batch of images."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.body(x)).flatten(1))
