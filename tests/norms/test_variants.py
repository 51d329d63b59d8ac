"""The keys beyond the first six, each against its definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normzoo.norms import BatchRenorm, FrozenBatchNorm, LpBatchNorm, create_norm_layer


def test_ln_channel_is_layernorm_over_channels_at_each_position():
    x = torch.randn(3, 6, 4, 5) * 2 + 1
    layer = create_norm_layer("ln_channel", 6)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
        layer.bias.normal_()
    reference = nn.LayerNorm(6)
    reference.load_state_dict(layer.state_dict())
    expected = reference(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(layer(x), expected)
    assert isinstance(create_norm_layer("ln_channel", 6, dims=1), nn.LayerNorm)


@pytest.mark.parametrize("shape", [(4, 10), (2, 3, 5, 5)])
def test_rms_follows_its_formula(shape):
    x = torch.randn(shape) * 3
    layer = create_norm_layer("rms", shape[1], dims=len(shape) - 2 or 1)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
    dims = tuple(range(1, x.dim()))
    gain = layer.weight.view(1, -1, *([1] * (x.dim() - 2)))
    expected = x / torch.sqrt(x.pow(2).mean(dim=dims, keepdim=True) + 1e-6) * gain
    torch.testing.assert_close(layer(x), expected)


def test_batch_renorm_is_batchnorm_when_r_max_1_and_d_max_0():
    torch.manual_seed(0)
    renorm = BatchRenorm(4, dims=2, momentum=0.1, r_max=1.0, d_max=0.0)
    bn = nn.BatchNorm2d(4, momentum=0.1)
    for _ in range(5):  # running stats drift away from the batch stats; r, d stay clipped to 1, 0
        x = torch.randn(8, 4, 3, 3) * 4 + 3
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = renorm(xa), bn(xb)
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
        upstream = torch.randn_like(ya)
        ya.backward(upstream), yb.backward(upstream)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(renorm.running_mean, bn.running_mean)
    torch.testing.assert_close(renorm.running_var, bn.running_var)
    renorm.eval(), bn.eval()
    x = torch.randn(8, 4, 3, 3)
    torch.testing.assert_close(renorm(x), bn(x), rtol=1e-5, atol=1e-5)


def test_batch_renorm_corrects_towards_the_running_statistics():
    layer = BatchRenorm(2, dims=1, r_max=3.0, d_max=5.0)
    with torch.no_grad():
        layer.running_mean.fill_(1.0)
        layer.running_var.fill_(4.0)
    x = torch.randn(256, 2)
    y = layer(x)
    # xhat = (x - mu_B) / sigma_B * r + d with r = sigma_B / sigma, d = (mu_B - mu) / sigma: (x - mu) / sigma
    expected = (x - 1.0) / math.sqrt(4.0 + 1e-5)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)


def test_batch_renorm_warmup_ramps_the_limits():
    layer = BatchRenorm(2, dims=1, r_max=3.0, d_max=5.0, warmup_steps=10)
    assert [float(v) for v in layer.current_limits()] == [1.0, 0.0]
    layer.num_batches_tracked.fill_(5)
    assert [float(v) for v in layer.current_limits()] == [2.0, 2.5]
    layer.num_batches_tracked.fill_(50)
    assert [float(v) for v in layer.current_limits()] == [3.0, 5.0]


def test_bn_nostats_uses_batch_statistics_in_eval():
    layer = create_norm_layer("bn_nostats", 3, dims=1)
    x = torch.randn(10, 3) * 5 + 2
    train_out = layer(x)
    torch.testing.assert_close(layer.eval()(x), train_out)
    assert layer.running_mean is None


def test_frozen_bn_is_identity_from_scratch_and_freezes_a_trained_bn():
    x = torch.randn(4, 3, 2, 2)
    frozen = create_norm_layer("frozen_bn", 3)
    torch.testing.assert_close(frozen(x), x, rtol=1e-4, atol=1e-4)  # eps aside
    assert not list(frozen.parameters())
    bn = nn.BatchNorm2d(3)
    bn(torch.randn(16, 3, 4, 4) * 2 + 1)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
    frozen.load_state_dict(bn.state_dict())
    frozen.train()
    torch.testing.assert_close(frozen(x), bn.eval()(x))


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_lp_normalizations_divide_by_the_average_lp_norm(p):
    x = torch.randn(32, 3, 2, 2) * 4 + 1
    key = {1.0: "l1", 2.0: "l2", math.inf: "linf"}[p]
    layer = create_norm_layer(key, 3)
    y = layer(x)
    centred = x - x.mean(dim=(0, 2, 3), keepdim=True)
    if p == math.inf:
        scale = centred.abs().amax(dim=(0, 2, 3), keepdim=True)
    else:
        scale = centred.abs().pow(p).mean(dim=(0, 2, 3), keepdim=True).pow(1 / p)
    torch.testing.assert_close(y, centred / (scale + 1e-5), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.running_scale, 0.9 + 0.1 * scale.flatten(), rtol=1e-5, atol=1e-5)
    layer.eval()
    expected_eval = (x - layer.running_mean.view(1, -1, 1, 1)) / (layer.running_scale.view(1, -1, 1, 1) + 1e-5)
    torch.testing.assert_close(layer(x), expected_eval)


def test_l2_is_batchnorm_with_eps_outside_the_root():
    x = torch.randn(64, 5) * 3 + 2
    expected = F.batch_norm(x, None, None, training=True, eps=1e-12)  # torch refuses eps = 0
    torch.testing.assert_close(LpBatchNorm(5, dims=1, p=2, eps=0.0)(x), expected, rtol=1e-5, atol=1e-5)


def test_frozen_bn_loads_without_batch_counter():
    frozen = FrozenBatchNorm(2)
    frozen.load_state_dict(nn.BatchNorm2d(2).state_dict())  # num_batches_tracked is dropped, not an error


def test_lp_norms_keep_a_running_scale_with_batchstatnorms_update():
    layer = LpBatchNorm(3, dims=1, p=1, momentum=None)  # cumulative average, as BatchStatNorm folds it
    batches = [torch.randn(16, 3) * (i + 1) + i for i in range(3)]
    scales = [(b - b.mean(0)).abs().mean(0) for b in batches]
    for batch in batches:
        layer(batch)
    torch.testing.assert_close(layer.running_scale, torch.stack(scales).mean(0))
    torch.testing.assert_close(layer.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
    assert int(layer.num_batches_tracked) == 3
    assert set(layer.state_dict()) == {"weight", "bias", "running_mean", "running_scale", "num_batches_tracked"}
    layer.eval()(batches[0])  # eval leaves the running statistics alone
    assert int(layer.num_batches_tracked) == 3
    layer.reset_running_stats()
    assert torch.equal(layer.running_scale, torch.ones(3)) and int(layer.num_batches_tracked) == 0
