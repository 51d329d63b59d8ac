"""What kind of layer a module is: torch's norms, normzoo's, and a user's own norm declaring the protocol."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from normzoo.errors import BatchStatisticsError, ConfigError
from normzoo.norms import (
    bn_batch_size,
    cancels_bias,
    create_norm_layer,
    guard_batch_statistics,
    is_norm,
    keeps_mean_and_variance,
    norm_layers,
    replace_norm,
    slow_in_channels_last,
    uses_batch_statistics,
)
from normzoo.norms.introspect import features_and_dims


class CenterOnly(nn.Module):
    """A user's norm following the NormLayer protocol: batch-mean centring, no division."""

    normzoo_norm = True
    batch_statistics = True
    cancels_bias = True
    slow_channels_last = True

    def __init__(self, num_features: int, dims: int = 2) -> None:
        super().__init__()
        self.num_features, self.dims = num_features, dims

    def forward(self, x: Tensor) -> Tensor:
        return x - x.mean(dim=[0, *range(2, x.dim())], keepdim=True)


class Undeclared(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


# key: (is_norm, uses_batch_statistics, keeps_mean_and_variance, slow_in_channels_last)
EXPECTED = {
    "bn": (True, True, True, False),
    "noisy_bn": (True, False, False, False),  # as a whole; its inner BatchNorm answers for the statistics
    "bn_manual": (True, True, True, False),
    "batch_renorm": (True, True, True, False),
    "l2": (True, True, False, False),  # a running l_p scale, not a variance
    "frozen_bn": (True, False, False, False),
    "gn": (True, False, False, True),
    "in": (True, False, False, True),
    "ln": (True, False, False, True),  # on maps, GroupNorm with one group
    "rms": (True, False, False, False),
    "none": (False, False, False, False),
    "dyt": (True, False, False, False),
    "derf": (True, False, False, False),
    "frn": (True, False, False, False),
    "evonorm_b0": (True, True, True, False),
    "evonorm_s0": (True, False, False, False),
}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_each_question_for_the_built_in_norms(key):
    layer = create_norm_layer(key, 8)
    answers = (is_norm(layer), uses_batch_statistics(layer), keeps_mean_and_variance(layer),
               slow_in_channels_last(layer))
    assert answers == EXPECTED[key]


def test_a_declared_user_norm_gets_every_answer_from_its_class():
    layer = CenterOnly(4)
    assert is_norm(layer) and uses_batch_statistics(layer) and cancels_bias(layer) and slow_in_channels_last(layer)
    assert not keeps_mean_and_variance(layer)  # no running buffers
    assert features_and_dims(layer) == (4, 2)
    undeclared = Undeclared()
    assert not any(f(undeclared) for f in (is_norm, uses_batch_statistics, cancels_bias, slow_in_channels_last))


def test_the_norm_tools_treat_a_declared_user_norm_like_a_built_in_one():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), CenterOnly(4), nn.ReLU())
    assert [path for path, _ in norm_layers(model)] == ["1"]
    assert bn_batch_size(model.train(), per_rank=8) is not None  # counted as a batch-statistics layer
    guard_batch_statistics(model)
    with pytest.raises(BatchStatisticsError, match=r"'1' \(CenterOnly\)"):
        model(torch.randn(1, 3, 3, 3))
    assert isinstance(replace_norm(model, "gn", num_groups=2)[1], nn.GroupNorm)


def test_keeps_mean_and_variance_follows_the_buffers_and_tracking():
    frozen_torch_bn = nn.BatchNorm2d(4)
    frozen_torch_bn.track_running_stats = False  # Lightning's BaseFinetuning.freeze: still normalizes with them
    assert keeps_mean_and_variance(frozen_torch_bn)
    assert not keeps_mean_and_variance(nn.BatchNorm2d(4, track_running_stats=False))
    assert not keeps_mean_and_variance(create_norm_layer("bn_manual", 4, track_running_stats=False))
    assert not keeps_mean_and_variance(None)


def test_features_and_dims_refuses_layouts_the_registry_lacks():
    with pytest.raises(ConfigError, match="neither"):
        features_and_dims(nn.BatchNorm3d(4))

    class Incomplete(nn.Module):
        normzoo_norm = True

    with pytest.raises(ConfigError, match="num_features and dims"):
        features_and_dims(Incomplete())


def test_the_norms_with_running_statistics_are_found_by_asking_their_layers():
    from normzoo.norms.registry import norms_with_running_statistics

    names = norms_with_running_statistics()
    assert {"bn", "noisy_bn", "bn_manual", "batch_renorm", "ghost_bn", "evonorm_b0", "switch_norm"} == set(names)
    assert all(keeps_mean_and_variance(create_norm_layer(n, 4)) for n in set(names) - {"noisy_bn"})
