"""CIFAR-style ResNets (He et al. 2016) with a pluggable norm: ResNet-8/20/56/110 and ResNet-18.

ResNet-20, -56 and -110 are the CIFAR networks of the ResNet paper (3 stages of 16/32/64
channels, 3, 9 and 18 basic blocks per stage: 6n + 2 layers for n blocks); ResNet-8 is the
same family with one block per stage, a quick CPU model; the deep ResNet-56 and -110 are
the networks of De & Smith 2020's signal propagation study. ResNet-18 is the CIFAR
adaptation of the ImageNet ResNet-18 (a 3x3 stem without max-pooling, 4 stages of
64...512 channels, 2 blocks each), the model of the GPU benchmarks in docs/PERFORMANCE.md.
Downsampling shortcuts are 1x1 conv + norm (option B) in all of them, so every shortcut is
normalized by the same norm as the block. A norm-activation layer (FRN+TLU, EvoNorm) replaces the
stem's and each block's first norm-and-ReLU; the block's last norm and the shortcut's, which no ReLU
follows, are its normalization alone, and the ReLU after the addition stays (as in the FRN and EvoNorm
papers' ResNets).

``residual_scale`` puts a learned scalar on every residual branch: at 0.0 it is SkipInit
(De & Smith 2020) / ReZero (Bachlechner et al. 2020), which makes every block start as the
identity, so that a deep ResNet trains without normalization. ``fixup=True`` is Fixup (Zhang, Dauphin
& Ma 2019), the other way to train a deep ResNet without normalization: an initialization that scales
each branch's first conv by L^(-1/2) (L residual branches, two layers per branch) and zeroes its last
conv and the classifier, plus a learned scalar multiplier and four scalar biases per block.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from normzoo.errors import ConfigError
from normzoo.models.convnet import ConvNet
from normzoo.models.layers import ConvNorm, activation_after, make_activation, scaled_width
from normzoo.norms import NormConstructor

# variant -> (stem channels, channels per stage, blocks per stage)
RESNET_VARIANTS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "resnet8": (16, (16, 32, 64), (1, 1, 1)),
    "resnet20": (16, (16, 32, 64), (3, 3, 3)),
    "resnet56": (16, (16, 32, 64), (9, 9, 9)),
    "resnet110": (16, (16, 32, 64), (18, 18, 18)),
    "resnet18": (64, (64, 128, 256, 512), (2, 2, 2, 2)),
}


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers with an identity (or projected) shortcut, then the activation.

    ``act2(scale * conv2(act1(conv1(x))) + shortcut(x))``: with ``residual_scale`` None there is
    no scale (the block of the ResNet paper); with a float, ``scale`` is a learned scalar
    parameter (``self.residual_scale``) initialized at that value. At 0.0 the block starts as
    ``act2(shortcut(x))``: the identity on the non-negative output of a previous ReLU block
    (SkipInit, De & Smith 2020; ReZero, Bachlechner et al. 2020). The scalar is 0-d, so
    normzoo's optimizers never decay it (``normzoo.models.optim``).
    """

    residual_scale: nn.Parameter | None

    def __init__(
        self, in_channels: int, channels: int, stride: int, norm_layer: NormConstructor, activation: str,
        residual_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNorm(in_channels, channels, norm_layer, stride=stride)
        self.act1 = activation_after(self.conv1.norm, activation)
        self.conv2 = ConvNorm(channels, channels, norm_layer, activation_follows=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = ConvNorm(
                in_channels, channels, norm_layer, kernel_size=1, stride=stride, activation_follows=False
            )
        self.act2 = make_activation(activation)
        # registered as None when absent: no state_dict key, the parameters of the plain block
        scale = None if residual_scale is None else nn.Parameter(torch.tensor(float(residual_scale)))
        self.register_parameter("residual_scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.shortcut(x)  # first, so that the residual branch is the last layer before act2
        branch = self.conv2(self.act1(self.conv1(x)))
        if self.residual_scale is not None:
            branch = branch * self.residual_scale
        return self.act2(branch + skip)


class ScalarBias(nn.Module):
    """``x + b`` with ``b`` one learned scalar (0-d, so never weight-decayed), initialized at 0: Fixup's biases."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


class FixupBlock(BasicBlock):
    """``BasicBlock`` with Fixup's scalar biases and multiplier (Zhang, Dauphin & Ma 2019, Sec 3 and their Fig. 1).

    ``act2(scale * conv2(act1(conv1(x + b1a) + b1b) + b2a) + b2b + shortcut(x + b1a))``, every ``b`` a
    scalar at 0 and ``scale`` (``self.residual_scale``) a scalar at 1. A projection shortcut takes
    ``x + b1a`` as in the authors' code; the identity shortcut takes ``x``. ``ResNet(fixup=True)`` builds
    these blocks and then initializes them (``ResNet.fixup_init``).
    """

    def __init__(
        self, in_channels: int, channels: int, stride: int, norm_layer: NormConstructor, activation: str,
    ) -> None:
        super().__init__(in_channels, channels, stride, norm_layer, activation, residual_scale=1.0)
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = (ScalarBias() for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        shifted = self.bias1a(x)
        skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(shifted)
        branch = self.conv2(self.bias2a(self.act1(self.bias1b(self.conv1(shifted)))))
        return self.act2(self.bias2b(branch * self.residual_scale) + skip)


class ResNet(ConvNet):
    """A CIFAR-style residual network: ``variant`` is resnet8, resnet20 (the default), resnet56, resnet110
    or resnet18.

    The other arguments are ``ConvNet``'s; ``init`` defaults to He (``kaiming``), as in the
    ResNet paper.

    Args:
        residual_scale: None (the default): the plain blocks of the ResNet paper. A float: every
            block's residual branch is multiplied by its own learned scalar, initialized at that
            value, before the addition. 0.0 is SkipInit (De & Smith 2020) / ReZero (Bachlechner
            et al. 2020): without normalization the variance of a He-initialized ResNet roughly
            doubles per block, and BN's implicit fix is to shrink each branch against its skip by
            about sqrt(depth); a zero scalar makes every block start as the identity instead, so a
            deep unnormalized ResNet trains.
        fixup: Fixup (Zhang, Dauphin & Ma 2019): ``FixupBlock``s and their initialization
            (``fixup_init``). An initialization for ResNets without normalization, so it needs
            ``norm="none"``; it brings its own multiplier, so ``residual_scale`` stays None.

    Raises:
        ConfigError: ``fixup`` with a norm other than ``none``, with ``residual_scale`` or with ``weight_norm``.
    """

    family = "ResNet"
    variants = RESNET_VARIANTS
    default_variant = "resnet20"
    default_init = "kaiming"

    def __init__(self, *args: Any, residual_scale: float | None = None, fixup: bool = False, **kwargs: Any) -> None:
        if fixup and residual_scale is not None:
            raise ConfigError("fixup brings its own residual multiplier (a scalar at 1): leave residual_scale unset "
                              "(null), or use residual_scale without fixup for SkipInit.")
        if fixup and kwargs.get("weight_norm") is not None:
            raise ConfigError("fixup sets the scale of the weights it initializes, which a weight norm "
                              f"({kwargs['weight_norm']!r}) standardizes away: leave weight_norm unset (null) "
                              "with fixup.")
        if fixup and kwargs.get("norm", "bn") != "none":
            raise ConfigError(f"fixup is an initialization for ResNets without normalization (Zhang et al. 2019), "
                              f"got norm={kwargs.get('norm', 'bn')!r}: set norm to 'none'.")
        # ConvNet.__init__ calls build_body, which reads them (plain values: nn.Module takes them before its __init__)
        self._residual_scale = None if residual_scale is None else float(residual_scale)
        self._fixup = bool(fixup)
        super().__init__(*args, **kwargs)
        if self._fixup:
            self.fixup_init()

    @torch.no_grad()
    def fixup_init(self) -> None:
        """Fixup's rules 1 and 2 on top of the He init: every block's first conv times L^(-1/2) (L blocks, two
        layers per branch: L^(-1/(2m-2)) with m = 2), its last conv and the classifier at zero; conv biases at 0.
        """
        blocks = [block for block in self.modules() if isinstance(block, FixupBlock)]
        for block in blocks:
            block.conv1.conv.weight.mul_(len(blocks) ** -0.5)
            block.conv2.conv.weight.zero_()
            for conv in (block.conv1.conv, block.conv2.conv):
                if conv.bias is not None:
                    conv.bias.zero_()
        self.head.weight.zero_()
        self.head.bias.zero_()

    def build_body(
        self, layout: tuple[int, tuple[int, ...], tuple[int, ...]], in_channels: int, norm_layer: NormConstructor,
        activation: str, width_factor: float,
    ) -> int:
        stem_channels, stage_channels, stage_blocks = layout
        channels = scaled_width(stem_channels, width_factor)
        stem = ConvNorm(in_channels, channels, norm_layer)
        if self._fixup:  # a scalar bias before each activation, and one before the classifier
            self.stem = nn.Sequential(stem, ScalarBias(), make_activation(activation))
            self.head_bias = ScalarBias()
        else:
            self.stem = nn.Sequential(stem, activation_after(stem.norm, activation))
        stages: list[nn.Module] = []
        for index, (width, blocks) in enumerate(zip(stage_channels, stage_blocks, strict=True)):
            width = scaled_width(width, width_factor)
            strides = [1 if index == 0 else 2] + [1] * (blocks - 1)
            stage = []
            for stride in strides:
                if self._fixup:
                    stage.append(FixupBlock(channels, width, stride, norm_layer, activation))
                else:
                    stage.append(BasicBlock(channels, width, stride, norm_layer, activation, self._residual_scale))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        return channels

    def body(self, x: Tensor) -> Tensor:
        features = self.stages(self.stem(x))
        # Fixup's bias before the classifier, added before the pooling: pool(f + b) = pool(f) + b
        return self.head_bias(features) if self._fixup else features
