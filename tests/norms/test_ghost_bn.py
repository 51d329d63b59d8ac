"""ghost_bn against its oracle: a Python loop applying F.batch_norm to each chunk, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normzoo.errors import BatchStatisticsError, ConfigError
from normzoo.norms import (
    GhostBatchNorm,
    cancels_bias,
    create_norm_layer,
    is_norm,
    keeps_mean_and_variance,
    uses_batch_statistics,
)
from tests.norms.norm_checks import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 1e-5


def chunk_sizes(n: int, size: int) -> list[int]:
    """The documented rule, written out: chunks of ``size`` samples, the leftovers joining the last one."""
    chunks = max(1, n // size)
    return [size] * (chunks - 1) + [n - (chunks - 1) * size]


def oracle(x: Tensor, size: int, weight: Tensor | None, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, mean over chunks of chunk means, mean over chunks of unbiased chunk variances)``, chunk by chunk."""
    outputs, means, variances = [], [], []
    for chunk in x.split(chunk_sizes(len(x), size)):
        mean = torch.zeros(x.shape[1], dtype=x.dtype)
        var = torch.ones(x.shape[1], dtype=x.dtype)
        outputs.append(F.batch_norm(chunk, mean, var, weight, bias, training=True, momentum=1.0, eps=EPS))
        means.append(mean)  # momentum 1: the buffers now hold this chunk's mean and unbiased variance
        variances.append(var)
    return torch.cat(outputs), torch.stack(means).mean(0), torch.stack(variances).mean(0)


def assert_float64_close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10 * max(1.0, expected.abs().max().item()))


CASES = [  # (shape, virtual_batch_size): even splits, leftovers joining the last chunk, one chunk
    ((12, 3), 4), ((14, 3), 4), ((5, 3), 8), ((9, 3), 4),
    ((8, 2, 3, 3), 2), ((7, 2, 3, 3), 3), ((9, 2, 2, 3), 4), ((5, 2, 3, 2), 5),
]


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize(("shape", "size"), CASES)
def test_matches_a_loop_of_batch_norms_over_the_chunks(shape, size, momentum):
    torch.manual_seed(0)
    dims = 1 if len(shape) == 2 else 2
    layer = GhostBatchNorm(shape[1], dims, virtual_batch_size=size, momentum=momentum).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
        layer.bias.normal_()
    weight, bias = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
    running_mean, running_var = torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1], dtype=torch.float64)
    for step in range(1, 3):
        x = torch.randn(shape, dtype=torch.float64) * 3 + 2
        x_layer, x_loop = x.clone().requires_grad_(), x.clone().requires_grad_()
        y, (y_loop, chunk_mean, chunk_var) = layer(x_layer), oracle(x_loop, size, weight, bias)
        assert_float64_close(y, y_loop)
        upstream = torch.randn_like(y)
        y.backward(upstream)
        y_loop.backward(upstream)
        assert_float64_close(x_layer.grad, x_loop.grad)
        assert_float64_close(layer.weight.grad, weight.grad)
        assert_float64_close(layer.bias.grad, bias.grad)
        factor = 1 / step if momentum is None else momentum
        running_mean, running_var = running_mean.lerp(chunk_mean, factor), running_var.lerp(chunk_var, factor)
        assert_float64_close(layer.running_mean, running_mean)
        assert_float64_close(layer.running_var, running_var)
    x = torch.randn(shape, dtype=torch.float64)
    view = (1, -1) + (1,) * (x.dim() - 2)
    expected = (x - running_mean.view(view)) / torch.sqrt(running_var.view(view) + EPS) * weight.view(view)
    assert_float64_close(layer.eval()(x), expected + bias.view(view))  # eval: running statistics


def test_without_running_statistics_eval_batches_are_chunked_too():
    x = torch.randn(10, 3, 2, 2, dtype=torch.float64)
    layer = GhostBatchNorm(3, 2, virtual_batch_size=4, affine=False, track_running_stats=False).double().eval()
    assert_float64_close(layer(x), oracle(x, 4, None, None)[0])
    assert layer.running_mean is None


@pytest.mark.parametrize("shape", [(16, 5), (6, 4, 3, 3)])
@pytest.mark.parametrize("size_beyond_batch", [0, 10])
def test_one_chunk_is_torch_batchnorm(shape, size_beyond_batch):
    """virtual_batch_size = the batch size (or more) normalizes the whole batch: nn.BatchNorm, step by step."""
    torch.manual_seed(1)
    dims = 1 if len(shape) == 2 else 2
    reference = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(shape[1]).double()
    ghost = GhostBatchNorm(shape[1], dims, virtual_batch_size=shape[0] + size_beyond_batch).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 2)
        reference.bias.normal_()
    ghost.load_state_dict(reference.state_dict())
    for training in (True, True, False):
        reference.train(training), ghost.train(training)
        x = torch.randn(shape, dtype=torch.float64) * 3 + 2
        x_ref, x_ghost = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ref, y_ghost = reference(x_ref), ghost(x_ghost)
        assert_float64_close(y_ghost, y_ref)
        upstream = torch.randn_like(y_ref)
        y_ref.backward(upstream), y_ghost.backward(upstream)
        assert_float64_close(x_ghost.grad, x_ref.grad)
        for name in ("weight", "bias"):
            assert_float64_close(getattr(ghost, name).grad, getattr(reference, name).grad)
        for name in ("running_mean", "running_var"):
            assert_float64_close(getattr(ghost, name), getattr(reference, name))
        assert ghost.num_batches_tracked == reference.num_batches_tracked


@pytest.mark.parametrize("size", [0, 1, -4, 2.5, True, "8"])
def test_a_bad_virtual_batch_size_gets_one_clear_message(size):
    message = r"Norm 'ghost_bn' needs virtual_batch_size to be an integer >= 2.*got .*norm_kwargs"
    with pytest.raises(ConfigError, match=message):
        create_norm_layer("ghost_bn", 4, dims=2, virtual_batch_size=size)


def test_a_single_sample_is_a_batch_statistics_error():
    with pytest.raises(BatchStatisticsError, match="1 value per channel"):
        create_norm_layer("ghost_bn", 4, dims=1)(torch.randn(1, 4))


@pytest.mark.parametrize("n", [8, 10])  # one block of chunks, and two (leftovers)
def test_channels_last_in_channels_last_out(n):
    layer = create_norm_layer("ghost_bn", 4, dims=2, virtual_batch_size=4)
    x = torch.randn(n, 4, 3, 3)
    y = layer(x.to(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, layer(x))


def test_gradgradcheck_with_leftover_chunks():
    layer = GhostBatchNorm(2, 1, virtual_batch_size=3).double()
    x = (torch.randn(7, 2, dtype=torch.float64) * 2 + 1).requires_grad_()

    def function(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        state = {"weight": weight, "bias": bias, **{n: b.clone() for n, b in layer.named_buffers()}}
        return torch.func.functional_call(layer, state, (x,))

    weight = (torch.rand(2, dtype=torch.float64) + 0.5).requires_grad_()
    inputs = (x, weight, torch.randn(2, dtype=torch.float64).requires_grad_())
    assert torch.autograd.gradcheck(function, inputs) and torch.autograd.gradgradcheck(function, inputs)


def test_is_a_batch_statistics_norm_with_running_statistics_that_cancels_a_bias():
    layer = create_norm_layer("ghost_bn", 8, dims=2, virtual_batch_size=16)
    assert is_norm(layer) and uses_batch_statistics(layer) and keeps_mean_and_variance(layer) and cancels_bias(layer)
    assert (layer.num_features, layer.dims, layer.virtual_batch_size) == (8, 2, 16)
    assert "virtual_batch_size=16" in repr(layer)
