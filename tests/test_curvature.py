"""normzoo.curvature against the dense Hessian of a tiny MLP (float64, train mode, BN on batch statistics).

The oracle is ``torch.autograd.functional.hessian`` of the loss as a function of the flat parameter
vector, on the same batch. Lanczos gets the top eigenvalue to 1% in at most 20 products. Hutchinson's
error is statistical: its standard deviation per probe is ``sqrt(2 * sum_{i != j} H_ij^2)``, which for
these networks is of the order of the trace itself, so 1% takes tens of thousands of probes (the test
states how many and asserts they suffice at 3 standard errors); the estimate through Hessian-vector
products equals the one through the dense matrix probe for probe, so the two together check both.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from normzoo.curvature import HessianOperator, flatten, hutchinson_trace, hvp, top_eigenvalue, unflatten
from normzoo.models import MLP

NORMS = ["bn", "ln", "none"]  # bn_manual is left out: its second derivatives are being fixed

TRACE_PROBES = 60_000
"""Enough for 3 standard errors under 1% of the trace for each of the three networks (at most 42,000)."""


def tiny_mlp(norm: str) -> tuple[nn.Module, Tensor, Tensor]:
    """2 inputs -> 3 sigmoid units (with the norm) -> 4 classes: 28 to 31 parameters; a batch of 64."""
    torch.manual_seed(1)
    model = MLP(input_shape=(2,), num_classes=4, depth=1, width=3, norm=norm, activation="sigmoid")
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 2, generator=generator, dtype=torch.float64) * 3
    return model.double().train(), x, torch.randint(0, 4, (64,), generator=generator)


def dense_hessian(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    names, params = zip(*model.named_parameters(), strict=True)

    def loss(flat: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, dict(zip(names, unflatten(flat, params), strict=True)), (x,)), y)

    return torch.autograd.functional.hessian(loss, flatten(params).detach())


def operator(model: nn.Module, x: Tensor, y: Tensor) -> HessianOperator:
    return HessianOperator(lambda: F.cross_entropy(model(x), y), list(model.parameters()))


@pytest.fixture(scope="module", params=NORMS)
def problem(request) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    model, x, y = tiny_mlp(request.param)
    return model, x, y, dense_hessian(model, x, y)


def test_products_match_the_dense_hessian(problem):
    model, x, y, hessian = problem
    params = list(model.parameters())
    v = torch.randn(hessian.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    product = flatten(hvp(lambda: F.cross_entropy(model(x), y), params, unflatten(v, params)))
    tol = 1e-10 * hessian.abs().max()
    assert (product - hessian @ v).abs().max() < tol
    op = operator(model, x, y)
    block = torch.randn(5, op.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert (op.matvec(block) - block @ hessian).abs().max() < tol  # five at once, one vmapped backward
    first = range(params[0].numel())  # the first layer's weight alone
    u = v[: len(first)]
    assert (op.block([0])(u) - hessian[: len(first), : len(first)] @ u).abs().max() < tol


def test_lanczos_finds_the_top_eigenvalue_within_1_percent(problem):
    model, x, y, hessian = problem
    eigenvalues = torch.linalg.eigvalsh(hessian)
    op = operator(model, x, y)
    estimate = top_eigenvalue(op.matvec, op.dim, generator=torch.Generator().manual_seed(0), iterations=20,
                              tol=1e-3, dtype=torch.float64)
    assert estimate.converged and estimate.iterations <= 20
    assert estimate.value == pytest.approx(eigenvalues[-1].item(), rel=1e-2)
    assert (eigenvalues - estimate.value).abs().min() <= estimate.residual + 1e-12  # the residual bound holds
    again = top_eigenvalue(op.matvec, op.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert again == estimate  # deterministic given the generator
    names = [name for name, _ in model.named_parameters()]
    index = names.index("blocks.0.linear.weight")  # the restricted Hessian of the first layer's weight
    start = sum(p.numel() for p in op.params[:index])
    end = start + op.params[index].numel()
    restricted = top_eigenvalue(op.block([index]), end - start, generator=torch.Generator().manual_seed(0),
                                dtype=torch.float64)
    exact = torch.linalg.eigvalsh(hessian[start:end, start:end])[-1].item()
    assert restricted.value == pytest.approx(exact, rel=1e-2)


def test_hutchinson_estimates_the_trace_within_1_percent(problem):
    model, x, y, hessian = problem
    trace = hessian.trace().item()
    off_diagonal = hessian.pow(2).sum() - hessian.diagonal().pow(2).sum()
    stderr = math.sqrt(2 * off_diagonal.item() / TRACE_PROBES)  # the estimator's, in theory
    assert 3 * stderr < 0.01 * abs(trace)  # so 1% is no luck of the seed

    def dense(z: Tensor) -> Tensor:
        return z @ hessian

    estimate = hutchinson_trace(dense, hessian.shape[0], generator=torch.Generator().manual_seed(0),
                                probes=TRACE_PROBES, batch=TRACE_PROBES, dtype=torch.float64)
    assert estimate.value == pytest.approx(trace, rel=1e-2)
    assert estimate.stderr == pytest.approx(stderr, rel=0.05)
    op = operator(model, x, y)
    for batch in (1, 4):  # through Hessian-vector products: the same samples, probe for probe
        options = dict(probes=8, batch=batch, dtype=torch.float64)
        through_products = hutchinson_trace(op.matvec, op.dim, generator=torch.Generator().manual_seed(5), **options)
        through_matrix = hutchinson_trace(dense, op.dim, generator=torch.Generator().manual_seed(5), **options)
        assert through_products.value == pytest.approx(through_matrix.value, rel=1e-9, abs=1e-12)
        assert through_products.stderr == pytest.approx(through_matrix.stderr, rel=1e-9)


def test_bad_arguments_are_refused():
    identity = lambda v: v  # noqa: E731
    with pytest.raises(ValueError, match="iterations >= 1"):
        top_eigenvalue(identity, 3, generator=torch.Generator(), iterations=0)
    with pytest.raises(ValueError, match="probes, batch and dim >= 1"):
        hutchinson_trace(identity, 3, generator=torch.Generator(), probes=0)
