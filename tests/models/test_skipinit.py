"""SkipInit in the ResNet (``residual_scale``) and the deep CIFAR variants ResNet-56 and ResNet-110."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normzoo.cli import NormZooCLI, own_arguments_only
from normzoo.data import SyntheticDataModule
from normzoo.errors import ConfigError
from normzoo.models import VGG, BasicBlock, CNNClassifier, ResNet, build_cnn
from normzoo.signal_propagation import signal_propagation
from normzoo.studies.estimate import quiet_lightning

SHAPE = (3, 16, 16)
SGD = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}}


def blocks(model: nn.Module) -> list[BasicBlock]:
    return [module for module in model.modules() if isinstance(module, BasicBlock)]


def scales(model: nn.Module) -> list[nn.Parameter]:
    return [block.residual_scale for block in blocks(model)]


@pytest.mark.parametrize(("arch", "per_stage"), [("resnet56", 9), ("resnet110", 18)])
def test_the_deep_cifar_resnets_have_6n_plus_2_layers(arch, per_stage):
    model = build_cnn(arch, input_shape=SHAPE, width_factor=0.25)
    assert isinstance(model, ResNet) and [len(stage) for stage in model.stages] == [per_stage] * 3
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 6 * per_stage + 2  # the stem, two per block, and the head
    assert [m.out_channels for m in model.stages[-1][-1].modules() if isinstance(m, nn.Conv2d)] == [16, 16]


def test_without_a_scale_the_block_and_its_state_dict_are_the_plain_ones():
    block = BasicBlock(4, 8, 2, nn.BatchNorm2d, "relu")
    assert block.residual_scale is None and "residual_scale" not in dict(block.named_parameters())
    assert sorted(block.state_dict()) == sorted(
        f"{layer}.{name}" for layer in ("conv1", "conv2", "shortcut")
        for name in ("conv.weight", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
                     "norm.num_batches_tracked"))


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_a_scale_adds_one_scalar_per_block_and_draws_no_random_numbers(norm):
    torch.manual_seed(0)
    plain = ResNet("resnet20", input_shape=SHAPE, norm=norm, width_factor=0.25).state_dict()
    torch.manual_seed(0)
    scaled = ResNet("resnet20", input_shape=SHAPE, norm=norm, width_factor=0.25, residual_scale=0.5).state_dict()
    added = sorted(set(scaled) - set(plain))
    assert added == sorted(f"stages.{s}.{b}.residual_scale" for s in range(3) for b in range(3))
    assert set(plain) <= set(scaled) and all(torch.equal(plain[key], scaled[key]) for key in plain)
    assert all(scaled[key].shape == () and scaled[key].item() == 0.5 for key in added)


@pytest.mark.parametrize("norm", ["none", "bn"])
def test_skipinit_makes_every_block_its_activated_skip_at_init(norm):
    """At 0 each block computes act2(shortcut(x)); without a norm an identity block returns its (ReLU) input."""
    torch.manual_seed(0)
    model = ResNet("resnet20", input_shape=SHAPE, norm=norm, width_factor=0.5, residual_scale=0.0)
    seen: list[tuple[BasicBlock, torch.Tensor, torch.Tensor]] = []
    handles = [block.register_forward_hook(lambda b, inputs, output: seen.append((b, inputs[0], output)))
               for block in blocks(model)]
    model(torch.randn(4, *SHAPE))
    for handle in handles:
        handle.remove()
    assert len(seen) == 9
    for block, x, output in seen:
        torch.testing.assert_close(output, block.act2(block.shortcut(x)), rtol=0, atol=0)
        if norm == "none" and isinstance(block.shortcut, nn.Identity):
            torch.testing.assert_close(output, x, rtol=0, atol=0)


def test_the_scale_gets_a_gradient_then_the_branches_do_and_it_is_never_decayed():
    torch.manual_seed(0)
    model = CNNClassifier(input_shape=SHAPE, num_classes=3, arch="resnet8", norm="none", residual_scale=0.0,
                          optimizer=SGD)
    optimizer = model.configure_optimizers()
    decayed, plain = optimizer.param_groups
    assert plain["weight_decay"] == 0.0 and {id(p) for p in scales(model)} <= {id(p) for p in plain["params"]}
    assert not {id(p) for p in scales(model)} & {id(p) for p in decayed["params"]}
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 3, (8,))
    branch = model.backbone.stages[0][0].conv1.conv.weight
    for step in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        assert all(scale.grad is not None and scale.grad.abs() > 0 for scale in scales(model))
        assert (branch.grad.abs().sum() > 0) == (step > 0)  # a zero scale blocks the branch's gradient at first
        optimizer.step()
    assert all(scale.item() != 0.0 for scale in scales(model))


def test_the_scale_trains_and_round_trips_a_checkpoint(tmp_path, trainer_kwargs):
    L.seed_everything(0)
    model = CNNClassifier(input_shape=SHAPE, num_classes=3, arch="resnet8", norm="none", residual_scale=0.0,
                          optimizer=SGD)
    data = SyntheticDataModule(num_samples=48, input_shape=SHAPE, num_classes=3, batch_size=8)
    trainer = L.Trainer(**trainer_kwargs(max_steps=3, limit_val_batches=1, num_sanity_val_steps=0))
    trainer.fit(model, data)
    trained = [scale.item() for scale in scales(model)]
    assert all(value != 0.0 for value in trained)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = CNNClassifier.load_from_checkpoint(path, map_location="cpu").eval()
    assert restored.hparams.residual_scale == 0.0 and [scale.item() for scale in scales(restored)] == trained
    x = torch.randn(2, *SHAPE)
    torch.testing.assert_close(restored(x), model.eval()(x))


def test_the_option_parses_from_yaml_and_the_command_line(tmp_path):
    overlay = tmp_path / "skipinit.yaml"
    overlay.write_text("model:\n  init_args:\n    arch: resnet56\n    norm: none\n    residual_scale: 0\n"
                       "    width_factor: 0.25\n")
    for extra in ([], ["--model.residual_scale", "0.25"]):
        args = ["--config", "configs/cifar10/resnet.yaml", "--config", str(overlay), *extra, "--trainer.logger",
                "false"]
        with quiet_lightning(), own_arguments_only():
            cli = NormZooCLI(args=args, run=False)
        expected = 0.25 if extra else 0.0
        assert cli.model.hparams.residual_scale == expected and cli.model.hparams.arch == "resnet56"
        assert {scale.item() for scale in scales(cli.model)} == {expected} and len(scales(cli.model)) == 27


def test_only_resnets_take_a_residual_scale():
    assert isinstance(build_cnn("vgg11", input_shape=SHAPE, width_factor=0.125, residual_scale=None), VGG)
    with pytest.raises(ConfigError, match="residual_scale is an option of the ResNet archs.*not of vgg11"):
        CNNClassifier(input_shape=SHAPE, arch="vgg11", residual_scale=0.0)


def test_signal_propagation_finds_each_blocks_branch_and_skip():
    torch.manual_seed(0)
    model = ResNet("resnet56", input_shape=SHAPE, norm="none", width_factor=0.25, residual_scale=0.0)
    report = signal_propagation(model, torch.randn(8, *SHAPE))
    assert [block.name for block in report.residuals] == [f"stages.{s}.{b}" for s in range(3) for b in range(9)]
    assert all(block.branch_var == 0.0 and block.branch_skip_ratio == 0.0 and block.skip_var > 0
               for block in report.residuals)
    plain = signal_propagation(ResNet("resnet56", input_shape=SHAPE, norm="none", width_factor=0.25),
                               torch.randn(8, *SHAPE))
    assert all(block.branch_skip_ratio > 0 for block in plain.residuals)
    assert plain.residuals[-1].skip_var > 100 * report.residuals[-1].skip_var  # the plain net's variance explodes
