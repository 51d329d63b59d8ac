"""One name per layer: the weight layer a part follows, named by the outermost module holding it alone.

Checked on the captures of real forwards (normzoo's MLP, VGG and ResNet, a flat ``nn.Sequential``
as torchvision writes VGG, functional activations), without a Trainer.
"""

from __future__ import annotations

import torch
from torch import nn

from normzoo.callbacks.capture import capture
from normzoo.callbacks.layer_names import layer_names, own_weight_layer
from normzoo.models.archs import build_cnn
from normzoo.models.mlp import MLP


def names_of_sites(model: nn.Module, x: torch.Tensor, layers: tuple[str, ...] = ()) -> dict[str, str]:
    """Every activation site (and each of ``layers``) of one forward -> the layer name it is tagged with; the sites
    and the layers named apart, as two callbacks would (parts of one callback never share a name)."""
    with torch.no_grad(), capture(model, [], layers) as captured:
        model(x)
    sites = {part: weight for part, weight in captured.weight_of.items() if part not in layers}
    return {**layer_names(model, sites), **layer_names(model, {layer: captured.weight_of[layer] for layer in layers})}


def test_an_mlp_block_is_one_layer_for_its_linear_norm_activation_and_weight():
    for depth in (1, 3):  # one block or several: the same names (the ModuleList of blocks is not a layer)
        model = MLP(input_shape=(6,), num_classes=3, depth=depth, width=8, norm="bn", activation="tanh")
        names = names_of_sites(model, torch.randn(4, 6), layers=("blocks.0.norm",))
        assert names["blocks.0.act"] == "blocks.0" and names["blocks.0.norm"] == "blocks.0"
        assert own_weight_layer(model, "blocks.0.linear.weight") == "blocks.0.linear"
        assert layer_names(model, {"blocks.0.linear.weight": "blocks.0.linear", "head.weight": "head"}) == {
            "blocks.0.linear.weight": "blocks.0", "head.weight": "head"}


def test_a_vgg_activation_takes_the_name_of_the_conv_norm_module_it_follows():
    model = build_cnn("vgg11", norm="bn", num_classes=3, width_factor=0.125)
    names = names_of_sites(model, torch.randn(2, 3, 32, 32), layers=("features.0.norm",))
    assert names["features.1"] == "features.0" and names["features.0.norm"] == "features.0"


def test_a_resnet_block_names_each_conv_and_the_output_activation_after_its_residual_branch():
    model = build_cnn("resnet20", norm="bn", num_classes=3, width_factor=0.25)
    names = names_of_sites(model, torch.randn(2, 3, 8, 8), layers=("stages.1.0.shortcut.norm",))
    # stages.1.0 projects its shortcut; the shortcut runs first, so act2 follows conv2 in every block
    assert names["stages.1.0.act1"] == "stages.1.0.conv1" and names["stages.1.0.act2"] == "stages.1.0.conv2"
    assert names["stages.0.0.act2"] == "stages.0.0.conv2" and names["stages.1.0.shortcut.norm"] == "stages.1.0.shortcut"


def test_a_flat_sequential_names_each_part_after_the_conv_it_follows():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    names = names_of_sites(model, torch.randn(2, 3, 8, 8), layers=("1",))
    assert names == {"2": "0", "4": "3", "1": "0"}


class TwoActivationsAfterOneLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(4, 4)

    def forward(self, x):
        return torch.tanh(torch.relu(self.l1(x.sigmoid())))


def test_a_part_before_every_weight_layer_and_parts_sharing_a_layer_keep_their_own_names():
    names = names_of_sites(TwoActivationsAfterOneLayer(), torch.randn(2, 4))
    assert names == {"sigmoid": "sigmoid", "relu": "relu", "tanh": "tanh"}
