"""CIFAR-style VGG (Simonyan & Zisserman 2015) with a pluggable norm: Santurkar et al.'s model.

3x3 convs, each followed by the norm and a ReLU, max-pooling between stages, global
average pooling and one linear classifier, as in the CIFAR adaptations used by Santurkar
et al. 2018. Pooling uses ``ceil_mode`` so 28x28 inputs (MNIST) work as well as 32x32.
"""

from __future__ import annotations

from torch import Tensor, nn

from normzoo.models.convnet import ConvNet
from normzoo.models.layers import ConvNorm, activation_after, scaled_width
from normzoo.norms import NormConstructor

POOL = "M"
VGG_VARIANTS: dict[str, list[int | str]] = {
    "vgg11": [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg13": [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg16": [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL],
}


class VGG(ConvNet):
    """VGG-11/13/16 for small images: ``variant`` is vgg11 (the default), vgg13 or vgg16.

    The other arguments are ``ConvNet``'s; ``init`` defaults to Glorot (``xavier``), as in
    Santurkar et al.
    """

    family = "VGG"
    variants = VGG_VARIANTS
    default_variant = "vgg11"
    default_init = "xavier"

    def build_body(
        self, layout: list[int | str], in_channels: int, norm_layer: NormConstructor, activation: str,
        width_factor: float,
    ) -> int:
        layers: list[nn.Module] = []
        channels = in_channels
        for item in layout:
            if item == POOL:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                width = scaled_width(int(item), width_factor)
                conv_norm = ConvNorm(channels, width, norm_layer)
                layers += [conv_norm, activation_after(conv_norm.norm, activation)]
                channels = width
        self.features = nn.Sequential(*layers)
        return channels

    def body(self, x: Tensor) -> Tensor:
        return self.features(x)
