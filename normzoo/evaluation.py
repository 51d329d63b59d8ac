"""An evaluation of a checkpoint (``validate``, ``test``, ``predict``): logged at its step and recorded as such.

Lightning evaluates a checkpoint with fresh loop counters: its metrics land at step 0, and
nothing in its log folder says what was evaluated, so TensorBoard and ``normzoo report``
would show a run that stopped at step 0. ``EvaluatedCheckpoint`` puts the trainer's step and
epoch counters where the checkpoint's fit left them, so the evaluation's metrics are logged
at the step where the fit logged that checkpoint's own validation, and it writes
``evaluation.yaml`` into the evaluation's log folder: the command, the checkpoint, its
global step and epoch, and the fit run the checkpoint belongs to. ``normzoo report`` reads
that record and shows the folder as an evaluation of its fit run, not as a run of its own.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override

from normzoo.files import write_atomically

EVALUATION_FILE = "evaluation.yaml"
"""The record an evaluation writes into its log folder."""


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation evaluated.

    ``fit_run`` is the folder of the run that wrote the checkpoint (``<run>/checkpoints/*.ckpt``),
    relative to the evaluation's own folder, so a moved runs folder keeps the link; None when
    the checkpoint lies elsewhere.
    """

    command: str
    checkpoint: str
    step: int
    epoch: int
    fit_run: str | None = None

    def fit_run_dir(self, folder: str | Path) -> Path | None:
        """The fit run's folder, for the evaluation logged in ``folder``."""
        return None if self.fit_run is None else (Path(folder) / self.fit_run).resolve()


def fit_run_of(checkpoint: str | Path) -> Path | None:
    """The run folder that holds ``checkpoint`` in its ``checkpoints/`` folder, or None."""
    path = Path(checkpoint).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def write_evaluation(folder: str | Path, evaluation: Evaluation) -> Path:
    """Write ``evaluation`` as ``evaluation.yaml`` into ``folder``; returns the file."""
    return write_atomically(Path(folder) / EVALUATION_FILE, yaml.safe_dump(asdict(evaluation), sort_keys=False))


def read_evaluation(folder: str | Path) -> Evaluation | None:
    """The record in ``folder``, or None for a folder that is no evaluation (a fit run).

    Raises:
        OSError, UnicodeDecodeError, yaml.YAMLError: the record is unreadable.
    """
    path = Path(folder) / EVALUATION_FILE
    if not path.is_file():
        return None
    loaded = yaml.safe_load(path.read_text()) or {}
    return Evaluation(command=str(loaded.get("command", "evaluate")), checkpoint=str(loaded.get("checkpoint", "")),
                      step=int(loaded.get("step", 0)), epoch=int(loaded.get("epoch", 0)),
                      fit_run=loaded.get("fit_run"))


class EvaluatedCheckpoint(Callback):
    """Log an evaluation of a checkpoint at the checkpoint's step and record what it evaluated (module docstring).

    In a fit it does nothing. ``evaluation`` holds the record of the last evaluation of a
    checkpoint (None before one, or when the model was evaluated as it was built). The trainer
    keeps the checkpoint's counters after the evaluation: it is meant for a trainer that only
    evaluates, as the CLI builds one per command.
    """

    def __init__(self) -> None:
        self.evaluation: Evaluation | None = None

    @override
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING or trainer.ckpt_path is None:
            return
        fit_loop_state = (checkpoint.get("loops") or {}).get("fit_loop")
        if fit_loop_state:  # the step, logging step and epoch counters, as the fit left them
            trainer.fit_loop.load_state_dict(fit_loop_state)
        self.evaluation = Evaluation(
            command=str(trainer.state.fn.value), checkpoint=str(trainer.ckpt_path),
            step=int(checkpoint.get("global_step", trainer.global_step)),
            epoch=int(checkpoint.get("epoch", trainer.current_epoch)),
        )

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._record(trainer)

    @override
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    @override
    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def _record(self, trainer: L.Trainer) -> None:
        """Write ``evaluation.yaml`` into the log folder, if the evaluation logged into one (rank zero)."""
        if self.evaluation is None or not trainer.loggers:
            return
        for logger in trainer.loggers:  # the metrics are on disk before the record claims them
            logger.save()
        folder = trainer.log_dir  # a collective under DDP: every rank asks
        if not trainer.is_global_zero or folder is None or not Path(folder).is_dir():
            return
        fit_run = fit_run_of(self.evaluation.checkpoint)
        relative = None if fit_run is None else os.path.relpath(fit_run, Path(folder).resolve())
        self.evaluation = Evaluation(**{**asdict(self.evaluation), "fit_run": relative})
        write_evaluation(folder, self.evaluation)
