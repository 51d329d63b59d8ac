"""recalibrate_bn(estimator="batch_average"): precise BN, the average of per-batch statistics in training mode.

Oracles: the same averages computed by hand in float64 with plain tensor operations; a fake
``reduce`` standing for two processes with identical data.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normzoo.errors import ConfigError, DataError
from normzoo.norms import recalibrate as recalibrate_module
from normzoo.norms import recalibrate_bn
from tests.norms.norm_checks import bn_buffers, no_hooks_anywhere


def model_and_batches() -> tuple[nn.Sequential, list[Tensor]]:
    """Linear-BN-ReLU-Linear-BN in float64 with stale statistics; 5 batches (the last one smaller), mean 5."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3), nn.BatchNorm1d(3)).double()
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.normal_()
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
    x = torch.randn(38, 4, dtype=torch.float64) * 3 + 5
    return model, list(x.split(8))


def by_hand(model: nn.Sequential, batches: list[Tensor], copies: int = 1) -> list[tuple[Tensor, Tensor]]:
    """Per BN layer: the average over batches of the batch mean and unbiased variance, in training mode.

    ``copies`` > 1: each batch is normalized as the union of that many copies of it (a synced layer).
    """
    sums = [[0.0, 0.0], [0.0, 0.0]]
    for x in batches:
        h = x
        for layer_index, (linear, bn) in enumerate([(model[0], model[1]), (model[3], model[4])]):
            h = F.linear(h, linear.weight, linear.bias)
            mean, biased = h.mean(0), h.var(0, correction=0)
            n = len(h) * copies
            sums[layer_index][0] = sums[layer_index][0] + mean
            sums[layer_index][1] = sums[layer_index][1] + biased * n / (n - 1)
            h = F.relu((h - mean) / torch.sqrt(biased + bn.eps) * bn.weight + bn.bias)
    return [(mean / len(batches), var / len(batches)) for mean, var in sums]


def assert_stats(model: nn.Sequential, expected: list[tuple[Tensor, Tensor]]) -> None:
    for bn, (mean, var) in zip((model[1], model[4]), expected, strict=True):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12)


def test_the_average_of_training_batch_statistics_matches_a_float64_computation_by_hand():
    model, batches = model_and_batches()
    model.train()
    expected = by_hand(model, batches)
    tracked = [int(model[i].num_batches_tracked) for i in (1, 4)]

    recalibrate_bn(model, iter(batches), estimator="batch_average")  # one pass: a one-shot iterator will do

    assert_stats(model, expected)
    assert [int(model[i].num_batches_tracked) for i in (1, 4)] == [t + 5 for t in tracked]
    assert all(m.training for m in model.modules()) and no_hooks_anywhere(model)
    # the population estimator pools the batches and runs in eval mode: another number
    assert not torch.allclose(recalibrate_bn(model, batches)[4].running_var, expected[1][1], rtol=1e-3)


def test_a_layer_in_eval_mode_keeps_its_statistics_and_is_not_averaged():
    model, batches = model_and_batches()
    model.train()
    model[4].eval()  # frozen in training: it normalizes with its running statistics
    frozen = {key: value for key, value in bn_buffers(model).items() if key.startswith("4.")}

    recalibrate_bn(model, batches, num_batches=2, estimator="batch_average")

    torch.testing.assert_close(model[1].running_mean, by_hand(model, batches[:2])[0][0], rtol=1e-12, atol=1e-12)
    assert all(torch.equal(bn_buffers(model)[key], value) for key, value in frozen.items())
    assert model[1].training and not model[4].training


def test_a_reduce_over_two_identical_processes(monkeypatch):
    """Layers that normalize per process: the same average. Synced layers: each batch is the union of both."""
    model, batches = model_and_batches()
    model.train()
    expected = by_hand(model, batches)

    recalibrate_bn(model, batches, estimator="batch_average", reduce=lambda t: 2 * t)
    assert_stats(model, expected)

    monkeypatch.setattr(recalibrate_module, "syncs_batch_statistics", lambda module: True)
    recalibrate_bn(model, batches, estimator="batch_average", reduce=lambda t: 2 * t)
    assert_stats(model, by_hand(model, batches, copies=2))

    monkeypatch.undo()  # the population estimator: the pooled statistics of both copies
    recalibrate_bn(model, batches, reduce=lambda t: 2 * t)
    x = torch.cat(batches * 2)
    with torch.no_grad():
        inputs = model[0](x)
    torch.testing.assert_close(model[1].running_mean, inputs.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model[1].running_var, inputs.var(0), rtol=1e-12, atol=1e-12)


def test_bad_settings_and_bad_data_change_nothing():
    model, batches = model_and_batches()
    model.train()
    with pytest.raises(ConfigError, match="estimator must be one of 'population', 'batch_average', got 'ema'"):
        recalibrate_bn(model, batches, estimator="ema")
    before = bn_buffers(model)
    batches[3] = batches[3].clone()
    batches[3][2, 1] = float("nan")
    with pytest.raises(DataError, match=r"'1' in training mode held non-finite .* batch index 3 .*no layer was"):
        recalibrate_bn(model, batches, estimator="batch_average")
    assert all(torch.equal(bn_buffers(model)[key], value) for key, value in before.items())
    assert no_hooks_anywhere(model)
