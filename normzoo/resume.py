"""``--ckpt_path last``: find the newest checkpoint of a run, so a resumed fit continues it in place.

A run lives in ``<runs_dir>/<run_name>/version_N``, with ``checkpoints/last.ckpt`` written
by the CLI's NormZooCheckpoint at every validation and at the end of fit. Resuming the newest version that has one
into the same ``version_N`` (same TensorBoard folder, same checkpoints) makes the curves
join: the resumed process logs from the checkpoint's step on.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from normzoo.callbacks.probe import RngState, capture_rng, restore_rng
from normzoo.errors import ConfigError

LAST = "last"
"""The ``--ckpt_path`` value that means "the newest last.ckpt of this run"."""


def last_checkpoint(runs_dir: str | Path, run_name: str) -> tuple[Path, int]:
    """The newest ``version_N/checkpoints/last.ckpt`` of a run, and its version ``N``.

    Raises:
        ConfigError: the run has no version with a ``last.ckpt``.
    """
    run = Path(runs_dir) / run_name
    versions = sorted(
        (int(match.group(1)), path)
        for path in (run.iterdir() if run.is_dir() else [])
        if (match := re.fullmatch(r"version_(\d+)", path.name)) and (path / "checkpoints" / "last.ckpt").is_file()
    )
    if not versions:
        raise ConfigError(
            f"--ckpt_path last: no checkpoint to resume under {run}/version_*/checkpoints/last.ckpt. Start the run "
            "without --ckpt_path, pass --run_name/--runs_dir of an existing run, or give a checkpoint's path."
        )
    version, path = versions[-1]
    return path / "checkpoints" / "last.ckpt", version


def after_newest_event_file(folder: Path) -> None:
    """Wait, if need be (under a second), until a new event file in ``folder`` would sort after the existing ones.

    TensorBoard reads a run's event files in name order, and the names begin with the second
    they were created in, then the host and process id. A resume started within the same second
    as the interrupted process, with a lower process id, would be read first, and its purge of
    the redone steps would apply to the wrong file.
    """
    seconds = [int(part[3]) for part in (p.name.split(".") for p in folder.glob("events.out.tfevents.*"))
               if len(part) > 3 and part[3].isdigit()]
    delay = max(seconds, default=0) + 1 - time.time()
    if delay > 0:
        time.sleep(delay)


class ExactResume(Callback):
    """Make a resumed fit continue as the uninterrupted one: the same logging steps and random draws.

    - Logging steps: Lightning logs at a counter of the batches that stepped, saved in
      checkpoints; on restart it adds one, assuming the checkpoint was saved in
      ``on_validation_end`` before its own increment. A checkpoint saved at a training epoch's
      end (the default) or on SIGTERM is saved after it, so the resumed run's validation curves
      came out one step late. At the first batch after a restore the counter is put back to
      what it counts: the optimizer steps (automatic optimization) or the trained batches
      (manual optimization).
    - Random draws (noisy BN, dropout, augmentation): every generator's state (torch's CPU and
      CUDA ones, numpy's, Python's) is saved with the checkpoint and restored when the resumed
      fit starts, so the draws after it are those the uninterrupted fit made. Single-process
      fits only: under DDP each rank has its own generators and rank zero alone writes the
      checkpoint, so the ranks continue from ``seed_everything``'s seeds.
    """

    def __init__(self) -> None:
        self._restored = False
        self._rng: RngState | None = None
        self._world_size = 1

    @override
    def state_dict(self) -> dict[str, Any]:
        cpu, cuda, (name, keys, position, has_gauss, gauss), python = capture_rng()
        numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]
        # plain types and tensors only: Lightning loads checkpoints with torch.load(weights_only=True)
        return {"rng": [cpu, cuda, numpy_state, list(python)], "world_size": self._world_size}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng = None
        if state_dict.get("world_size") == 1:
            cpu, cuda, (name, keys, position, has_gauss, gauss), python = state_dict["rng"]
            numpy_state = (name, keys.numpy().astype(np.uint32), position, has_gauss, gauss)
            self._rng = (cpu, cuda, numpy_state, tuple(python))

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._world_size = trainer.world_size

    @override
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._restored = True

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng is not None and trainer.world_size == 1:
            restore_rng(self._rng)
        self._rng = None

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self._restored:
            self._restored = False
            loop = trainer.fit_loop.epoch_loop
            loop._batches_that_stepped = (trainer.global_step if pl_module.automatic_optimization
                                          else loop.batch_progress.total.completed)
