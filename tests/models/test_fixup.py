"""Fixup (Zhang, Dauphin & Ma 2019) in the ResNet: its blocks, its initialization, its refusals, and training."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normzoo.data import SyntheticDataModule
from normzoo.errors import ConfigError
from normzoo.models import CNNClassifier, ResNet, build_cnn
from normzoo.models.resnet import FixupBlock

SHAPE = (3, 16, 16)


def fixup_blocks(model: nn.Module) -> list[FixupBlock]:
    return [module for module in model.modules() if isinstance(module, FixupBlock)]


def test_fixup_scales_each_first_conv_by_the_inverse_root_of_the_block_count_and_zeroes_the_rest():
    torch.manual_seed(0)
    plain = ResNet("resnet20", input_shape=SHAPE, norm="none")
    torch.manual_seed(0)
    fixup = ResNet("resnet20", input_shape=SHAPE, norm="none", fixup=True)
    plain_blocks = [m for m in plain.modules() if type(m).__name__ == "BasicBlock"]
    pairs = list(zip(plain_blocks, fixup_blocks(fixup), strict=True))
    assert len(pairs) == 9
    for block, fixed in pairs:  # the same He draws, then L^(-1/2) with L = 9 blocks of two layers
        torch.testing.assert_close(fixed.conv1.conv.weight, block.conv1.conv.weight / 3.0)
        assert not fixed.conv2.conv.weight.any() and not fixed.conv1.conv.bias.any()
        assert fixed.residual_scale.item() == 1.0
        assert [b.bias.item() for b in (fixed.bias1a, fixed.bias1b, fixed.bias2a, fixed.bias2b)] == [0.0] * 4
    torch.testing.assert_close(fixup.stem[0].conv.weight, plain.stem[0].conv.weight)  # outside the branches
    assert not fixup.head.weight.any() and not fixup.head.bias.any()
    assert not fixup(torch.randn(2, *SHAPE)).any()  # zero classifier: the network starts at uniform predictions


def test_a_fixup_block_computes_the_papers_branch_with_its_biases_and_multiplier():
    torch.manual_seed(1)
    block = FixupBlock(4, 6, 2, lambda c: nn.Identity(), "relu").double()
    with torch.no_grad():
        for value, bias in zip((0.1, -0.2, 0.3, -0.4), (block.bias1a, block.bias1b, block.bias2a, block.bias2b),
                               strict=True):
            bias.bias.fill_(value)
        block.residual_scale.fill_(0.7)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    conv1, conv2, short = block.conv1.conv, block.conv2.conv, block.shortcut.conv
    branch = conv2(F.relu(conv1(x + 0.1) - 0.2) + 0.3)
    expected = F.relu(0.7 * branch - 0.4 + short(x + 0.1))
    torch.testing.assert_close(block(x), expected)


def test_fixup_adds_scalar_parameters_that_are_never_decayed():
    model = ResNet("resnet8", input_shape=SHAPE, norm="none", fixup=True)
    scalars = {name for name, p in model.named_parameters() if p.dim() == 0}
    assert scalars == {"stem.1.bias", "head_bias.bias"} | {
        f"stages.{s}.0.{name}" for s in range(3)
        for name in ("residual_scale", "bias1a.bias", "bias1b.bias", "bias2a.bias", "bias2b.bias")}


@pytest.mark.parametrize(("options", "message"), [
    ({"norm": "bn"}, "without normalization.*norm='bn'.*'none'"),
    ({"norm": "none", "residual_scale": 0.0}, "own residual multiplier"),
])
def test_fixup_refuses_a_norm_and_a_second_multiplier(options, message):
    with pytest.raises(ConfigError, match=message):
        ResNet("resnet8", input_shape=SHAPE, fixup=True, **options)


def test_fixup_is_a_resnet_option_only():
    with pytest.raises(ConfigError, match="fixup is an option of the ResNet archs"):
        build_cnn("vgg11", input_shape=SHAPE, norm="none", fixup=True)
    assert build_cnn("vgg11", input_shape=SHAPE, norm="none", fixup=False) is not None


def test_a_fixup_resnet_without_normalization_trains_and_round_trips(tmp_path, trainer_kwargs):
    L.seed_everything(0)
    optimizer = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}}
    model = CNNClassifier(input_shape=SHAPE, num_classes=3, arch="resnet20", norm="none", fixup=True,
                          optimizer=optimizer)
    data = SyntheticDataModule(num_samples=64, input_shape=SHAPE, num_classes=3, batch_size=16)
    trainer = L.Trainer(**trainer_kwargs(max_steps=12, limit_val_batches=0, num_sanity_val_steps=0))
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    initial = F.cross_entropy(model(x), y).item()
    trainer.fit(model, data)
    assert F.cross_entropy(model(x), y).item() < initial
    assert any(block.conv2.conv.weight.any() for block in fixup_blocks(model))  # the zeroed convs learned
    path = tmp_path / "fixup.ckpt"
    trainer.save_checkpoint(path)
    restored = CNNClassifier.load_from_checkpoint(path, map_location="cpu").eval()
    assert restored.hparams.fixup is True
    torch.testing.assert_close(restored(x), model.eval()(x))
