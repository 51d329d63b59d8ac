"""How long a study will take, measured before it starts.

For each run the CLI builds the model, data and trainer exactly as ``normzoo fit`` would
(``run=False``), counts the optimizer steps the trainer will take, and times a few real
training steps (forward, backward, optimizer step) on the device the run will use. Runs
with the same model and batch share one timing; the seeds of a run share its estimate. The
estimate is the steps times the step time, plus allowances per step (Lightning's loop) and
per run (start-up), measured here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from normzoo.studies.spec import PlannedRun, StudyRun

RUN_OVERHEAD_S = 11.0
"""Per run: process start, imports, data loading, checkpoints (measured: ~11 s on 2 CPU cores)."""
LOOP_OVERHEAD = 1.3
"""Validation passes and sparse diagnostics, in proportion to the bare step time."""
STEP_OVERHEAD_S = {"cpu": 0.007, "cuda": 0.002}
"""Lightning's loop, logging and callbacks per step, whatever the model (measured: a 3 x 100
MLP takes ~8 ms a step in ``normzoo fit`` on 2 CPU cores, ~1 ms of it compute; on one H100
the GPU loop takes ~1.7 ms over 2.4 ms eager)."""
TIMED_STEPS = 3


@dataclass(frozen=True)
class RunEstimate:
    """``steps`` optimizer steps at ``step_seconds`` each (bare compute), on a ``device_type``."""

    steps: int
    step_seconds: float
    device_type: str = "cpu"

    @property
    def seconds(self) -> float:
        per_step = LOOP_OVERHEAD * self.step_seconds + STEP_OVERHEAD_S.get(self.device_type, 0.0)
        return RUN_OVERHEAD_S + self.steps * per_step


def estimate_runs(planned: list[PlannedRun], device: torch.device) -> dict[str, RunEstimate]:
    """A ``RunEstimate`` per run name, timing each distinct (model, data) setup once on ``device``."""
    timings: dict[str, float] = {}
    estimates: dict[str, RunEstimate] = {}
    by_study_run: dict[StudyRun, RunEstimate] = {}  # a run's seeds take the same steps at the same speed
    for run in planned:
        if run.study_run in by_study_run:
            estimates[run.name] = by_study_run[run.study_run]
            continue
        model, datamodule, trainer = build(run)
        datamodule.prepare_data()
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        steps = planned_steps(trainer.max_steps, trainer.max_epochs, len(loader))
        key = json.dumps({"model": dict(model.hparams), "data": dict(datamodule.hparams)}, sort_keys=True, default=str)
        if key not in timings:
            timings[key] = time_training_step(model, next(iter(loader)), device)
        estimates[run.name] = by_study_run[run.study_run] = RunEstimate(steps, timings[key], device.type)
    return estimates


def build(run: PlannedRun):
    """The (model, datamodule, trainer) that ``normzoo fit <run.fit_args>`` would train, without training."""
    from normzoo.cli import NormZooCLI, own_arguments_only

    args = [*run.fit_args, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    with quiet_lightning(), own_arguments_only():
        cli = NormZooCLI(args=args, run=False)
    return cli.model, cli.datamodule, cli.trainer


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up chatter and warnings while building runs."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def planned_steps(max_steps: int, max_epochs: int | None, batches_per_epoch: int) -> int:
    """The optimizer steps a trainer takes: the first of ``max_steps`` and ``max_epochs`` reached."""
    limits = [max_steps] if max_steps is not None and max_steps >= 0 else []
    if max_epochs is not None and max_epochs >= 0:
        limits.append(max_epochs * batches_per_epoch)
    return min(limits) if limits else 1000 * batches_per_epoch  # Lightning's default of 1000 epochs


def time_training_step(model: torch.nn.Module, batch, device: torch.device) -> float:
    """Seconds per training step (median of ``TIMED_STEPS`` after a warm-up) on ``device``."""
    model = model.to(device).train()
    inputs, targets = (t.to(device) for t in batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)  # the update's cost, not the run's optimizer
    times = []
    for index in range(TIMED_STEPS + 1):
        start = time.perf_counter()
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index:  # the first step warms up kernels and allocations
            times.append(time.perf_counter() - start)
    model.to("cpu")
    return sorted(times)[len(times) // 2]


def format_duration(seconds: float) -> str:
    """``95`` -> ``2 min``, ``5400`` -> ``1.5 h``."""
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def schedule_seconds(estimates: list[float], slots: int) -> float:
    """Wall time of running these jobs, longest first, on ``slots`` parallel workers."""
    finish = [0.0] * max(1, slots)
    for seconds in sorted(estimates, reverse=True):
        finish[finish.index(min(finish))] += seconds
    return max(finish)
