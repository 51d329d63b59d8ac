"""Training progress for logs: ``LineProgressBar`` prints one plain line per epoch and per validation.

Lightning's live bar (``TQDMProgressBar``) redraws one terminal line with carriage returns
and cursor moves. Written to a file (``normzoo fit ... > log``, a SLURM job, a study's run
log) that becomes kilobytes of overwritten fragments, lines thousands of characters long,
and warnings spliced into them. ``LineProgressBar`` writes whole lines instead, such as::

    epoch 1/10  step 67  train/loss 0.2137  val/loss 0.3012  val/acc 0.9120  5.3s  12.6 steps/s  total 0:00:05
    epoch 2/10  step 100  validation at batch 33/67  train/loss 0.1010  val/loss 0.2815  val/acc 0.9200  ...

Each line is written at once with its newline and flushed, so anything written to stderr
meanwhile (a warning) lands between two lines, never inside one. The lines hold no control
characters. ``default_progress_bar`` picks the live bar when stdout is a terminal and these
lines otherwise; ``NormZooCLI`` uses it, and ``--trainer.enable_progress_bar false`` turns
either off, as Lightning's option always does. A bar given as a callback is used as it is:
``--trainer.callbacks+=normzoo.progress.LineProgressBar`` prints lines on a terminal too,
``--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar`` draws the live bar into
a file.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override

KEY_METRICS = ("train/loss", "val/loss", "val/acc")
"""The metrics every line shows first (when logged), before any other ``prog_bar=True`` metric."""


def interactive() -> bool:
    """Whether stdout is a terminal, where a person watches a live bar; a file or a pipe gets lines."""
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def default_progress_bar(refresh_rate: int) -> ProgressBar:
    """Lightning's live bar (redrawn every ``refresh_rate`` steps) on a terminal, else a ``LineProgressBar``."""
    return TQDMProgressBar(refresh_rate=refresh_rate) if interactive() else LineProgressBar()


def format_line(
    *,
    epoch: int,
    step: int,
    metrics: Mapping[str, float],
    seconds: float,
    steps: int,
    elapsed: float,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    where: str = "",
) -> str:
    """One progress line: epoch (1-based) and step with their limits, ``where``, the metrics and the timing.

    ``seconds`` and ``steps`` cover the stretch since the previous line (its time and training
    speed); ``elapsed`` is the whole fit's time so far.
    """
    parts = [f"epoch {epoch}" + (f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""),
             f"step {step}" + (f"/{max_steps}" if max_steps and max_steps > 0 else "")]
    if where:
        parts.append(where)
    parts += [f"{name} {value:.4f}" for name, value in metrics.items()]
    parts.append(f"{seconds:.1f}s")
    if seconds > 0 and steps > 0:
        parts.append(f"{steps / seconds:.1f} steps/s")
    parts.append(f"total {datetime.timedelta(seconds=int(elapsed))}")
    return "  ".join(parts)


def line_metrics(trainer: Trainer, names: Sequence[str], validated: bool) -> dict[str, float]:
    """The scalar metrics a line shows: ``names`` first, then the other progress-bar metrics.

    Without a validation in the stretch the line covers, ``val/*`` metrics are left out: they
    would be an older validation's values.
    """
    found: dict[str, float] = {}
    candidates = {**trainer.progress_bar_metrics, **trainer.callback_metrics}
    for name in [*names, *trainer.progress_bar_metrics]:
        if name in found or name not in candidates or (not validated and name.startswith("val")):
            continue
        value = _scalar(candidates[name])
        if value is not None:
            found[name] = value
    return found


def _scalar(value: Any) -> float | None:
    """A metric as a float, or None for anything that is not one number."""
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several elements
        return None


class LineProgressBar(ProgressBar):
    """Lightning progress bar for logs: one line per training epoch and one per mid-epoch validation.

    An epoch's line comes at its end and carries the validation run there (Lightning validates
    before the epoch ends, also when ``max_steps`` or a stop request ends it early). A
    validation inside an epoch (``--trainer.val_check_interval``) gets its own line, marked
    with the batch it came after. Sanity checks, and the ``validate``, ``test`` and ``predict``
    subcommands, print nothing: the CLI's closing summary reports them. Only rank zero prints
    (Lightning disables the bar on the other ranks).

    Args:
        metrics: the metrics each line shows first, when logged; every other metric logged with
            ``prog_bar=True`` follows them.
    """

    def __init__(self, metrics: Sequence[str] = KEY_METRICS) -> None:
        super().__init__()
        self.metrics = tuple(metrics)
        self._enabled = True
        self._fit_start = self._since = time.perf_counter()
        self._since_step = 0
        self._validated_at_epoch_end = False

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    @override
    def disable(self) -> None:
        self._enabled = False

    @override
    def enable(self) -> None:
        self._enabled = True

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._mark(trainer)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._validated_at_epoch_end = False

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress
        max_steps_reached = 0 < trainer.max_steps <= trainer.global_step
        if progress.is_last_batch or max_steps_reached or trainer.should_stop:  # the epoch's own line reports it
            self._validated_at_epoch_end = True
            return
        total = trainer.num_training_batches
        where = f"validation at batch {progress.current.ready}" + (f"/{total}" if math.isfinite(total) else "")
        self._write(trainer, where, validated=True)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "", validated=self._validated_at_epoch_end)

    @override
    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            kwargs.setdefault("flush", True)
            print(*args, **kwargs)

    def _write(self, trainer: Trainer, where: str, validated: bool) -> None:
        """Write one line (rank zero only) and start the next stretch."""
        if self._enabled:
            now = time.perf_counter()
            line = format_line(
                epoch=trainer.current_epoch + 1, step=trainer.global_step,
                metrics=line_metrics(trainer, self.metrics, validated), seconds=now - self._since,
                steps=trainer.global_step - self._since_step, elapsed=now - self._fit_start,
                max_epochs=trainer.max_epochs, max_steps=trainer.max_steps, where=where,
            )
            sys.stdout.write(line + "\n")  # one write with its newline: nothing can land inside it
            sys.stdout.flush()
        self._mark(trainer)

    def _mark(self, trainer: Trainer) -> None:
        self._since = time.perf_counter()
        self._since_step = trainer.global_step
