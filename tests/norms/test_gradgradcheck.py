"""Every registered norm differentiated once and twice: gradcheck and gradgradcheck in float64, train mode.

The registry is iterated, so a norm is checked as soon as it is registered. Each call of the
checked function starts from the same state (buffers restored, RNG reseeded), so running
statistics and noisy BN's noise stay put between the finite-difference evaluations. A norm
whose class declares ``surrogate_gradient`` or ``first_order_only`` (the NormLayer protocol)
must really fail the check it is excused from (a surrogate gradient, its first-order check; no
second derivatives, the second-order one); it is then skipped with its reason.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import gradcheck, gradgradcheck
from torch.autograd.function import once_differentiable
from torch.func import functional_call

from normzoo.errors import ConfigError
from normzoo.models import MLP
from normzoo.norms import available_norms, create_norm_layer, register_norm
from normzoo.norms import registry as registry_module
from normzoo.norms.introspect import first_order_only, surrogate_gradients
from tests.norms.norm_checks import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = {1: (6, 3), 2: (4, 3, 2, 2)}  # small; the fast-mode checks evaluate the norm a few times per input


def pure_norm(name: str, dims: int) -> tuple[nn.Module, Callable[..., Tensor], tuple[Tensor, ...]]:
    """The registered norm in float64 train mode, as a pure function of (input, *parameters), and its inputs."""
    try:
        layer = create_norm_layer(name, SHAPES[dims][1], dims=dims).double().train()
    except ConfigError as error:
        pytest.skip(f"{name} takes no {'feature vectors' if dims == 1 else 'maps'}: {error}")
    generator = torch.Generator().manual_seed(0)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().uniform_(0.5, 1.5, generator=generator).requires_grad_() for p in layer.parameters()]
    buffers = {n: b.clone() for n, b in layer.named_buffers()}
    x = (torch.randn(SHAPES[dims], dtype=torch.float64, generator=generator) * 2 + 1).requires_grad_()

    def function(x: Tensor, *parameters: Tensor) -> Tensor:
        state = {**{n: b.clone() for n, b in buffers.items()}, **dict(zip(names, parameters, strict=True))}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return functional_call(layer, state, (x,))

    return layer, function, (x, *params)


def check_first_derivatives(name: str, dims: int) -> None:
    layer, function, inputs = pure_norm(name, dims)
    if reason := "; ".join(surrogate_gradients(layer).values()):
        assert not gradient_matches_a_finite_difference(function, inputs), (
            f"{name} declares a surrogate gradient, yet its gradient is the derivative here: is the declaration stale?"
        )
        pytest.skip(f"{name}: surrogate gradient by design: {reason}")
    assert gradcheck(function, inputs, fast_mode=True)


def check_second_derivatives(name: str, dims: int) -> None:
    layer, function, inputs = pure_norm(name, dims)
    if reason := "; ".join(first_order_only(layer).values()):
        with pytest.raises(RuntimeError):
            gradgradcheck(function, inputs, fast_mode=True)
        pytest.skip(f"{name}: no second derivatives: {reason}")
    if reason := "; ".join(surrogate_gradients(layer).values()):  # its first-order check shows the mismatch
        pytest.skip(f"{name}: second derivatives of a surrogate gradient: {reason}")
    assert gradgradcheck(function, inputs, fast_mode=True)


def gradient_matches_a_finite_difference(function: Callable[..., Tensor], inputs: tuple[Tensor, ...]) -> bool:
    """Whether autograd's derivative of a random projection of ``function`` along a random direction
    matches a central difference: gradcheck's fast mode, without its slow rerun to explain a mismatch."""
    generator = torch.Generator().manual_seed(1)
    directions = [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in inputs]
    output = function(*inputs)
    weights = torch.randn(output.shape, dtype=output.dtype, generator=generator)
    grads = torch.autograd.grad((output * weights).sum(), inputs)
    analytic = sum((g * d).sum() for g, d in zip(grads, directions, strict=True))
    step = 1e-6
    with torch.no_grad():
        plus, minus = ((function(*(t + s * d for t, d in zip(inputs, directions, strict=True))) * weights).sum()
                       for s in (step, -step))
    return bool(torch.isclose(analytic, (plus - minus) / (2 * step), rtol=1e-3, atol=1e-5))


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("name", available_norms())
def test_gradcheck(name, dims):
    check_first_derivatives(name, dims)


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("name", available_norms())
def test_gradgradcheck(name, dims):
    check_second_derivatives(name, dims)


def test_batch_renorm_is_exact_where_r_and_d_are_clipped():
    """With r and d at their limits they are locally constant, so the surrogate is the derivative."""
    layer = create_norm_layer("batch_renorm", 3, dims=2).double()
    with torch.no_grad():
        layer.running_mean.fill_(-1000.0)  # d = (mu_B - mu) / sigma ~ 10 > d_max = 5
        layer.running_var.fill_(1e4)  # r = sigma_B / sigma ~ 0.02 < 1 / r_max
    x = (torch.randn(SHAPES[2], dtype=torch.float64) * 2 + 1).requires_grad_()
    buffers = {n: b.clone() for n, b in layer.named_buffers()}

    def function(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        state = {**{n: b.clone() for n, b in buffers.items()}, "weight": weight, "bias": bias}
        return functional_call(layer, state, (x,))

    inputs = (x, *(p.detach().clone().uniform_(0.5, 1.5).requires_grad_() for p in layer.parameters()))
    assert gradcheck(function, inputs, fast_mode=True) and gradgradcheck(function, inputs, fast_mode=True)


def hessian_vector_product(norm: str) -> Tensor:
    """H v of a cross-entropy loss w.r.t. all parameters of a small float64 MLP with ``norm`` (same seeds for all)."""
    torch.manual_seed(0)
    model = MLP(input_shape=(5,), num_classes=3, depth=2, width=6, activation="tanh", norm=norm).double()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)  # gamma and beta away from 1 and 0
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    params = list(model.parameters())
    vector = [torch.randn_like(p) for p in params]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
    return torch.cat([h.flatten() for h in torch.autograd.grad(grads, params, vector)])


def test_mlp_hessian_vector_product_through_bn_manual_matches_torch_batchnorm():
    reference, manual = hessian_vector_product("bn"), hessian_vector_product("bn_manual")
    assert ((manual - reference).norm() / reference.norm()).item() < 1e-10


class _FirstOrderCentre(torch.autograd.Function):
    """``x - mean(x)`` over the batch with a hand-written backward that autograd cannot differentiate."""

    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        return x - x.mean(0, keepdim=True)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):  # noqa: ANN001, ANN205
        return dy - dy.mean(0, keepdim=True)


class FirstOrderCentring(nn.Module):
    """A user's norm declaring that it has no second derivatives."""

    normzoo_norm = True
    first_order_only = "its backward is a hand-written once_differentiable Function."

    def __init__(self, num_features: int, dims: int = 2) -> None:
        super().__init__()
        self.num_features, self.dims = num_features, dims

    def forward(self, x: Tensor) -> Tensor:
        return _FirstOrderCentre.apply(x)


def test_a_norm_without_second_derivatives_says_so_and_is_skipped_with_its_reason(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    register_norm("first_order_centring", FirstOrderCentring)
    model = nn.Sequential(nn.Linear(3, 3), create_norm_layer("first_order_centring", 3, dims=1))
    assert first_order_only(model) == {"1": FirstOrderCentring.first_order_only}
    assert first_order_only(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))) == {}
    check_first_derivatives("first_order_centring", 1)
    with pytest.raises(pytest.skip.Exception, match="first_order_centring: no second derivatives: its backward"):
        check_second_derivatives("first_order_centring", 1)


def test_batch_renorm_declares_its_surrogate_gradient():
    model = nn.Sequential(nn.Linear(3, 3), create_norm_layer("batch_renorm", 3, dims=1))
    assert list(surrogate_gradients(model)) == ["1"]
    assert "r and d" in surrogate_gradients(model)["1"]
    assert surrogate_gradients(create_norm_layer("bn_manual", 3)) == {}
