"""Checkpoints that are what their names say: ``last.ckpt`` is the newest state, and no write is ever half done.

Lightning's ``ModelCheckpoint`` (2.6) rewrites ``last.ckpt`` only at a validation that also
saved a top-k checkpoint, so a run whose best ``val/acc`` came early ends with a ``last.ckpt``
from that early step, and ``--ckpt_path last`` would silently retrain everything after it.
``NormZooCheckpoint`` writes ``last.ckpt`` at every validation and at the end of fit, and
remembers which step each file holds. ``AtomicCheckpointIO`` writes every checkpoint to a
temporary file in the same folder, flushes it to disk and renames it over the old one: a
full disk or a kill mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import signal
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from normzoo.errors import CheckpointWriteError, ConfigError
from normzoo.files import atomic_file
from normzoo.tb_logging import flatten, plain


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the target, ``fsync``, then ``os.replace`` onto it.

    Remote paths (``s3://``, ...) go through Lightning's own writer.

    Raises:
        CheckpointWriteError: the write failed (a full disk, a read-only folder); the message
            names the file and says the previous one is intact.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(target, "wb") as file:
                torch.save(checkpoint, file)
        except OSError as error:
            kept = "the previous checkpoint there is intact" if target.exists() else "no checkpoint was written"
            raise CheckpointWriteError(f"Cannot write the checkpoint {target}: {error}; {kept}.") from error

class NormZooCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is always the newest state (see the module docstring).

    With ``save_last``, ``last.ckpt`` is written at every validation (or training-epoch end,
    where Lightning saves then) whether or not a top-k checkpoint was saved, and at the end of
    fit, and when SIGTERM or Ctrl-C interrupts the fit (``interrupted_by`` then names the
    signal). The loggers are flushed before every checkpoint, so a run killed at any moment
    (``kill -9``) has every logged value up to its newest checkpoint on disk. ``steps`` maps
    each checkpoint path written to the global step it holds, kept in the callback's state,
    so a summary can say which step a file is.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: dict[str, int] = {}
        self.interrupted_by: signal.Signals | None = None
        self._last_step = -1

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_newest_last(trainer)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_newest_last(trainer)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_newest_last(trainer)

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """On SIGTERM (what schedulers send before killing a job) or Ctrl-C: save the state now as ``last.ckpt``."""
        super().on_exception(trainer, pl_module, exception)
        if isinstance(exception, SIGTERMException):
            self.interrupted_by = signal.SIGTERM
        elif isinstance(exception, KeyboardInterrupt):
            self.interrupted_by = signal.SIGINT
        else:
            return
        self._save_newest_last(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": dict(self.steps)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.steps = dict(state_dict.get("steps", {}))

    def step_of(self, path: str) -> int | None:
        """The global step a checkpoint file written by this callback holds (None if unknown)."""
        return self.steps.get(path)

    @override
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        for logger in trainer.loggers:  # the curves up to this step are on disk before a checkpoint claims it
            logger.save()
        super()._save_checkpoint(trainer, filepath)
        self.steps[filepath] = trainer.global_step

    @override
    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_step = trainer.global_step
        if self.last_model_path:
            self.steps[self.last_model_path] = trainer.global_step

    def _save_newest_last(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` unless it already holds this step (or this is no fit, or a sanity check)."""
        if not self.save_last or trainer.fast_dev_run or trainer.sanity_checking:
            return
        if trainer.state.fn != TrainerFn.FITTING or self._last_step == trainer.global_step:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


TRAINING_ONLY_HPARAMS = ("optimizer", "lr_scheduler")
"""Hyperparameters that shape training but not the model: free to differ when a checkpoint is only evaluated."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents (tensors memory-mapped, not read), or one clear error saying why it cannot be.

    A checkpoint file is a zip archive; an empty, truncated or foreign file is refused before
    anything in it is unpickled.

    Raises:
        ConfigError: the file is missing, unreadable, or not a whole checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--ckpt_path {path}: no such checkpoint file. Give the path of a .ckpt file, or "
                          "--ckpt_path last to continue the run named by --run_name/--runs_dir.")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        raise ConfigError(f"--ckpt_path {path}: not a readable checkpoint ({error}); the file is empty, truncated "
                          "or of another kind. Use an earlier checkpoint of the run.") from None
    if broken is not None:
        raise ConfigError(f"--ckpt_path {path}: the checkpoint is damaged (entry {broken} fails its checksum). Use an "
                          "earlier checkpoint of the run.")
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:
        raise ConfigError(f"--ckpt_path {path}: the checkpoint cannot be read ({type(error).__name__}: {error}).") \
            from None


def check_checkpoint_matches(path: str | Path, hparams: dict[str, Any], resuming: bool) -> None:
    """Refuse a checkpoint whose model differs from the configured one, or, to resume a fit, whose settings differ.

    Evaluating (test, validate, predict) needs the same model: the same LightningModule class and
    the same model hyperparameters (norm, architecture, sizes). Resuming a fit needs the same
    run: the optimizer and LR scheduler too, so the record of the run stays true; and a healthy
    run: one that ``StopOnDivergence`` stopped holds NaN/inf weights, and more training on them
    would only write a false record.

    Raises:
        ConfigError: naming each differing setting, its checkpoint value and its configured value;
            or the step at which the run diverged.
    """
    checkpoint = read_checkpoint(path)
    diverged_at = (checkpoint.get("callbacks") or {}).get("StopOnDivergence", {}).get("diverged_at")
    if resuming and diverged_at is not None:
        raise ConfigError(f"--ckpt_path {path}: this run diverged at step {diverged_at} (its training loss became "
                          "NaN/inf) and is not resumed. Start a new run with a lower learning rate, another init "
                          "gain or a norm.")
    skipped = {"_instantiator"} | (set() if resuming else set(TRAINING_ONLY_HPARAMS))

    def settings(values: dict[str, Any]) -> dict[str, Any]:
        return flatten({key: plain(value) for key, value in values.items() if key not in skipped}, separator=".")

    saved, configured = settings(dict(checkpoint.get("hyper_parameters") or {})), settings(hparams)
    differing = [key for key in dict.fromkeys([*saved, *configured]) if saved.get(key) != configured.get(key)]
    if not differing:
        return
    details = "; ".join(f"{key}: {saved.get(key)!r} in the checkpoint, {configured.get(key)!r} now"
                        for key in differing)
    if resuming:
        raise ConfigError(f"--ckpt_path {path} cannot resume this run: {details}. Configure the run as the checkpoint "
                          "was (or drop the override), or start a new run without --ckpt_path.")
    raise ConfigError(f"--ckpt_path {path} holds another model: {details}. Pass the config the checkpoint was "
                      "trained with (its run folder's config.yaml).")

