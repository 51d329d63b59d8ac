"""Every diagnostic, at its defaults (a short cadence aside), on modules written the way other people write them.

For every module of ``tests/callbacks/gallery.py``: training with the callbacks finishes, every
callback that applies logs its metrics to TensorBoard (read back from the event files), and
the weights after training are bit-identical to a run without them. The GAN (manual
optimization, two optimizers) is the one module without a single loss: the two loss-based
callbacks say so once and stay off there, and asking them to measure it is a clear error.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from lightning.pytorch import seed_everything

from normzoo.callbacks import (
    ActivationDrift,
    DeadUnits,
    EffectiveLR,
    GradientFlow,
    GradientICS,
    LossLandscape,
    PreciseBNGap,
    RunningStatsConvergence,
    Sharpness,
    SignalPropagation,
)
from normzoo.errors import DiagnosticError
from tests.callbacks import gallery
from tests.tb_events import custom_scalars_layout, load_events
from tests.test_readme import glossary_patterns

EVERY = 3
STEPS = {"finetune": 8, "resnet_pl": 4}  # finetune unfreezes its backbone at epoch 1 (step 4)
WITHOUT_BN = {"autoencoder", "functional", "no_forward", "dict_batch_label_first", "dict_batch_image_first",
              "tuple_output", "dict_output"}
MANUAL = {"gan"}


def diagnostics() -> list:
    return [ActivationDrift(every_n_steps=EVERY), DeadUnits(every_n_steps=EVERY), GradientFlow(every_n_steps=EVERY),
            RunningStatsConvergence(every_n_steps=EVERY), GradientICS(every_n_steps=EVERY),
            LossLandscape(every_n_steps=EVERY), EffectiveLR(every_n_steps=EVERY), SignalPropagation(log_figure=False),
            PreciseBNGap(every_n_steps=EVERY),
            Sharpness(every_n_steps=EVERY, iterations=2, trace_probes=1, spherical=False)]  # a few HVPs: CPU time


def logger_for(name: str, root):
    if name == "resnet_pl":  # the tutorial's own package, its own logger class
        import pytorch_lightning as pl

        return pl.loggers.TensorBoardLogger(root, name=name, default_hp_metric=False)
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(root, name=name, default_hp_metric=False)


def fit(name: str, callbacks: list, logger=False, **overrides):
    seed_everything(0)
    module, loader = gallery.GALLERY[name]()
    options = {"accelerator": "cpu", **gallery.trainer_options(name), **overrides}
    options["callbacks"] = options.get("callbacks", []) + callbacks
    trainer = gallery.trainer_class(name)(
        devices=1, max_steps=STEPS.get(name, 6), logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **options)
    trainer.fit(module, loader)
    return module


def expected_callbacks(name: str) -> set[str]:
    """The callbacks that measure ``name``; ``PreciseBNGap`` never does here: no gallery fit validates (it says so)."""
    names = {"activation_drift", "dead_units", "gradient_flow", "running_stats", "gradient_ics", "loss_landscape",
             "effective_lr", "signal_propagation", "sharpness"}
    if name in WITHOUT_BN:
        names -= {"running_stats", "effective_lr"}  # no norm: no scale-invariant weight either
    if name in MANUAL:
        names -= {"gradient_ics", "loss_landscape", "sharpness"}
    return names


@pytest.mark.parametrize("name", sorted(gallery.GALLERY))
def test_every_callback_finishes_logs_and_leaves_training_bit_identical(name, tmp_path):
    callbacks = diagnostics()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        measured = fit(name, callbacks, logger_for(name, tmp_path)).state_dict()
    stopped = {callback.name: callback.stopped for callback in callbacks if callback.stopped}
    expected = expected_callbacks(name)
    assert set(stopped) == {c.name for c in callbacks} - expected, stopped
    for callback in callbacks:
        if callback.stopped:  # said once, with the reason
            said = [w for w in caught if str(w.message).startswith(f"{type(callback).__name__} stops measuring")]
            assert len(said) == 1 and callback.stopped in str(said[0].message), callback.stopped
    if name in MANUAL:
        assert "manual optimization" in stopped["gradient_ics"]
        flow = next(c for c in callbacks if isinstance(c, GradientFlow)).history[0]
        # each optimizer's own weights, read at its own step
        assert any(k.startswith("generator.") for k in flow) and any(k.startswith("discriminator.") for k in flow)

    events = load_events(next((tmp_path / name).glob("version_*")))
    scalars = events.Tags()["scalars"]
    glossary = glossary_patterns()  # the README's tag glossary names every tag normzoo logs
    assert [tag for tag in scalars if tag.startswith("zoo/") and not any(p.match(tag) for p in glossary)] == []
    for callback in expected:
        tags = [tag for tag in scalars if tag.startswith(f"zoo/{callback}/")]
        assert tags, f"{callback} logged nothing for {name}"
        assert all(events.Scalars(tag)[0].step % EVERY == 0 for tag in tags)
    # signal propagation logs one step (at initialization): no chart over steps
    assert set(custom_scalars_layout(events)) >= {f"zoo/{c}" for c in expected - {"signal_propagation"}}
    assert any(tag.endswith("/bands") for tag in events.Tags()["images"])  # figures with either package

    plain = fit(name, []).state_dict()
    assert plain.keys() == measured.keys()
    changed = [key for key in plain if not torch.equal(plain[key], measured[key])]
    assert not changed, changed


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["segmentation", "gan", "accumulate", "resnet_pl"])
def test_on_a_gpu_in_bf16_every_callback_logs_and_training_is_unchanged(name):
    gpu = {"accelerator": "gpu", "precision": "bf16-mixed", "deterministic": True}
    callbacks = diagnostics()
    measured = fit(name, callbacks, **gpu).state_dict()
    logged = {callback.name for callback in callbacks if len(callback.history) > 0}
    assert logged == expected_callbacks(name) and not any(c.stopped for c in callbacks if c.name in logged)
    plain = fit(name, [], **gpu).state_dict()
    assert all(torch.equal(value, measured[key]) for key, value in plain.items())


def test_the_loss_based_callbacks_refuse_several_optimizers_even_with_a_loss():
    def generator_loss(pl_module, batch):
        images = batch[0]
        z = torch.randn(len(images), pl_module.hparams.latent_dim)
        return pl_module.discriminator(pl_module(z)).mean()

    with pytest.raises(DiagnosticError, match="GAN.*2 optimizers"):
        fit("gan", [LossLandscape(every_n_steps=EVERY, loss=generator_loss)])


class GANWithSchedulers(gallery.GAN):
    """The GAN stepping an LR scheduler per optimizer inside its manual training_step."""

    def training_step(self, batch, batch_idx):
        super().training_step(batch, batch_idx)
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def configure_optimizers(self):
        optimizers = super().configure_optimizers()
        return optimizers, [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in optimizers]


def test_a_replayed_manual_step_neither_steps_optimizers_nor_schedulers(trainer_kwargs):
    def run(callbacks):
        seed_everything(0)
        module, loader = GANWithSchedulers(), gallery.GALLERY["gan"]()[1]
        trainer = gallery.Trainer(**trainer_kwargs(max_steps=6, callbacks=callbacks))
        trainer.fit(module, loader)
        return module.state_dict(), [o.param_groups[0]["lr"] for o in trainer.optimizers]

    plain = run([])
    drift = ActivationDrift(every_n_steps=2, probe_size=16)
    measured = run([drift])
    assert len(drift.history) == 3  # global_step counts both optimizers: batches at 0, 2, 4
    assert plain[1] == measured[1] == [2e-4 / 8, 2e-4 / 8]
    assert all(torch.equal(value, measured[0][key]) for key, value in plain[0].items())
