"""configs/diagnostics.yaml over the quickstart: all six callbacks configured from YAML, logged, and resumed."""

from __future__ import annotations

import torch

from normzoo.cli import main
from normzoo.tags import diagnostic_callback
from tests.callbacks.histories import measured_steps
from tests.tb_events import custom_scalars_layout, hparams_plugin, load_events

CALLBACKS = {"ActivationDrift": "activation_drift", "GradientICS": "gradient_ics", "DeadUnits": "dead_units",
             "RunningStatsConvergence": "running_stats", "LossLandscape": "loss_landscape",
             "GradientFlow": "gradient_flow"}


def fit(tmp_path, *overrides: str) -> None:
    main(["fit", "--config", "configs/quickstart.yaml", "--config", "configs/diagnostics.yaml",
          "--runs_dir", str(tmp_path),
          "--trainer.val_check_interval", "23", "--trainer.limit_val_batches", "1",
          "--trainer.enable_progress_bar", "false", *overrides])


def diagnostics_steps(run_dir) -> dict[str, set[int]]:
    events = load_events(run_dir)
    steps: dict[str, set[int]] = {}
    for tag in events.Tags()["scalars"]:
        if diagnostic_callback(tag):
            steps.setdefault(diagnostic_callback(tag), set()).update(event.step for event in events.Scalars(tag))
    return steps


def test_yaml_callbacks_log_and_resume_their_curves(tmp_path):
    fit(tmp_path, "--trainer.max_steps", "23")
    first_run = tmp_path / "diagnostics" / "version_0"
    # step 0 for all: the probe callbacks measure the untrained network once 128/256 samples are in (step 4)
    assert diagnostics_steps(first_run) == {name: {0, 22} for name in CALLBACKS.values()}

    events = load_events(first_run)  # the three TensorBoard views beyond plain scalars
    assert "_hparams_/session_start_info" in hparams_plugin(events)
    assert set(custom_scalars_layout(events)) == {f"zoo/{name}" for name in CALLBACKS.values()} | {
        "zoo/activation_drift bands", "zoo/loss_landscape bands"}
    images = events.Tags()["images"]
    assert any(tag.endswith("/bands") for tag in images) and any(tag.endswith("/saturation") for tag in images)

    fit(tmp_path, "--trainer.max_steps", "46", "--ckpt_path", str(first_run / "checkpoints" / "last.ckpt"))
    resumed = tmp_path / "diagnostics" / "version_1"
    assert diagnostics_steps(resumed) == {name: {44} for name in CALLBACKS.values()}
    states = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    for class_name in CALLBACKS:
        (state,) = [value for key, value in states.items() if key.startswith(class_name)]
        assert measured_steps(state["history"]) == {0, 22, 44}, class_name  # the curve continues


def test_the_same_config_runs_without_batchnorm(tmp_path):
    """Comparing norms means running the one config with --model.norm none: no callback refuses."""
    fit(tmp_path, "--trainer.max_steps", "23", "--model.norm", "none", "--run_name", "none")
    logged = diagnostics_steps(tmp_path / "none" / "version_0")
    assert set(logged) == set(CALLBACKS.values()) - {"running_stats"}  # nothing to measure without BN
