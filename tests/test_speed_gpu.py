"""On a GPU (the device tool): every speed option trains with finite loss to eager's accuracy on MNIST-5k.

Run there with ``python -m pytest -m gpu tests/test_speed_gpu.py``; skipped on machines without CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch

from normzoo.cli import NormZooCLI, own_arguments_only
from normzoo.speed import SpeedUp

pytestmark = pytest.mark.gpu

MLP = ["--config", "configs/quickstart.yaml", "--trainer.max_epochs", "4"]
CNN = [*MLP, "--model", "normzoo.models.CNNClassifier", "--model.arch", "resnet8", "--model.width_factor", "0.5",
       "--data.pad_to", "32", "--optimizer.lr", "0.05"]
ACCURACY_NOISE = 0.03
"""Seed-to-seed spread of the quickstart's validation accuracy after 4 epochs is ~0.01."""


def train(args: list[str], tmp_path, name: str) -> tuple[float, float, NormZooCLI]:
    """(final train loss, val accuracy, the CLI) of one GPU run."""
    with own_arguments_only():
        cli = NormZooCLI(args=[*args, "--trainer.accelerator", "gpu", "--runs_dir", str(tmp_path), "--run_name", name],
                         run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.callback_metrics
    return float(metrics["train/loss"]), float(metrics["val/acc"]), cli


@pytest.mark.parametrize(("base", "options", "expected"), [
    (MLP, [], "bf16-mixed"),
    (MLP, ["--speed.compile", "true"], "torch.compile (mode default)"),
    (MLP, ["--speed.cuda_graph", "true"], "torch.compile (mode reduce-overhead)"),
    (CNN, ["--speed.channels_last", "true"], "channels-last"),
    (CNN, ["--speed.compile", "true", "--model.norm", "gn"], "torch.compile (mode default)"),
])
def test_a_speed_option_trains_like_eager_float32(base, options, expected, tmp_path):
    norm = options[options.index("--model.norm") + 1] if "--model.norm" in options else "bn"
    reference = [*base, "--model.norm", norm, "--trainer.precision", "32-true"]
    _, eager_accuracy, _ = train(reference, tmp_path, "eager")
    loss, accuracy, cli = train([*base, *options], tmp_path, "fast")
    assert math.isfinite(loss)
    assert abs(accuracy - eager_accuracy) <= ACCURACY_NOISE, (accuracy, eager_accuracy)
    (speed,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, SpeedUp)]
    applied = [*speed.applied, cli.trainer.precision]
    assert expected in applied, applied
    if torch.cuda.is_bf16_supported():
        assert cli.trainer.precision == "bf16-mixed"


def test_training_data_and_eval_data_live_on_the_gpu(tmp_path):
    from normzoo.data.device_loader import DeviceImageLoader

    _, _, cli = train([*MLP, "--trainer.max_epochs", "1"], tmp_path, "device_data")
    loaders = (cli.trainer.train_dataloader, cli.trainer.val_dataloaders)
    assert all(isinstance(loader, DeviceImageLoader) and loader.device.type == "cuda" for loader in loaders)
