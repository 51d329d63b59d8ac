"""Every registry key x {MLP, VGG, ResNet}: trains a few steps and round-trips a checkpoint."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from normzoo.data import SyntheticDataModule
from normzoo.models import CNNClassifier, MLPClassifier
from normzoo.norms import available_norms
from tests.fixtures import MAPS_ONLY_NORMS

FAMILIES = {
    "mlp": (MLPClassifier, {"depth": 2, "width": 32}, (20,)),
    # IN needs maps > 1x1 at the end; a quarter of the width: the 9M weights of the full VGG-11 test nothing more
    "vgg": (CNNClassifier, {"arch": "vgg11", "width_factor": 0.25}, (3, 32, 32)),
    "resnet": (CNNClassifier, {"arch": "resnet20"}, (3, 16, 16)),
}


def build(family: str, norm: str):
    model_class, options, shape = FAMILIES[family]
    data = SyntheticDataModule(num_samples=80, input_shape=shape, num_classes=3, batch_size=8)
    optimizer = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01}}  # no-norm ResNets diverge at 0.1
    return model_class(input_shape=shape, num_classes=3, norm=norm, optimizer=optimizer, **options), data


@pytest.mark.parametrize("norm", available_norms())
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_norm_trains_and_round_trips(family, norm, tmp_path, trainer_kwargs):
    if family == "mlp" and norm in MAPS_ONLY_NORMS:
        with pytest.raises(ValueError, match="feature vector"):
            build(family, norm)
        return
    L.seed_everything(0)
    model, data = build(family, norm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(**trainer_kwargs(max_steps=3, limit_val_batches=1, num_sanity_val_steps=0))
    trainer.fit(model, data)
    loss = trainer.callback_metrics["train/loss"]
    assert math.isfinite(float(loss))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "no parameter moved"

    x = torch.randn(5, *FAMILIES[family][2])
    model.eval()
    assert model(x).shape == (5, 3)

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = type(model).load_from_checkpoint(path, map_location="cpu").eval()
    assert restored.hparams.norm == norm
    torch.testing.assert_close(restored(x), model(x))
