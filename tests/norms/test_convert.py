"""Norm conversion on existing models: replace_norm, freeze_norm/unfreeze_norm, recalibrate_bn."""

from __future__ import annotations

import copy
import pickle
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, TensorDataset

from normzoo.errors import ConfigError
from normzoo.models import MLP, MLPClassifier, ResNet
from normzoo.norms import BatchNoise, NoisyBatchNorm
from normzoo.norms.convert import freeze_norm, recalibrate_bn, replace_norm, unfreeze_norm

# --------------------------------------------------------------------------- helpers


def layers_of(model: nn.Module, kind: type | tuple[type, ...]) -> dict[str, nn.Module]:
    """The submodules of ``model`` that are instances of ``kind``, by path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, kind)}


def assert_trains_one_step(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """One SGD step gives a finite loss and changes every parameter that got a gradient."""
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss = F.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert "fc.weight" in changed and "conv1.weight" in changed
    assert len(changed) == len(before)


def snapshot(model: nn.Module) -> tuple[list[tuple[str, type]], dict[str, Tensor]]:
    """Module types by path and a copy of the state dict: what 'unchanged' compares."""
    types = [(name, type(m)) for name, m in model.named_modules()]
    return types, {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_snapshot(a, b) -> None:
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        assert torch.equal(a[1][key], b[1][key]), key


def bn_buffers(model: nn.Module) -> dict[str, Tensor]:
    """Copies of every BatchNorm running_mean / running_var / num_batches_tracked."""
    return {
        f"{name}.{buffer}": getattr(m, buffer).clone()
        for name, m in layers_of(model, _BatchNorm).items()
        for buffer in ("running_mean", "running_var", "num_batches_tracked")
    }


def population_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and unbiased variance over all but dim 1, in float64."""
    channels = x.double().transpose(0, 1).reshape(x.shape[1], -1)
    return channels.mean(dim=1), channels.var(dim=1, correction=1)


def assert_stats(bn: _BatchNorm, mean: Tensor, var: Tensor) -> None:
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-4, atol=1e-5)


def no_hooks_anywhere(model: nn.Module) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------- replace_norm


@pytest.fixture
def cifar_batch() -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    return torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))


def test_replace_norm_turns_torchvision_resnet18_into_group_norm(cifar_batch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    channels = {name: m.num_features for name, m in layers_of(model, nn.BatchNorm2d).items()}
    assert len(channels) == 20

    assert replace_norm(model, "gn") is model

    assert not layers_of(model, _BatchNorm)
    for name, count in channels.items():
        layer = model.get_submodule(name)
        assert type(layer) is nn.GroupNorm
        assert (layer.num_channels, layer.num_groups) == (count, 32)
    assert_trains_one_step(model, *cifar_batch)


def test_replace_norm_with_none_removes_every_norm(cifar_batch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    paths = list(layers_of(model, nn.BatchNorm2d))

    replace_norm(model, "none")

    assert not layers_of(model, _BatchNorm)
    assert all(type(model.get_submodule(name)) is nn.Identity for name in paths)
    assert_trains_one_step(model, *cifar_batch)


def test_replace_norm_swaps_normzoo_resnet_bn_for_ln():
    model = ResNet("resnet20", norm="bn")
    channels = {name: m.num_features for name, m in layers_of(model, nn.BatchNorm2d).items()}

    replace_norm(model, "ln")

    assert not layers_of(model, _BatchNorm)
    for name, count in channels.items():  # ln on conv maps is GroupNorm with one group
        layer = model.get_submodule(name)
        assert (type(layer), layer.num_groups, layer.num_channels) == (nn.GroupNorm, 1, count)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_replace_norm_replaces_the_noisy_bn_wrapper_as_a_whole():
    model = MLP(input_shape=(6,), num_classes=3, depth=2, width=8, norm="noisy_bn")
    paths = list(layers_of(model, NoisyBatchNorm))
    assert paths == ["blocks.0.norm", "blocks.1.norm"]

    replace_norm(model, "bn")

    assert all(type(model.get_submodule(name)) is nn.BatchNorm1d for name in paths)
    assert not layers_of(model, (NoisyBatchNorm, BatchNoise))
    assert model(torch.randn(4, 6)).shape == (4, 3)


def test_replace_norm_honours_the_normzoo_norm_declaration():
    class Scaled(nn.Module):  # a user's norm: BN inside, declared with the class attribute
        normzoo_norm = True

        def __init__(self, num_features: int) -> None:
            super().__init__()
            self.num_features, self.dims = num_features, 1
            self.inner = nn.BatchNorm1d(num_features)

        def forward(self, x: Tensor) -> Tensor:
            return 2 * self.inner(x)

    model = nn.Sequential(nn.Linear(3, 5), Scaled(5))
    replace_norm(model, "ln")
    assert type(model[1]) is nn.LayerNorm and model[1].normalized_shape == (5,)


def test_replace_norm_keeps_device_dtype_and_mode():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).double().eval()
    replace_norm(model, "gn", num_groups=4)
    assert model[1].weight.dtype == torch.float64
    assert not model[1].training


def test_replace_norm_refuses_in_on_feature_vectors_and_changes_nothing():
    model = MLP(input_shape=(6,), num_classes=3, depth=2, width=8, norm="bn")
    before = snapshot(model)

    with pytest.raises(ConfigError, match=r"Layer 'blocks\.0\.norm' \(BatchNorm1d\): Norm 'in'"):
        replace_norm(model, "in")

    assert_same_snapshot(before, snapshot(model))


def test_replace_norm_refuses_groups_that_do_not_divide_before_swapping_anything():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 64, 3), nn.BatchNorm2d(64))
    before = snapshot(model)

    # 3 groups fit the first layer (6 channels), not the second (64): nothing may be swapped
    with pytest.raises(ConfigError, match=r"Layer '4' \(BatchNorm2d\).*64 channels into 3 groups"):
        replace_norm(model, "gn", num_groups=3)

    assert_same_snapshot(before, snapshot(model))


def test_replace_norm_warns_only_when_bn_statistics_were_learned():
    fresh = ResNet("resnet20", norm="bn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replace_norm(fresh, "gn", num_groups=8)

    trained = ResNet("resnet20", norm="bn").train()
    trained(torch.randn(4, 3, 16, 16))  # one training forward updates the running statistics
    with pytest.warns(UserWarning, match="learned BN statistics") as record:
        replace_norm(trained, "gn", num_groups=8)
    assert len([w for w in record if "statistics" in str(w.message)]) == 1


# --------------------------------------------------------------------------- freeze_norm


def make_classifier_with_learned_stats() -> MLPClassifier:
    torch.manual_seed(0)
    model = MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=8, norm="bn").train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 6) * 2 + 1)
    return model


def random_loader() -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(24, 6, generator=generator), torch.randint(0, 3, (24,), generator=generator))
    return DataLoader(data, batch_size=8)


@pytest.mark.filterwarnings("ignore:.*module\\(s\\) in eval mode at the start of training")  # the frozen BNs
@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_freeze_norm_keeps_bn_fixed_through_lightning_training(trainer_kwargs):
    model = make_classifier_with_learned_stats()
    freeze_norm(model)
    buffers = bn_buffers(model)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert all(not m.weight.requires_grad for m in layers_of(model, _BatchNorm).values())

    trainer = L.Trainer(**trainer_kwargs(max_steps=3, limit_val_batches=0, num_sanity_val_steps=0))
    trainer.fit(model, random_loader())

    assert trainer.global_step == 3
    for key, value in bn_buffers(model).items():
        assert torch.equal(value, buffers[key]), key
    for name, p in model.named_parameters():
        assert torch.equal(p, params[name]) == (".norm." in name), name  # only the Linear layers learned


def test_frozen_bn_stays_in_eval_after_model_train():
    model = make_classifier_with_learned_stats()
    freeze_norm(model)
    buffers = bn_buffers(model)
    seen_modes = []
    norm = model.backbone.blocks[0].norm
    norm.register_forward_hook(lambda module, inputs, output: seen_modes.append(module.training))

    model.train()
    assert norm.training  # train() reaches it; the hook undoes that at its next forward
    model(torch.randn(8, 6))

    assert seen_modes == [False]
    for key, value in bn_buffers(model).items():
        assert torch.equal(value, buffers[key]), key


def test_unfreeze_norm_restores_gradients_and_statistics_updates():
    model = make_classifier_with_learned_stats()
    norm = model.backbone.blocks[0].norm
    freeze_norm(model)
    unfreeze_norm(model)

    assert all(p.requires_grad for p in model.parameters())
    assert not norm._forward_pre_hooks and not hasattr(norm, "_normzoo_freeze_handle")
    assert norm.training  # follows its parent, which is in train mode
    mean, tracked = norm.running_mean.clone(), norm.num_batches_tracked.clone()
    model.train()(torch.randn(8, 6))
    assert not torch.equal(norm.running_mean, mean)
    assert norm.num_batches_tracked == tracked + 1


def test_frozen_model_survives_deepcopy_and_pickle():
    model = freeze_norm(make_classifier_with_learned_stats())
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        buffers = bn_buffers(twin)
        twin.train()(torch.randn(8, 6))
        for key, value in bn_buffers(twin).items():
            assert torch.equal(value, buffers[key]), key
        unfreeze_norm(twin)
        assert no_hooks_anywhere(twin.backbone)
    assert hasattr(model.backbone.blocks[0].norm, "_normzoo_freeze_handle")  # the original is still frozen
    assert model.backbone.blocks[0].norm._forward_pre_hooks


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

    with pytest.raises(ConfigError, match=rf"'first\.1'.*non-finite.*batch index {row // 10} .*before that layer"):
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

    with pytest.raises(ConfigError, match=r"'3'.*batch index 0"):
        recalibrate_bn(model, DataLoader(x, batch_size=20))

    with torch.no_grad():
        mean, var = population_stats(model[0](x))
    assert_stats(model[1], mean, var)  # recalibrated before the error: kept
    assert torch.equal(model[3].running_mean, torch.zeros(4)) and torch.equal(model[3].running_var, torch.ones(4))


def test_replace_norm_on_a_model_without_norm_layers_says_so():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.warns(UserWarning, match=r"replace_norm\('gn'\): Sequential has no norm layer to replace"):
        assert replace_norm(model, "gn", num_groups=2) is model
