"""Backbone construction rules: bias dropping, init, placement, and errors for bad names."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normzoo.models import MLP, VGG, CNNClassifier, MLPClassifier, ResNet, build_cnn, init_weights


def linear_biases(model: nn.Module) -> list[bool]:
    return [m.bias is not None for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_bias_before_bn_is_dropped_and_kept_elsewhere():
    assert linear_biases(MLP(input_shape=(4,), depth=2, width=8, norm="bn")) == [False, False, True]
    assert linear_biases(MLP(input_shape=(4,), depth=2, width=8, norm="ln")) == [True, True, True]
    after = MLP(input_shape=(4,), depth=2, width=8, norm="bn", norm_position="after")
    assert linear_biases(after) == [True, True, True]
    convs = linear_biases(ResNet("resnet20", norm="bn"))
    assert convs[:-1] == [False] * (len(convs) - 1) and convs[-1]  # only the head keeps its bias
    assert all(linear_biases(VGG("vgg11", norm="none")))


def test_norm_position_orders_the_block():
    block = MLP(input_shape=(4,), depth=1, width=6, activation="relu", norm="ln", norm_position="after").blocks[0]
    y = block(torch.randn(10, 4))
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(10), atol=1e-5, rtol=0)  # LN output last


@pytest.mark.parametrize(("scheme", "base"), [("kaiming", lambda fi, fo: math.sqrt(2 / fi)),
                                              ("lecun", lambda fi, fo: math.sqrt(1 / fi)),
                                              ("xavier", lambda fi, fo: math.sqrt(2 / (fi + fo))),
                                              ("normal", lambda fi, fo: 1.0)])
def test_init_scheme_sets_weight_std_and_leaves_norm_params(scheme, base):
    model = nn.Sequential(nn.Linear(400, 300), nn.BatchNorm1d(300))
    init_weights(model, scheme, gain=0.5)
    weight = model[0].weight
    assert abs(weight.std().item() - 0.5 * base(400, 300)) < 0.02 * 0.5 * base(400, 300)
    assert torch.all(model[0].bias == 0)
    assert torch.all(model[1].weight == 1) and torch.all(model[1].bias == 0)


def test_default_init_scales_by_gain():
    torch.manual_seed(0)
    a = nn.Linear(50, 50)
    torch.manual_seed(0)
    b = nn.Linear(50, 50)
    init_weights(b, "default", gain=3.0)
    torch.testing.assert_close(b.weight, 3 * a.weight)


def test_cnn_accepts_mnist_sized_inputs():
    for arch in ("vgg11", "vgg13", "vgg16", "resnet8", "resnet20", "resnet18"):
        model = build_cnn(arch, input_shape=(1, 28, 28), num_classes=10, norm="gn").eval()
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(("arch", "full_channels"), [("vgg11", 512), ("resnet20", 64)])
def test_width_factor_scales_every_conv(arch, full_channels):
    full = build_cnn(arch, input_shape=(1, 32, 32), norm="bn")
    slim = build_cnn(arch, input_shape=(1, 32, 32), norm="bn", width_factor=0.25)
    full_convs = [m.out_channels for m in full.modules() if isinstance(m, nn.Conv2d)]
    slim_convs = [m.out_channels for m in slim.modules() if isinstance(m, nn.Conv2d)]
    assert max(full_convs) == full_channels
    assert slim_convs == [round(c / 4) for c in full_convs]
    assert slim.head.in_features == full_channels // 4
    assert slim(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_resnet8_has_one_block_per_stage():
    model = ResNet("resnet8", input_shape=(3, 32, 32))
    assert [len(stage) for stage in model.stages] == [1, 1, 1]
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules()) == 7


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: build_cnn("resnet50"), "Unknown CNN arch 'resnet50'.*resnet20"),
        (lambda: VGG("vgg19"), "Unknown VGG variant 'vgg19'.*vgg16"),
        (lambda: VGG(width_factor=0), "width_factor must be > 0"),
        (lambda: MLP(activation="swishy"), "Unknown activation 'swishy'.*tanh"),
        (lambda: MLP(init="orthogonal"), "Unknown init scheme 'orthogonal'.*kaiming"),
        (lambda: MLP(norm_position="inside"), "norm_position must be 'before' or 'after'"),
        (lambda: CNNClassifier(input_shape=(500,)), r"needs image inputs of shape \(C, H, W\)"),
        (lambda: MLPClassifier(norm="bathcnorm"), "Unknown norm 'bathcnorm'"),
    ],
)
def test_bad_model_arguments_are_clear(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_weight_decay_skips_one_dimensional_parameters():
    model = MLPClassifier(
        input_shape=(4,), norm="bn", optimizer={"class_path": "torch.optim.SGD",
                                                "init_args": {"lr": 0.1, "weight_decay": 0.01}},
    )
    optimizer = model.configure_optimizers()
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and all(p.dim() >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_default_optimizer_and_scheduler():
    model = MLPClassifier(input_shape=(4,), lr_scheduler={
        "class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 2}})
    config = model.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD)
    assert config["optimizer"].defaults["lr"] == 0.1
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)


def test_plateau_scheduler_monitors_validation_loss():
    model = MLPClassifier(input_shape=(4,), lr_scheduler={
        "class_path": "torch.optim.lr_scheduler.ReduceLROnPlateau", "init_args": {"patience": 2}})
    assert model.configure_optimizers()["lr_scheduler"]["monitor"] == "val/loss"


def test_predict_step_returns_class_probabilities():
    model = MLPClassifier(input_shape=(4,), num_classes=3).eval()
    probabilities = model.predict_step((torch.randn(5, 4), torch.zeros(5)), 0)
    assert probabilities.shape == (5, 3)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(5))
