"""Norm-activation layers in the models: they replace the activation after the norm, and come without it elsewhere.

The layer here is a user's own, written to the ``NormLayer`` protocol (``brings_activation`` and ``apply_act``),
so the test holds for any norm-activation layer, not only normzoo's FRN and EvoNorm.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normzoo.models import MLP, VGG, ResNet
from normzoo.norms import brings_activation


class LayerNormSiLU(nn.Module):
    """A user's norm-activation layer: LayerNorm, then SiLU with a learned per-channel slope."""

    normzoo_norm = True
    brings_activation = True

    def __init__(self, num_features: int, dims: int = 2, apply_act: bool = True) -> None:
        super().__init__()
        self.num_features, self.dims, self.apply_act = num_features, dims, apply_act
        self.norm = nn.GroupNorm(1, num_features) if dims == 2 else nn.LayerNorm(num_features)
        self.slope = nn.Parameter(torch.ones(num_features)) if apply_act else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(x)
        if self.slope is None:
            return y
        slope = self.slope.view(1, -1, *([1] * (x.dim() - 2)))
        return y * torch.sigmoid(slope * y)


def norm_acts(model: nn.Module) -> list[LayerNormSiLU]:
    return [m for m in model.modules() if isinstance(m, LayerNormSiLU)]


def test_a_resnet_drops_the_relu_after_each_norm_activation_layer_and_keeps_the_one_after_the_addition():
    model = ResNet("resnet8", input_shape=(3, 8, 8), num_classes=3, norm=LayerNormSiLU)
    assert isinstance(model.stem[1], nn.Identity) and model.stem[0].norm.apply_act
    for stage in model.stages:
        block = stage[0]
        assert block.conv1.norm.apply_act and isinstance(block.act1, nn.Identity)
        assert not block.conv2.norm.apply_act and block.conv2.norm.slope is None  # the addition follows
        if not isinstance(block.shortcut, nn.Identity):  # every stage but the first projects its shortcut
            assert not block.shortcut.norm.apply_act
        assert isinstance(block.act2, nn.ReLU)
    assert sum(brings_activation(m) for m in norm_acts(model)) == 4  # the stem and three first norms


def test_a_resnet_with_a_norm_activation_layer_uses_every_parameter():
    model = ResNet("resnet8", input_shape=(3, 8, 8), num_classes=3, norm=LayerNormSiLU)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == []  # DDP without find_unused_parameters needs this


def test_an_mlp_replaces_its_activation_before_and_keeps_it_after():
    before = MLP(input_shape=(6,), num_classes=3, depth=2, width=8, norm=functools.partial(LayerNormSiLU, dims=1))
    assert all(isinstance(b.act, nn.Identity) and b.norm.apply_act for b in before.blocks)
    x = torch.randn(4, 6)
    hidden = x
    for block in before.blocks:  # one nonlinearity per block: the layer's own
        z = F.layer_norm(block.linear(hidden), (8,), block.norm.norm.weight, block.norm.norm.bias)
        hidden = z * torch.sigmoid(z)
    torch.testing.assert_close(before(x), before.head(hidden))

    after = MLP(input_shape=(6,), num_classes=3, depth=2, width=8, norm=functools.partial(LayerNormSiLU, dims=1),
                norm_position="after")
    assert all(isinstance(b.act, nn.ReLU) and not b.norm.apply_act for b in after.blocks)


def test_a_vgg_replaces_every_activation_after_a_norm():
    model = VGG("vgg11", input_shape=(3, 8, 8), num_classes=3, norm=LayerNormSiLU, width_factor=0.125)
    assert not [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(norm_acts(model)) == 8 and all(m.apply_act for m in norm_acts(model))
