"""CIFAR-style ResNets (He et al. 2016) with a pluggable norm: ResNet-8, ResNet-20 and ResNet-18.

ResNet-20 is the CIFAR network of the ResNet paper (3 stages of 16/32/64 channels, 3
basic blocks each; ResNet-8 is the same family with one block per stage, a quick CPU
model); ResNet-18 is the CIFAR adaptation of the ImageNet ResNet-18 (a 3x3
stem without max-pooling, 4 stages of 64...512 channels, 2 blocks each), the model of
the GPU benchmarks in docs/PERFORMANCE.md. Downsampling shortcuts are 1x1 conv + norm
(option B) in both, so every shortcut is normalized by the same norm as the block.
"""

from __future__ import annotations

from torch import Tensor, nn

from normzoo.models.convnet import ConvNet
from normzoo.models.layers import ConvNorm, make_activation, scaled_width
from normzoo.norms import NormConstructor

# variant -> (stem channels, channels per stage, blocks per stage)
RESNET_VARIANTS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "resnet8": (16, (16, 32, 64), (1, 1, 1)),
    "resnet20": (16, (16, 32, 64), (3, 3, 3)),
    "resnet18": (64, (64, 128, 256, 512), (2, 2, 2, 2)),
}


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers with an identity (or projected) shortcut, then the activation."""

    def __init__(
        self, in_channels: int, channels: int, stride: int, norm_layer: NormConstructor, activation: str
    ) -> None:
        super().__init__()
        self.conv1 = ConvNorm(in_channels, channels, norm_layer, stride=stride)
        self.act1 = make_activation(activation)
        self.conv2 = ConvNorm(channels, channels, norm_layer)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = ConvNorm(in_channels, channels, norm_layer, kernel_size=1, stride=stride)
        self.act2 = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.shortcut(x)  # first, so that the residual branch is the last layer before act2
        return self.act2(self.conv2(self.act1(self.conv1(x))) + skip)


class ResNet(ConvNet):
    """A CIFAR-style residual network: ``variant`` is resnet8, resnet20 (the default) or resnet18.

    The other arguments are ``ConvNet``'s; ``init`` defaults to He (``kaiming``), as in the
    ResNet paper.
    """

    family = "ResNet"
    variants = RESNET_VARIANTS
    default_variant = "resnet20"
    default_init = "kaiming"

    def build_body(
        self, layout: tuple[int, tuple[int, ...], tuple[int, ...]], in_channels: int, norm_layer: NormConstructor,
        activation: str, width_factor: float,
    ) -> int:
        stem_channels, stage_channels, stage_blocks = layout
        channels = scaled_width(stem_channels, width_factor)
        self.stem = nn.Sequential(ConvNorm(in_channels, channels, norm_layer), make_activation(activation))
        stages: list[nn.Module] = []
        for index, (width, blocks) in enumerate(zip(stage_channels, stage_blocks, strict=True)):
            width = scaled_width(width, width_factor)
            strides = [1 if index == 0 else 2] + [1] * (blocks - 1)
            stage = []
            for stride in strides:
                stage.append(BasicBlock(channels, width, stride, norm_layer, activation))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        return channels

    def body(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))
