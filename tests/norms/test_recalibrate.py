"""recalibrate_bn: exact population statistics, layer by layer in forward order, any batch format."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, TensorDataset

from normzoo.errors import ConfigError, DataError
from normzoo.norms import NoisyBatchNorm, freeze_norm, recalibrate_bn
from tests.norms.norm_checks import bn_buffers, layers_of, no_hooks_anywhere

# --------------------------------------------------------------------------- helpers


def population_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and unbiased variance over all but dim 1, in float64."""
    channels = x.double().transpose(0, 1).reshape(x.shape[1], -1)
    return channels.mean(dim=1), channels.var(dim=1, correction=1)


def assert_stats(bn: _BatchNorm, mean: Tensor, var: Tensor) -> None:
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- recalibrate_bn


def linear_bn_model_and_data() -> tuple[nn.Sequential, Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([3.0, -2.0, 0.5, 10.0]))
    return model, torch.randn(1000, 5) * 3 + 2


def test_recalibrate_bn_sets_exact_population_statistics():
    model, x = linear_bn_model_and_data()
    loader = DataLoader(TensorDataset(x, torch.zeros(1000)), batch_size=64)  # 15 batches of 64, one of 40
    with torch.no_grad():
        mean, var = population_stats(F.linear(x.double(), model[0].weight.double(), model[0].bias.double()))

    recalibrate_bn(model, loader)

    assert_stats(model[1], mean, var)
    assert model[1].num_batches_tracked == 16


def test_recalibrate_bn_takes_plain_tensor_batches_and_num_batches():
    model, x = linear_bn_model_and_data()
    with torch.no_grad():
        mean, var = population_stats(model[0](x[:320]))

    recalibrate_bn(model, DataLoader(x, batch_size=64), num_batches=5)

    assert_stats(model[1], mean, var)
    assert model[1].num_batches_tracked == 5


class TwoConvBlocks(nn.Module):
    """Conv-BN-ReLU twice, the second block registered first: module order is not forward order."""

    def __init__(self) -> None:
        super().__init__()
        self.second = nn.Sequential(nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5), nn.ReLU())
        self.first = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))


def test_recalibrate_bn_goes_layer_by_layer_in_forward_order():
    torch.manual_seed(0)
    model = TwoConvBlocks()
    conv1, bn1 = model.first[0], model.first[1]
    conv2, bn2 = model.second[0], model.second[1]
    with torch.no_grad():  # stale statistics and a non-trivial affine, so the order matters
        for bn in (bn1, bn2):
            bn.running_mean.copy_(torch.randn_like(bn.running_mean))
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
            bn.weight.copy_(torch.rand_like(bn.weight) + 0.5)
            bn.bias.copy_(torch.randn_like(bn.bias))
    x = torch.randn(200, 3, 8, 8)

    def oracle(bn1_mean: Tensor, bn1_var: Tensor) -> tuple[Tensor, Tensor]:
        """Population statistics of bn2's input with bn1 in eval mode using the given statistics."""
        x1 = F.conv2d(x.double(), conv1.weight.double(), conv1.bias.double())
        scale = bn1.weight.double() / torch.sqrt(bn1_var + bn1.eps)
        h = F.relu((x1 - bn1_mean[:, None, None]) * scale[:, None, None] + bn1.bias.double()[:, None, None])
        return population_stats(F.conv2d(h, conv2.weight.double(), conv2.bias.double()))

    with torch.no_grad():
        mean1, var1 = population_stats(F.conv2d(x.double(), conv1.weight.double(), conv1.bias.double()))
        mean2, var2 = oracle(mean1, var1)
        stale_mean2, _ = oracle(bn1.running_mean.double(), bn1.running_var.double())
    assert not torch.allclose(stale_mean2, mean2, rtol=1e-2)  # the test can tell the orders apart

    recalibrate_bn(model, DataLoader(TensorDataset(x), batch_size=32))  # last batch of 8

    assert_stats(bn1, mean1, var1)
    assert_stats(bn2, mean2, var2)
    assert bn1.num_batches_tracked == bn2.num_batches_tracked == 7


def test_recalibrate_bn_restores_modes_and_removes_hooks():
    torch.manual_seed(0)
    model = TwoConvBlocks().train()
    model.second.eval()
    modes = {name: m.training for name, m in model.named_modules()}
    loader = DataLoader(torch.randn(20, 3, 8, 8), batch_size=10)

    recalibrate_bn(model, loader)

    assert {name: m.training for name, m in model.named_modules()} == modes
    assert modes["first.1"] and not modes["second.1"]
    assert no_hooks_anywhere(model)

    class FailingSecondPass:  # the order pass works, the first layer's pass breaks
        def __init__(self) -> None:
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            if self.passes > 1:
                raise RuntimeError("disk on fire")
            return iter(loader)

    with pytest.raises(RuntimeError, match="disk on fire"):
        recalibrate_bn(model, FailingSecondPass())
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert no_hooks_anywhere(model)


def test_recalibrate_bn_reaches_noisy_bn_inner_layers_without_noise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), NoisyBatchNorm(6, dims=1), nn.Linear(6, 4), NoisyBatchNorm(4, dims=1))
    model.train()  # in train mode the noise is on; recalibration must switch it off
    with torch.no_grad():
        model(torch.randn(32, 5) * 4)  # stale statistics in the first layer
    x = torch.randn(300, 5)

    with torch.no_grad():
        h = model[0](x)
        mean1, var1 = population_stats(h)
        bn1 = model[1].bn
        normalized = (h.double() - mean1) / torch.sqrt(var1 + bn1.eps) * bn1.weight.double() + bn1.bias.double()
        mean2, var2 = population_stats(F.linear(normalized, model[2].weight.double(), model[2].bias.double()))

    recalibrate_bn(model, DataLoader(x, batch_size=50))

    assert_stats(model[1].bn, mean1, var1)
    assert_stats(model[3].bn, mean2, var2)
    assert model[1].training and model[3].noise.training


def test_recalibrate_bn_refuses_an_exhausted_iterator():
    model, x = linear_bn_model_and_data()
    with pytest.raises(ConfigError, match="re-iterable"):
        recalibrate_bn(model, iter(DataLoader(x, batch_size=64)))


@pytest.mark.parametrize("key", ["bn_manual", "batch_renorm"])
def test_recalibrate_covers_normzoos_own_running_stats_layers(key):
    from normzoo.norms import create_norm_layer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), create_norm_layer(key, 4, dims=1))
    data = torch.randn(300, 5) * 2 + 1
    recalibrate_bn(model, torch.utils.data.DataLoader(data, batch_size=32))
    with torch.no_grad():
        inputs = model[0](data).double()
    torch.testing.assert_close(model[1].running_mean.double(), inputs.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model[1].running_var.double(), inputs.var(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("keys", [("label", "image"), ("image", "label")])
def test_recalibrate_bn_reads_dict_batches_by_key_in_any_order(keys):
    model, x = linear_bn_model_and_data()
    y = torch.zeros(len(x), dtype=torch.long)
    parts = {"image": x, "label": y}
    dict_batches = [{key: parts[key][i : i + 64] for key in keys} for i in range(0, len(x), 64)]
    reference = copy.deepcopy(model)

    recalibrate_bn(model, dict_batches)
    recalibrate_bn(reference, DataLoader(x, batch_size=64))

    assert bn_buffers(model).keys() == bn_buffers(reference).keys()
    for key, value in bn_buffers(reference).items():
        assert torch.equal(bn_buffers(model)[key], value), key


def test_recalibrate_bn_refuses_a_batch_without_a_recognisable_input():
    model, x = linear_bn_model_and_data()
    with pytest.raises(ConfigError, match=r"recalibrate_bn: .*'a', 'b'.*batches of input tensors"):
        recalibrate_bn(model, [{"a": x[:64], "b": x[:64]}])


class ConvNet(nn.Module):
    """A conv-BN-ReLU backbone and a conv-BN head: what a fine-tuning setup freezes the first of."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def frozen_state(model: nn.Module) -> dict[str, tuple]:
    """Per BN layer: mode, track_running_stats, requires_grad flags, pre-hooks and freeze handle."""
    return {
        name: (
            bn.training,
            bn.track_running_stats,
            [p.requires_grad for p in bn.parameters()],
            dict(bn._forward_pre_hooks),
            getattr(bn, "_normzoo_freeze_handle", None),
        )
        for name, bn in layers_of(model, _BatchNorm).items()
    }


@pytest.mark.parametrize("freeze", ["lightning", "normzoo"])
def test_recalibrate_bn_recalibrates_frozen_layers_and_keeps_them_frozen(freeze):
    from lightning.pytorch.callbacks import BaseFinetuning

    torch.manual_seed(0)
    model = ConvNet().train()
    conv1, bn1 = model.backbone[0], model.backbone[1]
    conv2, bn2 = model.head[0], model.head[1]
    with torch.no_grad():  # stale statistics and a non-trivial affine, so the hand computation is a real check
        for bn in (bn1, bn2):
            bn.running_mean.copy_(torch.randn_like(bn.running_mean))
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
            bn.weight.copy_(torch.rand_like(bn.weight) + 0.5)
            bn.bias.copy_(torch.randn_like(bn.bias))
    if freeze == "lightning":
        BaseFinetuning.freeze(model.backbone, train_bn=False)  # track_running_stats off, no gradients
        assert not bn1.track_running_stats and bn1.training
    else:
        freeze_norm(model)  # eval mode kept by a pre-hook, no gradients
        assert not bn1.training and not bn2.training
    state = frozen_state(model)
    modes = {name: m.training for name, m in model.named_modules()}
    x = torch.randn(200, 3, 8, 8) * 2 + 1

    with torch.no_grad():
        x1 = F.conv2d(x.double(), conv1.weight.double(), conv1.bias.double())
        mean1, var1 = population_stats(x1)
        scale = bn1.weight.double() / torch.sqrt(var1 + bn1.eps)
        h = F.relu((x1 - mean1[:, None, None]) * scale[:, None, None] + bn1.bias.double()[:, None, None])
        mean2, var2 = population_stats(F.conv2d(h, conv2.weight.double(), conv2.bias.double()))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every layer is reached: no warning
        recalibrate_bn(model, DataLoader(TensorDataset(x), batch_size=32))

    assert_stats(bn1, mean1, var1)
    assert_stats(bn2, mean2, var2)
    assert bn1.num_batches_tracked == bn2.num_batches_tracked == 7
    assert frozen_state(model) == state
    assert {name: m.training for name, m in model.named_modules()} == modes
    frozen = bn_buffers(model.backbone)
    with torch.no_grad():  # still frozen: a training-mode forward leaves the frozen statistics as they are
        model.train()(x[:16])
    for key, value in bn_buffers(model.backbone).items():
        assert torch.equal(value, frozen[key]), key


def test_recalibrate_bn_warns_with_the_paths_of_layers_the_forward_does_not_call():
    torch.manual_seed(0)
    model = TwoConvBlocks()
    model.spare = nn.BatchNorm2d(5)  # registered, never called
    before = bn_buffers(model)

    with pytest.warns(UserWarning, match=r"1 BatchNorm layer\(s\).*'spare'"):
        recalibrate_bn(model, DataLoader(torch.randn(20, 3, 8, 8), batch_size=10))

    assert all(torch.equal(bn_buffers(model)[k], before[k]) for k in before if k.startswith("spare."))
    assert model.first[1].num_batches_tracked == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("row", [25, 3])  # batch index 2, or the first batch (whose mean is the shift)
def test_recalibrate_bn_refuses_non_finite_inputs_and_keeps_the_statistics(bad, row):
    torch.manual_seed(0)
    model = TwoConvBlocks()
    x = torch.randn(40, 3, 8, 8)
    x[row, 1, 4, 4] = bad
    before = bn_buffers(model)

    with pytest.raises(DataError, match=rf"'first\.1'.*non-finite.*batch index {row // 10} .*before that layer"):
        recalibrate_bn(model, DataLoader(x, batch_size=10))

    after = bn_buffers(model)
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert no_hooks_anywhere(model)


def test_recalibrate_bn_names_the_first_layer_whose_input_turns_non_finite():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        model[2].weight[0, 0] = float("inf")  # the model, not the data, makes the second layer's input infinite
    x = torch.randn(60, 3)

    with pytest.raises(DataError, match=r"'3'.*batch index 0"):
        recalibrate_bn(model, DataLoader(x, batch_size=20))

    with torch.no_grad():
        mean, var = population_stats(model[0](x))
    assert_stats(model[1], mean, var)  # recalibrated before the error: kept
    assert torch.equal(model[3].running_mean, torch.zeros(4)) and torch.equal(model[3].running_var, torch.ones(4))


def test_recalibrate_bn_is_exact_when_the_mean_dwarfs_the_spread():
    """Mean 1000, std 0.001: plain float64 sums of x and x**2 get the variance 5.7e-4 wrong."""
    generator = torch.Generator().manual_seed(0)
    x = 1000.0 + 0.001 * torch.randn(2048, 3, 2, 2, generator=generator, dtype=torch.float64)
    model = nn.Sequential(nn.BatchNorm2d(3)).double()
    recalibrate_bn(model, DataLoader(x, batch_size=256))
    mean, var = population_stats(x)
    torch.testing.assert_close(model[0].running_mean, mean, rtol=1e-14, atol=0.0)
    assert ((model[0].running_var - var).abs() / var).max() < 1e-8
