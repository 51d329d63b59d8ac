"""Model construction: every classifier argument reaches the backbone by name, and each family's own init."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from normzoo.models import CNN_ARCHS, MLP, VGG, CNNClassifier, MLPClassifier, ResNet, build_cnn
from normzoo.models.bn_report import BNBatchReport


def test_cnn_classifier_options_reach_the_backbone_by_name():
    model = CNNClassifier(input_shape=(1, 16, 16), num_classes=7, arch="vgg13", norm="gn",
                          norm_kwargs={"num_groups": 2}, activation="tanh", init="normal", init_gain=0.5,
                          width_factor=0.125)
    backbone = model.backbone
    assert isinstance(backbone, VGG) and backbone.head.out_features == 7
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10 and convs[0].in_channels == 1 and convs[0].out_channels == 8  # vgg13, 64 * 0.125
    assert {m.num_groups for m in backbone.modules() if isinstance(m, nn.GroupNorm)} == {2}
    assert any(isinstance(m, nn.Tanh) for m in backbone.modules())
    assert not any(isinstance(m, nn.ReLU) for m in backbone.modules())
    assert 0.4 < convs[-1].weight.std().item() < 0.6  # "normal": the gain is the std
    assert model.hparams["arch"] == "vgg13" and "optimizer" not in model.backbone_options()


def test_mlp_classifier_options_reach_the_backbone_by_name():
    model = MLPClassifier(input_shape=(2, 3), num_classes=4, norm="ln", depth=2, width=9, activation="tanh",
                          norm_position="after", init="normal", init_gain=0.01)
    backbone = model.backbone
    assert isinstance(backbone, MLP) and len(backbone.blocks) == 2 and backbone.head.out_features == 4
    first = backbone.blocks[0]
    assert first.linear.in_features == 6 and first.linear.out_features == 9 and first.norm_position == "after"
    assert isinstance(first.act, nn.Tanh) and isinstance(first.norm, nn.LayerNorm)
    assert 0.005 < backbone.head.weight.std().item() < 0.015


@pytest.mark.parametrize(("family", "paper_init", "other"), [(VGG, "xavier", "kaiming"), (ResNet, "kaiming", "xavier")])
def test_init_none_is_the_familys_paper_init(family, paper_init, other):
    def weights(init):
        torch.manual_seed(0)
        return family(input_shape=(3, 8, 8), width_factor=0.25, init=init).state_dict()

    default, paper, different = weights(None), weights(paper_init), weights(other)
    assert all(torch.equal(default[key], paper[key]) for key in default)
    assert not all(torch.equal(default[key], different[key]) for key in default)


def test_build_cnn_knows_every_arch_and_its_family():
    assert CNN_ARCHS == ("vgg11", "vgg13", "vgg16", "resnet8", "resnet20", "resnet56", "resnet110", "resnet18")
    for arch in CNN_ARCHS:
        model = build_cnn(arch, input_shape=(3, 8, 8), width_factor=0.125)
        assert isinstance(model, VGG if arch.startswith("vgg") else ResNet)


def test_the_classifier_brings_its_bn_batch_report():
    callbacks = MLPClassifier(input_shape=(4,)).configure_callbacks()
    assert [type(callback) for callback in callbacks] == [BNBatchReport]


def test_the_models_package_loads_lightning_only_for_the_lightning_modules():
    code = ("import sys, normzoo.models as m; before = 'lightning' in sys.modules; cls = m.CNNClassifier; "
            "print(before, 'lightning' in sys.modules, cls.__module__, 'CNNClassifier' in dir(m))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True", "normzoo.models.classifier", "True"]
