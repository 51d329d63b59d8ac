"""What a study is: named runs of ``normzoo fit`` over shared configs, and their plan on disk.

The studies of the catalog (``normzoo.studies.catalog``, ``normzoo study --list``) and any
other ``Study`` are carried out by ``normzoo.studies.runner``. Every run is the study's
configs, its diagnostics callbacks and its own CLI overrides, in one of three modes:

- ``full``: the paper's setup on the real dataset (a GPU and the dataset on disk);
- ``quick``: the study's ``quick_configs`` laid over it: MNIST-5k (padded to 32 x 32 for
  CNNs), fewer steps and slimmer models, so the whole study runs in minutes on a CPU;
  its diagnostics measure at their quick cadence;
- ``tiny``: quick with ``TINY_ARGS`` after it: a few steps, to test the machinery.

Runs go to ``<runs_dir>/<study>/<mode>/<run>/version_0`` and the report to
``<runs_dir>/<study>/<mode>/report``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from normzoo.errors import ConfigError
from normzoo.report.runs import EVENT_GLOB, load_run

Mode = Literal["full", "quick", "tiny"]
MODES: tuple[Mode, ...] = ("full", "quick", "tiny")

TINY_ARGS = (
    "--trainer.max_steps", "3",
    "--trainer.max_epochs", "null",
    "--trainer.val_check_interval", "3",
    "--trainer.check_val_every_n_epoch", "null",
    "--trainer.limit_val_batches", "2",  # not "1": the CLI reads it as 1.0, which means every batch
    "--trainer.num_sanity_val_steps", "0",
    "--trainer.log_every_n_steps", "1",
)
"""Overrides of ``tiny`` mode: 3 steps, then two validation batches."""


PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""The installed ``normzoo`` package: its ``configs/`` and ``studies/catalog/`` hold the catalog's config files."""

QUIET_ARGS = ("--trainer.enable_model_summary", "false")
"""Study runs write log files, not terminals: no model summary; the CLI writes one progress line per epoch there."""


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: a name (its folder) and its CLI overrides of the study's configs.

    ``quick_args`` apply in quick and tiny modes only, after ``args`` (e.g. fewer GroupNorm
    groups for the slimmer quick model).
    """

    name: str
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()

    def args_for(self, mode: Mode) -> tuple[str, ...]:
        return self.args + (self.quick_args if mode != "full" else ())


@dataclass(frozen=True)
class StudyDiagnostic:
    """A diagnostics callback of every run of a study, and how often it measures in each mode.

    The runner appends it to the run's callbacks (jsonargparse's ``--trainer.callbacks+=``)
    and sets its options on that item, so a mode changes its cadence and nothing else.

    Args:
        callback: a class of ``normzoo.callbacks`` (``"ActivationDrift"``).
        every_n_steps: its cadence in full mode.
        quick_every_n_steps: its cadence in quick and tiny modes.
        options: its other arguments (``{"layers": ["last"]}``).
    """

    callback: str
    every_n_steps: int
    quick_every_n_steps: int
    options: Mapping[str, Any] = field(default_factory=dict)

    def args_for(self, mode: Mode) -> tuple[str, ...]:
        """The ``normzoo fit`` arguments that add this callback in ``mode``."""
        every = self.every_n_steps if mode == "full" else self.quick_every_n_steps
        options = {"every_n_steps": every, **self.options}
        return (f"--trainer.callbacks+=normzoo.callbacks.{self.callback}",
                *(f"--trainer.callbacks.{key}={json.dumps(value, separators=(',', ':'))}"
                  for key, value in options.items()))


@dataclass(frozen=True)
class Study:
    """A study: the claim it tests, its runs, and how ``normzoo report`` shows them.

    Args:
        name: folder name under the runs dir, e.g. ``ioffe_mnist``.
        title: the report's title.
        claim: Markdown put at the top of the report: the paper's setup and numbers.
        configs: config files of every run (relative to ``root``), in order.
        quick_configs: config files laid over ``configs`` in quick and tiny modes.
        runs: the runs.
        report_args: extra ``normzoo report`` arguments (``--versus``, ``--bands`` ...).
        diagnostics: callbacks of every run, after the configs' own.
        root: the folder the config paths are relative to.
    """

    name: str
    title: str
    claim: str
    configs: tuple[str, ...]
    quick_configs: tuple[str, ...]
    runs: tuple[StudyRun, ...]
    report_args: tuple[str, ...] = ()
    diagnostics: tuple[StudyDiagnostic, ...] = ()
    root: Path = field(default=Path("."), compare=False)

    def __post_init__(self) -> None:
        names = [run.name for run in self.runs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"Study {self.name!r} names several runs {duplicates}: run names must be unique.")

    def config_files(self, mode: Mode) -> list[Path]:
        """The configs of ``mode``, resolved against ``root``; raises ``ConfigError`` if one is missing."""
        names = list(self.configs) + (list(self.quick_configs) if mode != "full" else [])
        paths = [self.root / name for name in names]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ConfigError(f"Study {self.name!r} needs config files that are not there: {', '.join(missing)}.")
        return paths


@dataclass(frozen=True)
class PlannedRun:
    """A run with everything needed to launch it: ``fit_args`` follow ``normzoo fit``."""

    study_run: StudyRun
    folder: Path  # <study root>/<run name>
    fit_args: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.study_run.name


def study_root(study: Study, mode: Mode, runs_dir: str | Path) -> Path:
    return Path(runs_dir) / study.name / mode


def plan_runs(study: Study, mode: Mode, runs_dir: str | Path, extra_args: Sequence[str] = ()) -> list[PlannedRun]:
    """Every run's ``normzoo fit`` arguments: configs, diagnostics, the run's overrides, mode and user overrides."""
    if mode not in MODES:
        raise ConfigError(f"Unknown study mode {mode!r}. Choose one of: {', '.join(MODES)}.")
    root = study_root(study, mode, runs_dir)
    configs = [arg for path in study.config_files(mode) for arg in ("--config", str(path))]
    configs += [arg for diagnostic in study.diagnostics for arg in diagnostic.args_for(mode)]
    tail = [*QUIET_ARGS, *(TINY_ARGS if mode == "tiny" else ()), *extra_args]
    return [
        PlannedRun(run, root / run.name,
                   (*configs, *run.args_for(mode), *tail, "--runs_dir", str(root), "--run_name", run.name))
        for run in study.runs
    ]


def is_finished(folder: Path) -> bool:
    """True when a version of the run logged ``run/completed`` (it ran to its end or diverged)."""
    versions = sorted({event.parent for event in folder.glob(f"*/{EVENT_GLOB}")}) if folder.is_dir() else []
    return any(load_run(version).status in ("completed", "diverged") for version in versions)


def resume_args(folder: Path) -> tuple[str, ...]:
    """How to restart an unfinished run: from its ``last.ckpt`` if it saved one, else from scratch.

    A run without a checkpoint leaves nothing worth keeping, so its folder is removed
    (a fresh ``version_0`` then keeps the study's layout).
    """
    if any(folder.glob("version_*/checkpoints/last.ckpt")):
        return ("--ckpt_path", "last")
    if folder.exists():
        shutil.rmtree(folder)
    return ()
