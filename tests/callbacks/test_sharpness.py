"""Sharpness against the dense Hessian of the same loss, read back from TensorBoard, and leaving training alone.

The oracle: ``torch.autograd.functional.hessian`` of the training loss on the first batch (the fixed
subset, ``num_batches=1``) at the untrained weights (step 0 is measured before the first update), in
train mode, float64, with the parameters in the optimizer's order. The top eigenvalues (whole and
restricted to a scale-invariant layer) agree within 1%. Hutchinson's trace with 8 probes is a
statistical estimate (``tests/test_curvature.py`` shows it within 1% for enough probes): here it equals
the estimate from the dense matrix with the callback's probes, and lies within 4 standard errors of tr H.
"""

from __future__ import annotations

import copy
import re

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from normzoo.callbacks.sharpness import Sharpness
from normzoo.curvature import flatten, hutchinson_trace, unflatten
from normzoo.errors import ConfigError
from normzoo.models import MLPClassifier
from tests.callbacks.test_training_unchanged import same
from tests.tb_events import custom_scalars_layout, load_events

LR = 0.1
PROBES = 8
LAYER = "backbone.blocks.0.linear"  # feeds the norm: scale-invariant with bn and ln


def loader(batch_size: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 2, generator=generator, dtype=torch.float64) * 3
    return DataLoader(TensorDataset(x, torch.randint(0, 4, (64,), generator=generator)), batch_size=batch_size)


def tiny(norm: str) -> MLPClassifier:
    """2 inputs -> 3 sigmoid units (with the norm) -> 4 classes: a few dozen parameters, float64."""
    torch.manual_seed(1)
    return MLPClassifier(input_shape=(2,), num_classes=4, depth=1, width=3, norm=norm, activation="sigmoid",
                         optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": LR}}).double()


def dense_hessian(model: MLPClassifier, names: list[str], batches: list[tuple[Tensor, Tensor]]) -> Tensor:
    """The Hessian of the mean of the batches' cross-entropy losses w.r.t. the named parameters, in that order."""
    params = dict(model.named_parameters())
    shapes = [params[name] for name in names]

    def loss(flat: Tensor) -> Tensor:
        values = dict(zip(names, unflatten(flat, shapes), strict=True))
        return torch.stack([F.cross_entropy(functional_call(model, values, (x,)), y) for x, y in batches]).mean()

    return torch.autograd.functional.hessian(loss, flatten(shapes).detach())


def optimizer_order(trainer: L.Trainer, model: MLPClassifier) -> list[str]:
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [name_of[id(p)] for group in trainer.optimizers[0].param_groups for p in group["params"]]


def positions(model: MLPClassifier, names: list[str], prefix: str) -> list[int]:
    """The positions, in the flat vector of ``names``, of the parameters under module ``prefix``."""
    sizes = [dict(model.named_parameters())[name].numel() for name in names]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [start + k for name, start, size in zip(names, starts, sizes, strict=True)
            if name.startswith(prefix + ".") for k in range(size)]


def fit(norm: str, root) -> tuple[Sharpness, MLPClassifier, list[str], object]:
    """One step with Sharpness logging to TensorBoard: (callback, initial model, parameter order, run dir)."""
    model = tiny(norm)
    initial = copy.deepcopy(model).train()
    sharpness = Sharpness(every_n_steps=1, trace_probes=PROBES)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, callbacks=[sharpness],
                        logger=TensorBoardLogger(root, name="run", default_hp_metric=False),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader())
    return sharpness, initial, optimizer_order(trainer, model), root / "run" / "version_0"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """``fitted(norm)``: ``fit``'s result, one fit per norm for the whole module."""
    runs: dict[str, tuple] = {}

    def get(norm: str) -> tuple:
        if norm not in runs:
            runs[norm] = fit(norm, tmp_path_factory.mktemp(f"sharpness_{norm}"))
        return runs[norm]

    return get


@pytest.mark.parametrize("norm", ["bn", "ln", "none"])
def test_matches_the_dense_hessian_of_the_subset(norm, fitted):
    sharpness, initial, names, _ = fitted(norm)
    (record,) = sharpness.history
    hessian = dense_hessian(initial, names, [next(iter(loader()))])
    assert record["top_eigenvalue"] == pytest.approx(torch.linalg.eigvalsh(hessian)[-1].item(), rel=1e-2)
    assert record["two_over_lr"] == 2 / LR
    dense = hutchinson_trace(lambda z: hessian @ z, hessian.shape[0], generator=torch.Generator().manual_seed(0),
                             probes=PROBES, dtype=torch.float64)  # the callback's probes: seed 0
    assert record["trace"] == pytest.approx(dense.value, rel=1e-9)
    assert record["trace_stderr"] == pytest.approx(dense.stderr, rel=1e-9)
    assert abs(record["trace"] - hessian.trace().item()) < 4 * record["trace_stderr"]
    layer = sharpness.layer(LAYER)
    if norm == "none":
        assert not any("/" in key for key in record)  # no norm, no scale-invariant layer
        return
    assert {key for key in record if "/" in key} == {f"{layer}/{stat}" for stat in
                                                     ("top_eigenvalue", "squared_norm", "spherical_sharpness")}
    block = positions(initial, names, LAYER)
    restricted = torch.linalg.eigvalsh(hessian[block][:, block])[-1].item()
    theta = torch.cat([p.detach().flatten() for name, p in initial.named_parameters() if name.startswith(LAYER)])
    assert record[f"{layer}/top_eigenvalue"] == pytest.approx(restricted, rel=1e-2)
    assert record[f"{layer}/squared_norm"] == pytest.approx(theta.pow(2).sum().item(), rel=1e-12)
    assert record[f"{layer}/spherical_sharpness"] == pytest.approx(restricted * theta.pow(2).sum().item(), rel=1e-2)


def test_logs_to_tensorboard_with_2_over_lr_in_the_sharpness_chart(fitted):
    sharpness, _, _, run = fitted("bn")
    events = load_events(run)
    scalars = set(events.Tags()["scalars"])
    logged = {f"{sharpness.prefix}/{key}" for key in sharpness.history[0] if key != "step"}
    assert logged <= scalars and f"{sharpness.prefix}/two_over_lr" in logged
    assert f"{sharpness.prefix}/{sharpness.layer(LAYER)}/spherical_sharpness" in logged
    charts = custom_scalars_layout(events)[sharpness.prefix]
    drawn = {title: {tag for tag in scalars if any(re.search(regex, tag) for regex in regexes)}
             for title, regexes in charts.items()}
    assert {f"{sharpness.prefix}/top_eigenvalue", f"{sharpness.prefix}/two_over_lr"} in drawn.values()


def test_step_0_waits_for_the_whole_subset():
    """Two batches of 16 in the subset: step 0 (the untrained weights) is measured once the second arrives."""
    model = tiny("bn")
    initial = copy.deepcopy(model).train()
    sharpness = Sharpness(every_n_steps=1, num_batches=2, trace_probes=0, spherical=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, callbacks=[sharpness], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader(batch_size=16))
    assert [record["step"] for record in sharpness.history] == [0.0, 1.0]
    batches = list(loader(batch_size=16))[:2]
    hessian = dense_hessian(initial, optimizer_order(trainer, model), batches)
    assert sharpness.history[0]["top_eigenvalue"] == pytest.approx(torch.linalg.eigvalsh(hessian)[-1].item(),
                                                                   rel=1e-2)


def test_training_is_bit_identical_with_and_without_it():
    """Noisy BN (random draws in the forward) under Adam (optimizer state): weights, BN buffers, optimizer state."""

    def train(callbacks: list[L.Callback]) -> tuple[dict, dict]:
        L.seed_everything(0)
        model = MLPClassifier(input_shape=(2,), num_classes=4, depth=2, width=6, norm="noisy_bn",
                              optimizer={"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}})
        trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=7, callbacks=callbacks, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        x, y = loader().dataset.tensors
        trainer.fit(model, DataLoader(TensorDataset(x.float(), y), batch_size=8, shuffle=True))
        return model.state_dict(), trainer.optimizers[0].state_dict()

    sharpness = Sharpness(every_n_steps=3, iterations=4, trace_probes=2, num_batches=2)
    plain_model, plain_optimizer = train([])
    measured_model, measured_optimizer = train([sharpness])
    assert [record["step"] for record in sharpness.history] == [0.0, 3.0, 6.0]
    assert any(key.endswith("spherical_sharpness") for key in sharpness.history[0])
    assert same(plain_model, measured_model)
    assert same(plain_optimizer, measured_optimizer)


def test_a_bad_option_is_one_clear_config_error():
    with pytest.raises(ConfigError, match=r"Sharpness needs 0 < tol < 1"):
        Sharpness(tol=0.0)
    with pytest.raises(ConfigError, match=r"Sharpness layer 'backbone\.nope' is not a module owning trainable"):
        L.Trainer(accelerator="cpu", devices=1, max_steps=1, callbacks=[Sharpness(layers=["backbone.nope"])],
                  logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False).fit(tiny("bn"), loader())
