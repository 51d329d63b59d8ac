"""dyt and derf against their papers' formulas, in float64, with closed-form derivatives."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from normzoo.errors import ConfigError
from normzoo.models.optim import decay_groups
from normzoo.norms import (
    DynamicErf,
    DynamicTanh,
    brings_activation,
    cancels_bias,
    create_norm_layer,
    is_norm,
    uses_batch_statistics,
)
from normzoo.norms.introspect import features_and_dims
from tests.norms.norm_checks import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = {1: (5, 4), 2: (3, 4, 2, 3)}


def per_channel(t: Tensor, dims: int) -> Tensor:
    return t if dims == 1 else t.view(-1, 1, 1)


def tanh_from_exp(u: Tensor) -> Tensor:
    """tanh written from exponentials (``u`` small enough here not to overflow)."""
    e = torch.exp(2 * u)
    return (e - 1) / (e + 1)


def erf_from_math(u: Tensor) -> Tensor:
    """The error function element by element with Python's ``math.erf``."""
    return torch.tensor([math.erf(v) for v in u.flatten().tolist()], dtype=u.dtype).view_as(u)


def perturbed(key: str, dims: int, **options: object) -> torch.nn.Module:
    """The layer in float64 with alpha, shift, gamma and beta away from their initial values."""
    layer = create_norm_layer(key, SHAPES[dims][1], dims=dims, **options).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        layer.alpha.fill_(0.8)
        if hasattr(layer, "shift"):
            layer.shift.fill_(-0.3)
        if layer.weight is not None:
            layer.weight.uniform_(0.5, 2.0, generator=generator)
            layer.bias.normal_(generator=generator)
    return layer


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("key", ["dyt", "derf"])
def test_matches_the_paper_formula_and_its_derivatives_in_train_and_eval(key, dims):
    layer = perturbed(key, dims)
    alpha, gamma, beta = layer.alpha.detach(), layer.weight.detach(), layer.bias.detach()
    shift = layer.shift.detach() if key == "derf" else torch.zeros(1, dtype=torch.float64)
    x = (torch.randn(SHAPES[dims], dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 + 0.5)
    u = alpha * x + shift
    f = tanh_from_exp(u) if key == "dyt" else erf_from_math(u)
    df = 1 - f**2 if key == "dyt" else 2 / math.sqrt(math.pi) * torch.exp(-(u**2))  # f'(u)
    expected = per_channel(gamma, dims) * f + per_channel(beta, dims)
    upstream = torch.randn(SHAPES[dims], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for training in (True, False):  # no statistics: the same function in both modes
        layer.train(training)
        layer.zero_grad()
        xg = x.clone().requires_grad_()
        y = layer(xg)
        torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
        y.backward(upstream)
        g = upstream * per_channel(gamma, dims) * df  # dL/du
        reduce = (0,) if dims == 1 else (0, 2, 3)
        torch.testing.assert_close(xg.grad, g * alpha, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.alpha.grad, (g * x).sum().view(1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.weight.grad, (upstream * f).sum(reduce), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.bias.grad, upstream.sum(reduce), rtol=1e-12, atol=1e-12)
        if key == "derf":
            torch.testing.assert_close(layer.shift.grad, g.sum().view(1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", ["dyt", "derf"])
def test_without_affine_it_is_the_squashing_function_alone(key):
    layer = perturbed(key, 2, affine=False)
    x = torch.randn(SHAPES[2], dtype=torch.float64)
    u = 0.8 * x + (-0.3 if key == "derf" else 0.0)
    assert [n for n, _ in layer.named_parameters()] == (["alpha", "shift"] if key == "derf" else ["alpha"])
    torch.testing.assert_close(layer(x), tanh_from_exp(u) if key == "dyt" else erf_from_math(u))


@pytest.mark.parametrize("key", ["dyt", "derf"])
def test_feature_layout_broadcasts_over_tokens(key):
    """dims=1 takes (N, C) and any (..., C): a (N, T, C) batch of tokens equals its flattened (N*T, C) form."""
    layer = perturbed(key, 1)
    tokens = torch.randn(2, 3, SHAPES[1][1], dtype=torch.float64)
    torch.testing.assert_close(layer(tokens), layer(tokens.flatten(0, 1)).view_as(tokens))


def test_default_initialization_and_parameter_shapes():
    dyt = create_norm_layer("dyt", 6, dims=2)
    derf = create_norm_layer("derf", 6, dims=1, alpha_init=0.2, shift_init=0.1)
    assert isinstance(dyt, DynamicTanh) and isinstance(derf, DynamicErf)
    assert dyt.alpha.shape == (1,) and dyt.alpha.item() == 0.5  # the papers' vision default
    assert derf.alpha.item() == pytest.approx(0.2) and derf.shift.item() == pytest.approx(0.1)
    assert derf.alpha.shape == derf.shift.shape == (1,)
    assert torch.equal(dyt.weight, torch.ones(6)) and torch.equal(dyt.bias, torch.zeros(6))
    assert set(derf.state_dict()) == {"alpha", "shift", "weight", "bias"}  # the names of the authors' code
    decayed, not_decayed = decay_groups(derf)  # scalars and per-channel vectors: no weight decay
    assert decayed["params"] == [] and len(not_decayed["params"]) == 4


@pytest.mark.parametrize("key", ["dyt", "derf"])
def test_declares_a_statistics_free_norm_slot_layer(key):
    layer = create_norm_layer(key, 4, dims=2)
    assert is_norm(layer) and features_and_dims(layer) == (4, 2)
    assert not uses_batch_statistics(layer) and not cancels_bias(layer) and not brings_activation(layer)


@pytest.mark.parametrize("key", ["dyt", "derf"])
def test_each_output_depends_on_its_own_input_only(key):
    """No statistics: changing one sample (or one element) changes no other output."""
    layer = perturbed(key, 2)
    x = torch.randn(SHAPES[2], dtype=torch.float64)
    changed = x.clone()
    changed[0, 1, 0, 0] += 10.0
    diff = (layer(changed) - layer(x)).abs()
    assert diff[0, 1, 0, 0] > 1e-3 and diff.sum() == diff[0, 1, 0, 0]


@pytest.mark.parametrize("key", ["dyt", "derf"])
def test_bf16_autocast_computes_in_the_inputs_dtype(key):
    layer = perturbed(key, 2).float()
    x = torch.randn(SHAPES[2]) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), layer(x.bfloat16().float()), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("key", ["dyt", "derf"])
def test_refuses_a_wrong_layout_or_dims(key):
    with pytest.raises(ConfigError, match=r"expects inputs of shape \(N, C, H, W\) with C=4, got \(2, 4\)"):
        create_norm_layer(key, 4, dims=2)(torch.randn(2, 4))
    with pytest.raises(ConfigError, match=r"shape \(N, C\) with C=4, got \(2, 5\)"):
        create_norm_layer(key, 4, dims=1)(torch.randn(2, 5))
    with pytest.raises(ConfigError, match="dims must be 1"):
        DynamicTanh(4, dims=3)
