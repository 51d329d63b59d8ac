"""replace_norm on existing models: torchvision and normzoo models, declared norms, refusals, warnings."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from normzoo.errors import ConfigError
from normzoo.models import MLP, ResNet
from normzoo.norms import BatchNoise, NoisyBatchNorm, replace_norm
from tests.norms.norm_checks import layers_of

# --------------------------------------------------------------------------- helpers


def assert_trains_one_step(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """One SGD step gives a finite loss and changes every parameter that got a gradient."""
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss = F.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert "fc.weight" in changed and "conv1.weight" in changed
    assert len(changed) == len(before)


def snapshot(model: nn.Module) -> tuple[list[tuple[str, type]], dict[str, Tensor]]:
    """Module types by path and a copy of the state dict: what 'unchanged' compares."""
    types = [(name, type(m)) for name, m in model.named_modules()]
    return types, {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_snapshot(a, b) -> None:
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        assert torch.equal(a[1][key], b[1][key]), key


# --------------------------------------------------------------------------- replace_norm


@pytest.fixture
def cifar_batch() -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    return torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))


def test_replace_norm_turns_torchvision_resnet18_into_group_norm(cifar_batch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    channels = {name: m.num_features for name, m in layers_of(model, nn.BatchNorm2d).items()}
    assert len(channels) == 20

    assert replace_norm(model, "gn") is model

    assert not layers_of(model, _BatchNorm)
    for name, count in channels.items():
        layer = model.get_submodule(name)
        assert type(layer) is nn.GroupNorm
        assert (layer.num_channels, layer.num_groups) == (count, 32)
    assert_trains_one_step(model, *cifar_batch)


@pytest.mark.parametrize("key", ["rms_channel", "simple", "simple_channel"])
def test_an_uncentred_norm_replaces_torchvisions_batchnorm_and_is_found_again(key, cifar_batch):
    """Into torchvision's ResNet-18 (in-place ReLUs, its own layout): the layer trains, and the norm tools
    see it as a norm (``normzoo_norm``), so it can be replaced in turn."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    channels = {name: m.num_features for name, m in layers_of(model, nn.BatchNorm2d).items()}
    replace_norm(model, key)
    layers = {name: model.get_submodule(name) for name in channels}
    assert {type(layer).__name__ for layer in layers.values()} == {"ChannelRMSNorm" if key == "rms_channel" else
                                                                    "SimpleNorm"}
    assert {name: layer.num_features for name, layer in layers.items()} == channels
    assert_trains_one_step(model, *cifar_batch)
    replace_norm(model, "bn")
    assert {type(model.get_submodule(name)) for name in channels} == {nn.BatchNorm2d}


def test_replace_norm_with_none_removes_every_norm(cifar_batch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    paths = list(layers_of(model, nn.BatchNorm2d))

    replace_norm(model, "none")

    assert not layers_of(model, _BatchNorm)
    assert all(type(model.get_submodule(name)) is nn.Identity for name in paths)
    assert_trains_one_step(model, *cifar_batch)


def test_replace_norm_swaps_normzoo_resnet_bn_for_ln():
    model = ResNet("resnet20", norm="bn")
    channels = {name: m.num_features for name, m in layers_of(model, nn.BatchNorm2d).items()}

    replace_norm(model, "ln")

    assert not layers_of(model, _BatchNorm)
    for name, count in channels.items():  # ln on conv maps is GroupNorm with one group
        layer = model.get_submodule(name)
        assert (type(layer), layer.num_groups, layer.num_channels) == (nn.GroupNorm, 1, count)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_replace_norm_replaces_the_noisy_bn_wrapper_as_a_whole():
    model = MLP(input_shape=(6,), num_classes=3, depth=2, width=8, norm="noisy_bn")
    paths = list(layers_of(model, NoisyBatchNorm))
    assert paths == ["blocks.0.norm", "blocks.1.norm"]

    replace_norm(model, "bn")

    assert all(type(model.get_submodule(name)) is nn.BatchNorm1d for name in paths)
    assert not layers_of(model, (NoisyBatchNorm, BatchNoise))
    assert model(torch.randn(4, 6)).shape == (4, 3)


def test_replace_norm_honours_the_normzoo_norm_declaration():
    class Scaled(nn.Module):  # a user's norm: BN inside, declared with the class attribute
        normzoo_norm = True

        def __init__(self, num_features: int) -> None:
            super().__init__()
            self.num_features, self.dims = num_features, 1
            self.inner = nn.BatchNorm1d(num_features)

        def forward(self, x: Tensor) -> Tensor:
            return 2 * self.inner(x)

    model = nn.Sequential(nn.Linear(3, 5), Scaled(5))
    replace_norm(model, "ln")
    assert type(model[1]) is nn.LayerNorm and model[1].normalized_shape == (5,)


def test_replace_norm_keeps_device_dtype_and_mode():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).double().eval()
    replace_norm(model, "gn", num_groups=4)
    assert model[1].weight.dtype == torch.float64
    assert not model[1].training


def test_replace_norm_refuses_in_on_feature_vectors_and_changes_nothing():
    model = MLP(input_shape=(6,), num_classes=3, depth=2, width=8, norm="bn")
    before = snapshot(model)

    with pytest.raises(ConfigError, match=r"Layer 'blocks\.0\.norm' \(BatchNorm1d\): Norm 'in'"):
        replace_norm(model, "in")

    assert_same_snapshot(before, snapshot(model))


def test_replace_norm_refuses_groups_that_do_not_divide_before_swapping_anything():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 64, 3), nn.BatchNorm2d(64))
    before = snapshot(model)

    # 3 groups fit the first layer (6 channels), not the second (64): nothing may be swapped
    with pytest.raises(ConfigError, match=r"Layer '4' \(BatchNorm2d\).*64 channels into 3 groups"):
        replace_norm(model, "gn", num_groups=3)

    assert_same_snapshot(before, snapshot(model))


def test_replace_norm_warns_only_when_bn_statistics_were_learned():
    fresh = ResNet("resnet20", norm="bn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replace_norm(fresh, "gn", num_groups=8)

    trained = ResNet("resnet20", norm="bn").train()
    trained(torch.randn(4, 3, 16, 16))  # one training forward updates the running statistics
    with pytest.warns(UserWarning, match="learned BN statistics") as record:
        replace_norm(trained, "gn", num_groups=8)
    assert len([w for w in record if "statistics" in str(w.message)]) == 1


def test_replace_norm_on_a_model_without_norm_layers_says_so():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.warns(UserWarning, match=r"replace_norm\('gn'\): Sequential has no norm layer to replace"):
        assert replace_norm(model, "gn", num_groups=2) is model
