"""A fit killed at any point (kill -9 included) and resumed with ``--ckpt_path last`` equals the uninterrupted fit:
the same weights, the same curves at the same steps, no step shown twice; on both data loaders, for max_steps
and max_epochs runs, with random draws in training (noisy BN, augmentation), and after SIGTERM too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from normzoo.cli import main
from tests.tb_events import load_events, scalar_series

ROOT = Path(__file__).resolve().parents[2]
CURVES = ("train/loss", "train/acc", "val/acc", "val/loss")


class KillAt(L.Callback):
    """Ends this process with a signal right after training step ``step`` (SIGKILL: no handler runs)."""

    def __init__(self, step: int, name: str = "SIGKILL") -> None:
        self.step, self.name = step, name

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.name))


def arguments(runs: Path, length: list[str], loader: str) -> list[str]:
    return ["fit", "--config", "configs/quickstart.yaml", "--runs_dir", str(runs), "--trainer.limit_train_batches",
            "20", "--trainer.log_every_n_steps", "5", "--trainer.enable_progress_bar", "false",
            "--data.device_data", str(loader == "device").lower(), *length]


def outcome(runs: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, torch.Tensor]]:
    version = runs / "quickstart" / "version_0"
    events = load_events(version, expected_files=len(list(version.glob("events.out.tfevents.*"))))
    weights = torch.load(version / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    return {tag: scalar_series(events, tag) for tag in CURVES}, weights


@pytest.mark.slow
@pytest.mark.parametrize(("loader", "length", "kill_at", "signal_name"), [
    ("device", ["--trainer.max_steps", "50"], 27, "SIGKILL"),
    ("dataloader", ["--trainer.max_steps", "50"], 33, "SIGKILL"),
    ("device", ["--trainer.max_epochs", "3", "--model.norm", "noisy_bn", "--data.augment", "true"], 41, "SIGKILL"),
    ("dataloader", ["--trainer.max_epochs", "3"], 13, "SIGTERM"),
])
def test_a_killed_and_resumed_fit_equals_the_uninterrupted_one(loader, length, kill_at, signal_name, tmp_path):
    main(arguments(tmp_path / "whole", length, loader))
    killer = json.dumps([{"class_path": "tests.cli.test_exact_resume.KillAt",
                          "init_args": {"step": kill_at, "name": signal_name}}])
    killed = subprocess.run([sys.executable, "-m", "normzoo", *arguments(tmp_path / "split", length, loader),
                             f"--trainer.callbacks={killer}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGTERM), killed.stderr[-1500:]
    main([*arguments(tmp_path / "split", length, loader), "--ckpt_path", "last"])

    whole_curves, whole_weights = outcome(tmp_path / "whole")
    split_curves, split_weights = outcome(tmp_path / "split")
    for tag in CURVES:
        assert split_curves[tag] == whole_curves[tag], tag  # same steps, no repeats, same values
    for key, value in whole_weights.items():
        assert torch.equal(split_weights[key], value), key


def test_a_resumed_event_file_sorts_after_the_interrupted_ones(tmp_path):
    """TensorBoard reads a run's event files by name (creation second first): a resume waits for a later second."""
    from normzoo.resume import after_newest_event_file

    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now}.host.99999.0").write_bytes(b"")
    after_newest_event_file(tmp_path)
    assert int(time.time()) > now
