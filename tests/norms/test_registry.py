"""The norm registry: resolution, errors, user registration, and each key's semantics."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normzoo.errors import ConfigError
from normzoo.models import MLP
from normzoo.norms import (
    UnknownNormError,
    available_norms,
    cancels_bias,
    create_norm_layer,
    get_norm_layer,
    register_norm,
)
from normzoo.norms import registry as registry_module

BUILTIN = ["bn", "gn", "in", "ln", "noisy_bn", "none"]


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that a test may add to without leaking into others."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def test_builtin_keys_are_registered():
    assert set(BUILTIN) <= set(available_norms())


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(UnknownNormError, match="Unknown norm 'batchnorm'") as error:
        get_norm_layer("batchnorm")
    for name in BUILTIN:
        assert name in str(error.value)


def test_unknown_option_lists_the_options():
    with pytest.raises(ValueError, match="has no option 'groups'.*num_groups"):
        get_norm_layer("gn", groups=4)


def test_dims_must_be_one_or_two():
    with pytest.raises(ValueError, match="dims must be 1"):
        get_norm_layer("bn", dims=3)


@pytest.mark.parametrize(
    "spec",
    [nn.BatchNorm2d, functools.partial(nn.GroupNorm, 4), lambda c: nn.GroupNorm(2, c)],
    ids=["class", "partial", "callable"],
)
def test_classes_and_callables_pass_through_as_constructors(spec):
    layer = get_norm_layer(spec)(8)
    assert isinstance(layer, nn.Module)
    assert layer(torch.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)


def test_options_bind_to_a_class():
    layer = get_norm_layer(nn.BatchNorm1d, momentum=0.5)(3)
    assert layer.momentum == 0.5


def test_user_registers_a_norm_and_names_it(scratch_registry):
    @register_norm("scaled_ln")
    def scaled_ln(num_features: int, dims: int, scale: float = 2.0) -> nn.Module:
        return nn.Sequential(create_norm_layer("ln", num_features, dims), _Scale(scale))

    assert "scaled_ln" in available_norms()
    model = MLP(input_shape=(6,), num_classes=3, depth=2, width=8, norm="scaled_ln", norm_kwargs={"scale": 3.0})
    assert model(torch.randn(4, 6)).shape == (4, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_norm("scaled_ln", scaled_ln)
    register_norm("scaled_ln", scaled_ln, overwrite=True)


class _Scale(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


# --- semantics: each key against its definition ---------------------------------------


def test_bn_picks_the_layer_by_dims():
    assert isinstance(create_norm_layer("bn", 5, dims=1), nn.BatchNorm1d)
    assert isinstance(create_norm_layer("bn", 5, dims=2), nn.BatchNorm2d)


def test_ln_on_maps_normalizes_each_sample_over_c_h_w():
    x = torch.randn(3, 6, 5, 5) * 4 + 2
    layer = create_norm_layer("ln", 6, dims=2)
    expected = F.layer_norm(x, x.shape[1:])  # affine starts at identity
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_ln_on_features_is_layernorm():
    x = torch.randn(4, 7)
    torch.testing.assert_close(create_norm_layer("ln", 7, dims=1)(x), F.layer_norm(x, (7,)))


def test_in_normalizes_each_sample_and_channel_with_no_running_stats():
    x = torch.randn(3, 4, 6, 6) * 3 + 1
    layer = create_norm_layer("in", 4).eval()  # eval too uses instance statistics
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(layer(x), (x - mean) / torch.sqrt(var + 1e-5), atol=1e-5, rtol=1e-5)
    assert layer.affine and not layer.track_running_stats


def test_in_refuses_feature_vectors():
    with pytest.raises(ValueError, match="'in'.*feature vector.*use 'ln'"):
        create_norm_layer("in", 10, dims=1)


def test_gn_defaults_to_32_groups_capped_to_the_channels():
    assert create_norm_layer("gn", 64).num_groups == 32
    assert create_norm_layer("gn", 16).num_groups == 16


def test_gn_groups_must_divide_channels():
    divisors = r"\[1, 2, 4, 5, 10, 20, 25, 50, 100\]"
    with pytest.raises(ValueError, match=rf"cannot split 100 channels into 32 groups.*{divisors}"):
        create_norm_layer("gn", 100, dims=1)
    with pytest.raises(ValueError, match="into 3 groups.*num_groups"):
        create_norm_layer("gn", 8, num_groups=3)


def test_none_is_identity():
    x = torch.randn(2, 3)
    assert create_norm_layer("none", 3, dims=1)(x) is x


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [("bn", {}, True), ("noisy_bn", {}, True), ("in", {}, True), ("ln", {}, False),
     ("gn", {}, False), ("gn", {"num_groups": 64}, True), ("none", {}, False)],
)
def test_cancels_bias(name, options, expected):
    assert cancels_bias(create_norm_layer(name, 64, **options)) is expected


@pytest.mark.parametrize("num_features", [0, -3, 2.5, True])
def test_create_norm_layer_refuses_a_channel_count_that_is_not_positive(num_features):
    with pytest.raises(ConfigError, match=r"num_features >= 1"):
        create_norm_layer("bn", num_features)
