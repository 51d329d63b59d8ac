"""rms_channel, simple and simple_channel against their formulas, in float64, element by element."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from normzoo.errors import ConfigError
from normzoo.norms import cancels_bias, create_norm_layer, is_norm, uses_batch_statistics
from normzoo.norms.introspect import features_and_dims
from tests.norms.norm_checks import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

KEYS = ("rms_channel", "simple", "simple_channel")
SHAPES = {1: (5, 4), 2: (3, 4, 2, 3)}
EPS = 1e-6


def perturbed(key: str, dims: int) -> torch.nn.Module:
    """The layer in float64 with a gain away from ones."""
    layer = create_norm_layer(key, SHAPES[dims][1], dims=dims).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(1))
    return layer


def rms(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values) + EPS)


def std_with_bessel(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) + EPS)


SPREAD = {"rms_channel": rms, "simple": std_with_bessel, "simple_channel": std_with_bessel}


def by_formula(key: str, x: Tensor, gain: Tensor) -> Tensor:
    """Each value divided by the spread of its group (a sample, or a position's channels), times its channel's gain."""
    y = torch.empty_like(x)
    if x.dim() == 2:  # vectors: every key takes a sample's features
        for n in range(x.shape[0]):
            spread = SPREAD[key](x[n].tolist())
            y[n] = x[n] / spread * gain
        return y
    per_position = key != "simple"
    for n in range(x.shape[0]):
        if not per_position:
            spread = SPREAD[key](x[n].flatten().tolist())
            y[n] = x[n] / spread * gain.view(-1, 1, 1)
            continue
        for h in range(x.shape[2]):
            for w in range(x.shape[3]):
                y[n, :, h, w] = x[n, :, h, w] / SPREAD[key](x[n, :, h, w].tolist()) * gain
    return y


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("key", KEYS)
def test_each_layer_is_its_formula_in_float64(key, dims):
    layer = perturbed(key, dims)
    x = torch.randn(*SHAPES[dims], generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 0.7
    torch.testing.assert_close(layer(x), by_formula(key, x, layer.weight.detach()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", ["simple", "simple_channel"])
def test_simplenorm_divides_by_the_spread_around_the_mean_but_keeps_the_mean(key):
    """Shifting the input by c shifts the output by c * gamma / std (the std does not move): no centring."""
    layer = perturbed(key, 2)
    x = torch.randn(*SHAPES[2], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shifted = layer(x + 3.0) - layer(x)
    assert shifted.abs().min() > 0.1
    scale = layer(x) / x  # gamma / std, elementwise
    torch.testing.assert_close(shifted, 3.0 * scale, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("key", KEYS)
def test_the_gain_is_the_only_parameter_and_a_bias_before_the_layer_is_kept(key):
    layer = create_norm_layer(key, 4, dims=2)
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert list(create_norm_layer(key, 4, dims=2, affine=False).parameters()) == []
    assert is_norm(layer) and not cancels_bias(layer) and not uses_batch_statistics(layer)
    assert features_and_dims(layer) == (4, 2)


def test_simplenorm_over_one_value_is_refused_with_the_alternatives():
    with pytest.raises(ConfigError, match=r"SimpleNorm over 1 feature: the variance of one value.*'rms'"):
        create_norm_layer("simple", 1, dims=1)
    with pytest.raises(ConfigError, match=r"SimpleNorm over 1 channel: .*'rms_channel'"):
        create_norm_layer("simple_channel", 1, dims=2)
    assert create_norm_layer("simple", 1, dims=2)(torch.randn(2, 1, 3, 3)).isfinite().all()  # over (C, H, W)


@pytest.mark.parametrize("key", KEYS)
def test_a_wrong_layout_is_one_clear_message(key):
    with pytest.raises(ConfigError, match=r"expects inputs of shape \(N, C, H, W\) with C=4, got \(2, 4\)"):
        create_norm_layer(key, 4, dims=2)(torch.randn(2, 4))
