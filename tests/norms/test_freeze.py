"""freeze_norm/unfreeze_norm: norm layers fixed through Lightning training, undone exactly."""

from __future__ import annotations

import copy
import pickle

import lightning as L
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, TensorDataset

from normzoo.models import MLPClassifier
from normzoo.norms import freeze_norm, unfreeze_norm
from tests.norms.norm_checks import bn_buffers, layers_of, no_hooks_anywhere

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
