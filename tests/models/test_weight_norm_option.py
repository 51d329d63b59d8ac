"""The models' ``weight_norm`` option and the classifiers' ``agc``: which layers, the signal at init, training."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from normzoo.data import SyntheticDataModule
from normzoo.errors import ConfigError
from normzoo.models import MLP, VGG, CNNClassifier, MLPClassifier, ResNet
from normzoo.models.weight_norms import nonlinearity_gain

SHAPE = (3, 16, 16)


def parametrized(model: nn.Module) -> dict[str, bool]:
    """Every conv / linear layer of ``model`` by name -> whether its weight is parametrized."""
    return {name: parametrize.is_parametrized(module, "weight") for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))}


@pytest.mark.parametrize("method", ["ws", "sws", "wn"])
@pytest.mark.parametrize("build", [
    lambda method: MLP(input_shape=(12,), num_classes=3, depth=2, width=8, norm="none", weight_norm=method),
    lambda method: VGG("vgg11", input_shape=SHAPE, num_classes=3, norm="gn", norm_kwargs={"num_groups": 4},
                       width_factor=0.125, weight_norm=method),
    lambda method: ResNet("resnet8", input_shape=SHAPE, num_classes=3, norm="none", weight_norm=method),
], ids=["mlp", "vgg", "resnet"])
def test_every_conv_and_linear_layer_but_the_head_is_normalized(build, method):
    layers = parametrized(build(method))
    assert layers.pop("head") is False
    assert layers and all(layers.values())


def test_scaled_ws_keeps_unit_variance_through_a_deep_unnormalized_relu_mlp():
    torch.manual_seed(0)
    model = MLP(input_shape=(256,), num_classes=3, depth=12, width=512, norm="none", weight_norm="sws")
    x = torch.randn(512, 256)
    variances = []
    with torch.no_grad():
        hidden = x
        for block in model.blocks:  # the pre-activations: the linear's output, before the norm (none) and ReLU
            pre = block.linear(hidden)
            variances.append(pre.var().item())
            hidden = block.act(block.norm(pre))
    # gamma = 1 on the raw input, the ReLU gain after: each layer keeps its input's (unit) second moment
    assert all(0.8 < v < 1.25 for v in variances), variances
    assert model.blocks[0].linear.parametrizations.weight[0].gamma == 1.0
    assert model.blocks[1].linear.parametrizations.weight[0].gamma == pytest.approx(nonlinearity_gain("relu"))


def test_ws_with_gn_trains_and_round_trips_a_checkpoint(tmp_path, trainer_kwargs):
    L.seed_everything(0)
    model = CNNClassifier(input_shape=SHAPE, num_classes=3, arch="resnet8", norm="gn", norm_kwargs={"num_groups": 4},
                          weight_norm="ws", optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05}})
    data = SyntheticDataModule(num_samples=64, input_shape=SHAPE, num_classes=3, batch_size=16)
    trainer = L.Trainer(**trainer_kwargs(max_steps=4, limit_val_batches=1, num_sanity_val_steps=0))
    trainer.fit(model, data)
    path = tmp_path / "gn_ws.ckpt"
    trainer.save_checkpoint(path)
    restored = CNNClassifier.load_from_checkpoint(path, map_location="cpu").eval()
    x = torch.randn(4, *SHAPE)
    assert restored.hparams.weight_norm == "ws"
    torch.testing.assert_close(restored(x), model.eval()(x))


def test_a_weight_normalized_model_pickles_only_through_its_state_dict():
    import pickle

    model = MLP(input_shape=(12,), num_classes=3, depth=1, width=4, weight_norm="ws")
    with pytest.raises(RuntimeError, match="state_dict"):  # torch's restriction: hence strategy ddp, not ddp_spawn
        pickle.dumps(model)


def test_fixup_refuses_a_weight_norm():
    with pytest.raises(ConfigError, match="leave weight_norm unset"):
        ResNet("resnet8", input_shape=SHAPE, norm="none", fixup=True, weight_norm="ws")


def test_agc_bounds_every_units_step_by_lambda_times_its_weight_norm_and_leaves_the_head_alone(trainer_kwargs):
    clipping, lr = 1e-3, 1.0
    L.seed_everything(0)
    model = MLPClassifier(input_shape=(12,), num_classes=3, depth=2, width=8, norm="ln", agc=clipping,
                          optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": lr}})
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = SyntheticDataModule(num_samples=32, input_shape=(12,), num_classes=3, batch_size=32)
    L.Trainer(**trainer_kwargs(max_steps=1, limit_val_batches=0, num_sanity_val_steps=0)).fit(model, data)
    for name, p in model.named_parameters():
        step, weight = (p.detach() - before[name]), before[name]
        if weight.dim() == 2:  # one unit per row; a bias or a norm scale is one unit
            step_norms, weight_norms = step.norm(dim=1), weight.norm(dim=1)
        else:
            step_norms, weight_norms = step.norm().view(1), weight.norm().view(1)
        bound = lr * clipping * weight_norms.clamp_min(1e-3)
        if name.startswith("backbone.head"):
            assert (step_norms > 10 * bound).any(), name  # the head is not clipped: its step is the raw gradient
        else:
            assert (step_norms <= bound * (1 + 1e-3)).all(), name  # float32 rounding of w_after - w_before
            assert (step_norms > 0.5 * bound).any(), name  # clipped to the bound, not zeroed


def test_agc_leaves_small_gradients_alone(trainer_kwargs):
    def one_step(agc: float | None) -> dict[str, torch.Tensor]:
        L.seed_everything(0)
        model = MLPClassifier(input_shape=(12,), num_classes=3, depth=2, width=8, norm="ln", agc=agc,
                              optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}})
        data = SyntheticDataModule(num_samples=32, input_shape=(12,), num_classes=3, batch_size=32)
        L.Trainer(**trainer_kwargs(max_steps=1, limit_val_batches=0, num_sanity_val_steps=0)).fit(model, data)
        return {name: p.detach() for name, p in model.named_parameters()}

    for name, value in one_step(1e6).items():  # no unit's gradient is a million times its weight
        torch.testing.assert_close(value, one_step(None)[name], msg=name)


def test_the_classifiers_pass_the_option_to_the_backbone_and_keep_agc_for_training():
    model = MLPClassifier(input_shape=(12,), num_classes=3, depth=1, width=4, weight_norm="wn", agc=0.01)
    assert parametrized(model.backbone) == {"blocks.0.linear": True, "head": False}
    assert "agc" not in model.backbone_options() and model.hparams.agc == 0.01
    assert F.softmax(model(torch.randn(2, 12)), dim=-1).shape == (2, 3)
