"""BatchNorm with one value per channel in training: a clear error naming the layer."""

from __future__ import annotations

import pytest
import torch

from normzoo.models import MLP, ResNet
from normzoo.norms import BatchStatisticsError, guard_batch_statistics


def test_batch_of_one_names_the_layer_and_the_fixes():
    model = MLP(input_shape=(5,), num_classes=2, depth=2, width=4, norm="bn")
    guard_batch_statistics(model)
    with pytest.raises(BatchStatisticsError, match=r"'blocks\.0\.norm' \(BatchNorm1d\).*batch size of 2.*ln, gn"):
        model(torch.randn(1, 5))


def test_noisy_bn_inner_layer_is_guarded():
    model = MLP(input_shape=(5,), num_classes=2, depth=1, width=4, norm="noisy_bn")
    guard_batch_statistics(model)
    with pytest.raises(BatchStatisticsError, match=r"'blocks\.0\.norm\.bn'"):
        model(torch.randn(1, 5))


def test_guard_allows_what_batchnorm_can_do():
    model = ResNet("resnet20", input_shape=(3, 8, 8), num_classes=2)
    guard_batch_statistics(model)
    model(torch.randn(1, 3, 8, 8))  # one image still has H x W values per channel
    mlp = MLP(input_shape=(5,), num_classes=2, depth=1, width=4)
    guard_batch_statistics(mlp)
    mlp.eval()(torch.randn(1, 5))  # eval uses running statistics


def test_last_spatial_stage_of_one_pixel_is_caught():
    model = ResNet("resnet20", input_shape=(3, 3, 3), num_classes=2)
    guard_batch_statistics(model)
    with pytest.raises(BatchStatisticsError, match="stages"):
        model(torch.randn(1, 3, 3, 3))


def test_instance_norm_on_one_pixel_maps_names_the_layer():
    from normzoo.models import VGG

    model = VGG("vgg11", input_shape=(3, 16, 16), num_classes=2, norm="in")
    guard_batch_statistics(model)
    with pytest.raises(BatchStatisticsError, match=r"InstanceNorm layer 'features\.\d+\.norm'.*1x1.*pad_to"):
        model.eval()(torch.randn(2, 3, 16, 16))
