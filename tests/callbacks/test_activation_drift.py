"""ActivationDrift: oracles against numpy, no side effects on training, TensorBoard output, resume state."""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from normzoo.callbacks import ActivationDrift, DeadUnits
from normzoo.callbacks.distribution import percentiles, sorted_sample, wasserstein1
from normzoo.errors import ConfigError, DiagnosticError
from normzoo.models import MLPClassifier
from tests.fixtures import gaussian_loader
from tests.tb_events import load_events


def loader(n: int = 96, batch_size: int = 16) -> DataLoader:
    return gaussian_loader(n, 8, 3, batch_size=batch_size, scale=2, shift=1)


def model(norm: str = "bn") -> MLPClassifier:
    return MLPClassifier(input_shape=(8,), num_classes=3, depth=2, width=12, activation="sigmoid", norm=norm)


def test_percentiles_and_w1_match_numpy_and_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=999), rng.normal(1, 2, size=999)
    sa, sb = sorted_sample(torch.tensor(a), 10_000), sorted_sample(torch.tensor(b), 10_000)
    qs = [0, 15, 50, 85, 100]
    np.testing.assert_allclose(percentiles(sa, qs).numpy(), np.percentile(a, qs), rtol=1e-5)
    np.testing.assert_allclose(float(wasserstein1(sa, sb)), scipy_stats.wasserstein_distance(a, b), rtol=1e-5)


def test_statistics_work_beyond_torch_quantiles_16m_limit():
    x = torch.arange(17_000_000, dtype=torch.float32).flip(0)
    values = sorted_sample(x, 100_000)
    assert values.numel() <= 100_000 and bool((values[1:] >= values[:-1]).all())
    median = float(percentiles(values, [50])[0])
    assert abs(median - 8_500_000) < 0.01 * 17_000_000


@pytest.mark.parametrize("unit", [None, 5])
def test_first_measurement_matches_a_direct_computation(unit, trainer_kwargs):
    L.seed_everything(0)
    net = model()
    initial = copy.deepcopy(net)
    drift = ActivationDrift(every_n_steps=1, probe_size=16, mode="train", unit=unit)
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[drift])).fit(net, loader())
    probe = next(iter(loader()))[0][:16]
    captured = {}
    layer = initial.backbone.blocks[1].act

    def keep_input(module, inputs):  # returns None: a returned value would replace the input
        captured["x"] = inputs[0].detach()

    layer.register_forward_pre_hook(keep_input)
    with torch.no_grad():
        initial.train()(probe)
    watched = captured["x"] if unit is None else captured["x"][:, unit]  # all 12 units, or one (Ioffe's Fig 1)
    expected = np.percentile(watched.numpy().ravel(), [15, 50, 85])
    record = drift.history[0]
    layer_name = "backbone.blocks.1"  # the layer of blocks.1.act
    np.testing.assert_allclose([record[f"{layer_name}/p{q}"] for q in (15, 50, 85)], expected, rtol=1e-5)
    assert record[f"{layer_name}/w1_first"] == 0.0 and record["step"] == 0.0


@pytest.mark.parametrize("callback_class", [ActivationDrift, DeadUnits])
@pytest.mark.parametrize("norm", ["bn", "noisy_bn"])
def test_measuring_leaves_the_training_run_bit_identical(norm, callback_class, trainer_kwargs):
    def run(callbacks):
        L.seed_everything(0)
        net = model(norm)
        L.Trainer(**trainer_kwargs(max_steps=12, callbacks=callbacks)).fit(net, loader())
        return net.state_dict()

    plain = run([])
    measured = run([callback_class(every_n_steps=2, probe_size=16)])
    for key, value in plain.items():
        assert torch.equal(value, measured[key]), key


def test_logs_metrics_and_figure_to_tensorboard_with_cadence(tmp_path, trainer_kwargs):
    drift = ActivationDrift(every_n_steps=5, probe_size=16)
    logger = TensorBoardLogger(tmp_path, name="drift", default_hp_metric=False)
    net = model()
    trainer = L.Trainer(**trainer_kwargs(max_steps=18, callbacks=[drift], logger=logger, log_every_n_steps=1))
    trainer.fit(net, loader())
    assert [r["step"] for r in drift.history] == [0.0, 5.0, 10.0, 15.0]
    events = load_events(tmp_path / "drift" / "version_0")
    tags = events.Tags()
    for stat in ("p15", "p50", "p85", "mean", "std", "w1_prev", "w1_first"):
        series = events.Scalars(f"zoo/activation_drift/backbone.blocks.1/{stat}")
        assert [e.step for e in series] == [0, 5, 10, 15]
    assert "zoo/activation_drift/backbone.blocks.1/bands" in tags["images"]
    for module in net.modules():
        assert not module._forward_hooks
        assert not module._forward_pre_hooks or all(
            type(h).__name__ == "_SingleValueGuard" for h in module._forward_pre_hooks.values()
        )


def test_state_dict_round_trip_continues_the_curves(trainer_kwargs):
    drift = ActivationDrift(every_n_steps=3, probe_size=16)
    L.Trainer(**trainer_kwargs(max_steps=7, callbacks=[drift])).fit(model(), loader())
    restored = ActivationDrift(every_n_steps=3, probe_size=16)
    restored.load_state_dict(copy.deepcopy(drift.state_dict()))
    assert restored.history == drift.history
    assert torch.equal(restored.state_dict()["probe"]["batch"][0], drift.state_dict()["probe"]["batch"][0])
    assert restored.last_step == 6


def test_bad_settings_are_clear(trainer_kwargs):
    with pytest.raises(DiagnosticError, match=r"ActivationDrift: 'nope' named in layers= computed nothing.*backbone"):
        drift = ActivationDrift(layers=["nope"], probe_size=16)
        L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[drift])).fit(model(), loader())
    with pytest.raises(ConfigError, match=r"unit=12.*shape \(16, 12\).*\[0, 12\)"):
        drift = ActivationDrift(every_n_steps=1, probe_size=16, unit=12)
        L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[drift])).fit(model(), loader())
    with pytest.raises(ConfigError, match="mode must be 'train' or 'eval'"):
        ActivationDrift(mode="test")  # settings are checked when the callback is made, before any trainer
    with pytest.raises(ConfigError, match="every_n_steps >= 1"):
        ActivationDrift(every_n_steps=0)


def test_a_probe_from_a_small_loader_is_sealed_when_the_loader_runs_out():
    """Every measurement must compare the same samples (the Wasserstein drift needs equal sizes)."""
    from normzoo.callbacks.probe import ProbeBatch

    probe = ProbeBatch(size=10)
    probe.collect((torch.ones(4, 3), torch.zeros(4)))
    assert not probe.full  # waits for more batches
    probe.collect({"x": torch.ones(4, 3)})  # a batch of another structure is not mixed in
    probe.seal()  # the epoch ended: what was collected is the probe
    assert probe.full
    probe.collect((torch.zeros(4, 3), torch.zeros(4)))
    assert len(probe.batch[0]) == 4
    resumed = ProbeBatch(size=10)
    resumed.load_state_dict(probe.state_dict())
    resumed.collect((torch.zeros(4, 3), torch.zeros(4)))
    assert torch.equal(resumed.batch[0], probe.batch[0]) and resumed.full


def test_step_zero_is_the_untrained_network_when_the_batch_is_smaller_than_the_probe(trainer_kwargs):
    L.seed_everything(0)
    net = model()
    initial = copy.deepcopy(net)
    drift = ActivationDrift(every_n_steps=100, probe_size=40, mode="train")
    L.Trainer(**trainer_kwargs(max_steps=4, callbacks=[drift])).fit(net, loader(batch_size=16))
    assert [r["step"] for r in drift.history] == [0.0]  # measured at step 2, when 40 samples were in
    probe = torch.cat([x for x, _ in loader(batch_size=16)])[:40]
    captured = {}
    initial.backbone.blocks[1].act.register_forward_pre_hook(lambda m, inputs: captured.update(x=inputs[0]))
    with torch.no_grad():
        initial.train()(probe)
    expected = np.percentile(captured["x"].numpy().ravel(), [15, 50, 85])
    got = [drift.history[0][f"backbone.blocks.1/p{q}"] for q in (15, 50, 85)]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert drift._initial is None  # the untrained copy is dropped once measured
