"""Noisy BN (Santurkar et al. 2018): noise after BN, redrawn every step, absent in eval."""

from __future__ import annotations

import torch
from torch import nn

from normzoo.norms import BatchNoise, NoisyBatchNorm, create_norm_layer


def draw_shift_and_scale(noise: BatchNoise, shape, seed: int):
    """Recover one step's per-element (m, s): the same RNG draws applied to 0 and to 1."""
    torch.manual_seed(seed)
    shift = noise(torch.zeros(shape))
    torch.manual_seed(seed)
    scale = noise(torch.ones(shape)) - shift
    return shift, scale


def test_noise_has_the_configured_mean_and_scale_ranges():
    noise = BatchNoise().train()
    for seed in range(20):
        shift, scale = draw_shift_and_scale(noise, (256, 64), seed)
        mu_t = shift.mean()
        assert -0.5 - 0.01 <= mu_t <= 0.5 + 0.01
        # per element, m ~ U(mu_t - 0.1, mu_t + 0.1): a band of width 0.2 around one centre
        assert shift.max() - shift.min() <= 0.2 + 1e-5
        assert shift.max() - shift.min() > 0.19
        # per element, s ~ N(sigma_t, 0.1^2) with sigma_t in [1, 1.25]
        assert 1.0 - 0.01 <= scale.mean() <= 1.25 + 0.01
        assert abs(scale.std() - 0.1) < 0.01


def test_noise_changes_at_every_step():
    noise = BatchNoise().train()
    torch.manual_seed(0)
    zeros = torch.zeros(1000)
    means = [noise(zeros).mean().item() for _ in range(10)]
    assert len({round(m, 4) for m in means}) == 10
    assert max(means) - min(means) > 0.2  # the per-step mean itself moves, not just the elements


def test_noise_is_absent_in_eval():
    layer = NoisyBatchNorm(8, dims=2).train()
    x = torch.randn(16, 8, 4, 4)
    layer(x)  # one training step updates the running statistics
    layer.eval()
    torch.testing.assert_close(layer(x), layer.bn(x))


def test_noise_follows_batchnorm_in_training():
    torch.manual_seed(0)
    layer = create_norm_layer("noisy_bn", 4, dims=1).train()
    x = torch.randn(512, 4) * 5 + 3
    y = layer(x)
    reference = nn.BatchNorm1d(4).train()(x)  # ~N(0, 1) per feature
    assert not torch.allclose(y, reference)
    # y = s * bn(x) + m: per-feature std is about sigma_t (>= 1), mean about mu_t (|.| <= 0.6)
    assert (y.mean(0).abs() <= 0.65).all()
    assert (y.std(0) > 0.9).all()


def test_noise_survives_sync_batchnorm_conversion():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), NoisyBatchNorm(8))
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1].bn, nn.SyncBatchNorm)
    assert isinstance(converted[1].noise, BatchNoise)
