"""Shared building blocks of the backbones: activations by name and weight initialization.

Initialization follows nanoGPT's rule: a parameter with ``dim() >= 2`` is a weight matrix
or conv kernel; everything else (biases, norm scales and shifts) is left to its module.
No list of norm types is kept, so every norm, registered or user-made, is treated alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from normzoo.errors import ConfigError
from normzoo.norms import NormConstructor, brings_activation, cancels_bias

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,  # a deep linear network (Santurkar et al. 2018, Sec 3)
}

INIT_SCHEMES = ("default", "xavier", "kaiming", "lecun", "normal")
"""Weight init schemes; each draws N(0, std^2) with std = gain * the scheme's base std:
xavier sqrt(2 / (fan_in + fan_out)), kaiming sqrt(2 / fan_in), lecun sqrt(1 / fan_in),
normal 1 (so the gain is the absolute std, e.g. Ioffe's "small Gaussian" 0.01 ... 0.1).
``default`` keeps PyTorch's own init and multiplies it by the gain."""


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name; raises ``ValueError`` listing the valid names."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"Unknown activation {name!r}. Choose one of: {', '.join(ACTIVATIONS)}."
        ) from None


def check_init_scheme(scheme: str) -> None:
    """Raise ``ValueError`` listing the valid schemes if ``scheme`` is not one of them."""
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"Unknown init scheme {scheme!r}. Choose one of: {', '.join(INIT_SCHEMES)}.")


@torch.no_grad()
def init_weights(model: nn.Module, scheme: str = "default", gain: float = 1.0) -> None:
    """Re-initialize every module whose ``weight`` has ``dim() >= 2`` (see ``INIT_SCHEMES``).

    Biases of those modules are zeroed unless the scheme is ``default``; norm parameters
    (1-D) are never touched.
    """
    check_init_scheme(scheme)
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or weight.dim() < 2:
            continue
        if scheme == "default":
            weight.mul_(gain)
            continue
        fan_out, fan_in = weight.shape[0], weight[0].numel()
        receptive = weight[0, 0].numel()
        base = {
            "xavier": math.sqrt(2.0 / (fan_in + fan_out * receptive)),
            "kaiming": math.sqrt(2.0 / fan_in),
            "lecun": math.sqrt(1.0 / fan_in),
            "normal": 1.0,
        }[scheme]
        weight.normal_(0.0, gain * base)
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):
            bias.zero_()


def build_norm(norm_layer: NormConstructor, channels: int, activation_follows: bool = True) -> nn.Module:
    """The norm layer for ``channels``; where no activation follows it, a norm-activation layer comes without its own.

    A norm-activation layer (FRN+TLU, EvoNorm: ``normzoo.norms.brings_activation``) replaces the
    norm *and* the activation after it. Where a model has no activation after the norm (a ResNet's
    last norm before the residual addition, its shortcut, a norm placed after the activation) it
    is built again with ``apply_act=False``: the layer without its nonlinearity, as timm's
    ``norm_act`` layers are used in ResNetV2 and as the FRN and EvoNorm papers place them (FRN
    without TLU; EvoNorm, as in its authors' code, reduces to its affine ``gamma * x + beta``).
    """
    norm = norm_layer(channels)
    if not activation_follows and brings_activation(norm):
        norm = norm_layer(channels, apply_act=False)
    return norm


def activation_after(norm: nn.Module, activation: str) -> nn.Module:
    """The activation a model puts after ``norm``: none (``nn.Identity``) when the norm brings its own."""
    return nn.Identity() if brings_activation(norm) else make_activation(activation)


class ConvNorm(nn.Sequential):
    """A conv followed by a norm; the conv has a bias only when the norm does not cancel it.

    ``activation_follows=False`` where the model puts no activation after this norm (see ``build_norm``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm_layer: Callable[[int], nn.Module],
        kernel_size: int = 3,
        stride: int = 1,
        activation_follows: bool = True,
    ) -> None:
        norm = build_norm(norm_layer, out_channels, activation_follows)
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride,
            padding=kernel_size // 2, bias=not cancels_bias(norm),
        )
        super().__init__()
        self.conv = conv
        self.norm = norm


def scaled_width(channels: int, factor: float) -> int:
    """``channels * factor`` rounded, at least 1; raises ``ConfigError`` for a factor <= 0."""
    if factor <= 0:
        raise ConfigError(f"width_factor must be > 0, got {factor}.")
    return max(1, round(channels * factor))

