"""CIFAR-style ResNets (He et al. 2016) with a pluggable norm: ResNet-8, ResNet-20 and ResNet-18.

ResNet-20 is the CIFAR network of the ResNet paper (3 stages of 16/32/64 channels, 3
basic blocks each; ResNet-8 is the same family with one block per stage, a quick CPU
model); ResNet-18 is the CIFAR adaptation of the ImageNet ResNet-18 (a 3x3
stem without max-pooling, 4 stages of 64...512 channels, 2 blocks each), the model of
the GPU benchmarks in docs/PERFORMANCE.md. Downsampling shortcuts are 1x1 conv + norm
(option B) in both, so every shortcut is normalized by the same norm as the block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from normzoo.models.layers import ConvNorm, check_variant, init_weights, make_activation, scaled_width
from normzoo.norms import NormConstructor, NormSpec, get_norm_layer

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
        return self.act2(self.conv2(self.act1(self.conv1(x))) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style residual network.

    Args:
        variant: resnet8, resnet20 or resnet18.
        input_shape: ``(C, H, W)`` of one sample; any size >= 8x8 works (global pooling).
        num_classes: outputs of the classifier.
        norm: a registered norm name or a constructor.
        norm_kwargs: options of the norm, e.g. ``{"num_groups": 16}`` for ``gn``.
        activation: nonlinearity (ReLU in the papers).
        init: weight init scheme; He (``kaiming``) as in the ResNet paper.
        init_gain: multiplies the scheme's standard deviation.
        width_factor: multiplies every layer's channel count (0.5 halves them; quick CPU runs).
    """

    def __init__(
        self,
        variant: str = "resnet20",
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        norm: NormSpec = "bn",
        norm_kwargs: dict[str, Any] | None = None,
        activation: str = "relu",
        init: str = "kaiming",
        init_gain: float = 1.0,
        width_factor: float = 1.0,
    ) -> None:
        super().__init__()
        check_variant("ResNet", variant, RESNET_VARIANTS)
        norm_layer = get_norm_layer(norm, dims=2, **(norm_kwargs or {}))
        stem_channels, stage_channels, stage_blocks = RESNET_VARIANTS[variant]
        stem_channels = scaled_width(stem_channels, width_factor)
        stage_channels = tuple(scaled_width(c, width_factor) for c in stage_channels)
        self.stem = nn.Sequential(
            ConvNorm(input_shape[0], stem_channels, norm_layer), make_activation(activation)
        )
        stages: list[nn.Module] = []
        channels = stem_channels
        for index, (width, blocks) in enumerate(zip(stage_channels, stage_blocks, strict=True)):
            strides = [1 if index == 0 else 2] + [1] * (blocks - 1)
            stage = []
            for stride in strides:
                stage.append(BasicBlock(channels, width, stride, norm_layer, activation))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        init_weights(self, init, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.stages(self.stem(x))).flatten(1))
