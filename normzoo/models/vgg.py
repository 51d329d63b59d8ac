"""CIFAR-style VGG (Simonyan & Zisserman 2015) with a pluggable norm: Santurkar et al.'s model.

3x3 convs, each followed by the norm and a ReLU, max-pooling between stages, global
average pooling and one linear classifier, as in the CIFAR adaptations used by Santurkar
et al. 2018. Pooling uses ``ceil_mode`` so 28x28 inputs (MNIST) work as well as 32x32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from normzoo.models.layers import ConvNorm, check_variant, init_weights, make_activation, scaled_width
from normzoo.norms import NormSpec, get_norm_layer

POOL = "M"
VGG_VARIANTS: dict[str, list[int | str]] = {
    "vgg11": [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg13": [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg16": [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL],
}


class VGG(nn.Module):
    """VGG-11/13/16 for small images.

    Args:
        variant: vgg11, vgg13 or vgg16.
        input_shape: ``(C, H, W)`` of one sample.
        num_classes: outputs of the classifier.
        norm: a registered norm name or a constructor; ``none`` gives the plain VGG.
        norm_kwargs: options of the norm.
        activation: nonlinearity after each norm (ReLU in the papers).
        init: weight init scheme; Santurkar et al. use Glorot (``xavier``).
        init_gain: multiplies the scheme's standard deviation.
        width_factor: multiplies every conv's channel count (0.125 gives a quick CPU model).
    """

    def __init__(
        self,
        variant: str = "vgg11",
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        norm: NormSpec = "bn",
        norm_kwargs: dict[str, Any] | None = None,
        activation: str = "relu",
        init: str = "xavier",
        init_gain: float = 1.0,
        width_factor: float = 1.0,
    ) -> None:
        super().__init__()
        check_variant("VGG", variant, VGG_VARIANTS)
        norm_layer = get_norm_layer(norm, dims=2, **(norm_kwargs or {}))
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for item in VGG_VARIANTS[variant]:
            if item == POOL:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                width = scaled_width(int(item), width_factor)
                layers += [ConvNorm(channels, width, norm_layer), make_activation(activation)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        init_weights(self, init, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))
