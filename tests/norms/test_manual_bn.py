"""bn_manual: gradcheck, and equality with nn.BatchNorm over shapes, momenta and modes."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from normzoo.norms import ManualBatchNorm
from normzoo.norms.manual_bn import BatchNormFunction

SHAPES = {1: [(2, 3), (7, 5), (64, 16)], 2: [(2, 3, 1, 2), (4, 5, 3, 3), (8, 2, 7, 5)]}


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_float64(shape, affine):
    torch.manual_seed(0)
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 1).requires_grad_()
    weight = (torch.rand(shape[1], dtype=torch.float64) + 0.5).requires_grad_() if affine else None
    bias = torch.randn(shape[1], dtype=torch.float64).requires_grad_() if affine else None
    inputs = (x, weight, bias) if affine else (x,)

    def function(x, weight=None, bias=None):
        return BatchNormFunction.apply(x, weight, bias, 1e-5, None)[0]

    assert torch.autograd.gradcheck(function, inputs)


CASES = [
    (dims, shape, momentum, affine, track)
    for dims in (1, 2)
    for shape in SHAPES[dims]
    for momentum, affine, track in itertools.product((0.1, 0.5, None), (True, False), (True, False))
]


def assert_relative_close(actual, expected, rtol=1e-5):
    """Relative error at the tensor's scale: torch's eval BN folds to x * a + b, which cancels
    catastrophically where x ~ mean, so an element-wise relative test would judge torch's rounding."""
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


@pytest.mark.parametrize(("case", "dims", "shape", "momentum", "affine", "track"),
                         [(i, *c) for i, c in enumerate(CASES)])
def test_matches_torch_batchnorm(case, dims, shape, momentum, affine, track):
    torch.manual_seed(case)
    reference = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(
        shape[1], momentum=momentum, affine=affine, track_running_stats=track
    ).double()
    manual = ManualBatchNorm(shape[1], dims, momentum=momentum, affine=affine, track_running_stats=track).double()
    if affine:
        with torch.no_grad():
            reference.weight.uniform_(0.5, 2)
            reference.bias.normal_()
        manual.load_state_dict(reference.state_dict())
    for mode in ("train", "train", "train", "eval", "train", "eval"):
        reference.train(mode == "train")
        manual.train(mode == "train")
        x = torch.randn(shape, dtype=torch.float64) * 3 + 2
        x_ref, x_man = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ref, y_man = reference(x_ref), manual(x_man)
        assert_relative_close(y_man, y_ref)
        upstream = torch.randn_like(y_ref)
        y_ref.backward(upstream)
        y_man.backward(upstream)
        assert_relative_close(x_man.grad, x_ref.grad)
        if affine:
            assert_relative_close(manual.weight.grad, reference.weight.grad)
            assert_relative_close(manual.bias.grad, reference.bias.grad)
        if track:
            assert_relative_close(manual.running_mean, reference.running_mean)
            assert_relative_close(manual.running_var, reference.running_var)
            assert manual.num_batches_tracked == reference.num_batches_tracked


def test_cumulative_average_with_momentum_none():
    layer = ManualBatchNorm(3, dims=1, momentum=None).double()
    batches = [torch.randn(10, 3, dtype=torch.float64) * (i + 1) for i in range(4)]
    for batch in batches:
        layer(batch)
    torch.testing.assert_close(layer.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
    torch.testing.assert_close(layer.running_var, torch.stack([b.var(0) for b in batches]).mean(0))


def test_the_tutorials_boxed_formula_is_wrong():
    """gamma/(sigma*sqrt(m)) * (sqrt(m)*dy - dbeta - xhat*dgamma) differs from autograd; ours does not."""
    torch.manual_seed(1)
    m = 16
    x = (torch.randn(m, 4, dtype=torch.float64) * 2 + 1).requires_grad_()
    gamma = torch.rand(4, dtype=torch.float64) + 0.5
    beta = torch.randn(4, dtype=torch.float64)
    dy = torch.randn(m, 4, dtype=torch.float64)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    sigma = torch.sqrt(var + 1e-5)
    y = gamma * (x - mean) / sigma + beta  # the definition, differentiated by autograd
    (autograd_dx,) = torch.autograd.grad(y, x, dy)

    xhat = ((x - mean) / sigma).detach()
    dbeta, dgamma = dy.sum(0), (dy * xhat).sum(0)
    boxed = gamma / (sigma.detach() * m**0.5) * (m**0.5 * dy - dbeta - xhat * dgamma)
    derived = gamma / (m * sigma.detach()) * (m * dy - dbeta - xhat * dgamma)

    torch.testing.assert_close(derived, autograd_dx)
    assert (boxed - autograd_dx).abs().max() > 0.1
    x_function = x.detach().clone().requires_grad_()
    y_function = BatchNormFunction.apply(x_function, gamma, beta, 1e-5, None)[0]
    y_function.backward(dy)
    torch.testing.assert_close(x_function.grad, autograd_dx)
