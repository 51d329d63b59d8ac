"""SIGTERM (what schedulers send) and Ctrl-C end a fit with status 128 + signal, its state saved as last.ckpt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


class SendSignal(L.Callback):
    """Sends this process a signal right after training step ``step``, as a scheduler or a user would."""

    def __init__(self, step: int, name: str) -> None:
        self.step, self.name = step, name

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.name))


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_fit_with_its_status_and_the_state_saved(name, tmp_path):
    sender = {"class_path": "tests.cli.test_signals.SendSignal", "init_args": {"step": 7, "name": name}}
    callbacks = json.dumps([sender])
    command = [sys.executable, "-m", "normzoo", "fit", "--config", "configs/quickstart.yaml", "--runs_dir",
               str(tmp_path), "--trainer.enable_progress_bar", "false", f"--trainer.callbacks={callbacks}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    signum = getattr(signal, name)
    assert done.returncode == 128 + signum, done.stderr[-2000:]
    last = tmp_path / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    line = f"normzoo: {name} stopped the fit at step "
    assert line in done.stderr and f"state saved to {last} (step " in done.stderr, done.stderr[-2000:]
    saved_step = torch.load(last, weights_only=False)["global_step"]
    assert f"(step {saved_step})" in done.stderr and 7 <= saved_step <= 8
