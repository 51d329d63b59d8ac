"""What a study is: named runs of ``normzoo fit`` over shared configs, each over seeds, and their plan on disk.

The studies of the catalog (``normzoo.studies.catalog``, ``normzoo study --list``) and any
other ``Study`` are carried out by ``normzoo.studies.runner``. Every run is the study's
configs, its diagnostics callbacks and its own CLI overrides, trained once per seed
(``SEEDS``: 5 in full mode, 3 in quick mode, 2 in tiny mode; ``Study.seeds`` or ``normzoo study
--seeds N`` change it) with ``--seed_everything 0, 1, ...``. The report takes the seeds of a run
as one cell, shows its mean and 95% interval, and judges the study's ``claims`` from them
(``normzoo.report.claims``). The modes:

- ``full``: the paper's setup on the real dataset (a GPU and the dataset on disk);
- ``quick``: the study's ``quick_configs`` laid over it: MNIST-5k (padded to 32 x 32 for
  CNNs), fewer steps and slimmer models, so the whole study runs in minutes on a CPU;
  its diagnostics measure at their quick cadence;
- ``tiny``: quick with ``TINY_ARGS`` after it: a few steps, to test the machinery.

Runs go to ``<runs_dir>/<study>/<mode>/<run>_seed<k>/version_0`` and the report to
``<runs_dir>/<study>/<mode>/report``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from normzoo.errors import ConfigError
from normzoo.key_hparams import command_line_paths
from normzoo.report.cells import seeded_name
from normzoo.report.claims import Claim
from normzoo.report.runs import EVENT_GLOB, load_run

if TYPE_CHECKING:
    from normzoo.studies.sweep import Axis

Mode = Literal["full", "quick", "tiny"]
MODES: tuple[Mode, ...] = ("full", "quick", "tiny")

SEEDS: dict[Mode, int] = {"full": 5, "quick": 3, "tiny": 2}
"""Seeds per run of a study in each mode (a study may override them: ``Study.seeds``). Quick and full
modes train enough seeds for a 95% interval of a useful width (its t factor is 4.30 with 3 seeds,
2.78 with 5); tiny mode trains the fewest that make one (2), to check the machinery."""
SEED_OPTION = "seed_everything"
"""The ``normzoo fit`` option a study sets per seed (so ``--`` arguments may not)."""

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
        claims: the claims' directions, judged over seeds in the report:
            ``"STATEMENT: LEFT > RIGHT on METRIC"`` (see ``normzoo.report.claims``), LEFT and RIGHT
            names of ``runs``.
        seeds: seeds per run in the modes it names, instead of ``SEEDS``'s.
        sweep_axes: the axes of a study whose runs are a grid (``normzoo.studies.sweep``): the index lists
            each run's value on each axis, and ``sweep.md`` groups the runs by them.
        flat: one mode only (``normzoo sweep``): runs go straight under ``<runs_dir>/<name>``.

    Raises:
        ConfigError: two runs share a name, a claim is malformed or names no run, a seed count is below 1.
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
    claims: tuple[str, ...] = ()
    seeds: Mapping[Mode, int] = field(default_factory=dict)
    sweep_axes: tuple[Axis, ...] = ()
    flat: bool = False

    def __post_init__(self) -> None:
        names = [run.name for run in self.runs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"Study {self.name!r} names several runs {duplicates}: run names must be unique.")
        for claim in self.parsed_claims:
            unknown = [cell for cell in claim.cells if cell not in names]
            if unknown:
                raise ConfigError(f"Study {self.name!r}: the claim {claim.text!r} names {', '.join(unknown)}, "
                                  f"not a run of the study ({', '.join(names)}).")
        bad = {mode: count for mode, count in self.seeds.items() if mode not in MODES or not is_count(count)}
        if bad:
            raise ConfigError(f"Study {self.name!r}: seeds {bad}: give a whole number >= 1 for a mode of {MODES}.")

    @property
    def parsed_claims(self) -> list[Claim]:
        return [Claim.parse(text) for text in self.claims]

    def seeds_for(self, mode: Mode) -> int:
        """How many seeds each run trains in ``mode``: the study's own count, or ``SEEDS``'s."""
        return self.seeds.get(mode, SEEDS[mode])

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
    """A run at one seed with everything needed to launch it: ``fit_args`` follow ``normzoo fit``."""

    study_run: StudyRun
    seed: int
    folder: Path  # <study root>/<run name>_seed<seed>
    fit_args: tuple[str, ...]

    @property
    def name(self) -> str:
        """``<run>_seed<k>``: the run's folder, log and lock, and its label in the report."""
        return seeded_name(self.study_run.name, self.seed)


def study_root(study: Study, mode: Mode, runs_dir: str | Path) -> Path:
    """``<runs_dir>/<study>/<mode>``; a ``flat`` study's (a sweep's) runs go straight under ``<runs_dir>/<name>``."""
    return Path(runs_dir) / study.name if study.flat else Path(runs_dir) / study.name / mode


def plan_runs(study: Study, mode: Mode, runs_dir: str | Path, extra_args: Sequence[str] = (),
              seeds: int | None = None) -> list[PlannedRun]:
    """Every run's ``normzoo fit`` arguments at every seed: configs, diagnostics, the run's overrides, its seed,
    mode and user overrides.

    Seeds are 0 ... ``seeds`` - 1 (default ``study.seeds_for(mode)``), the runs in seed order (every run at seed
    0 first), so an interrupted study has whole comparisons at its first seeds.

    Raises:
        ConfigError: an unknown mode, a seed count below 1, or ``--seed_everything`` among the run's or the
            user's overrides (the study seeds its runs).
    """
    if mode not in MODES:
        raise ConfigError(f"Unknown study mode {mode!r}. Choose one of: {', '.join(MODES)}.")
    count = study.seeds_for(mode) if seeds is None else seeds
    if not is_count(count):
        raise ConfigError(f"--seeds {count}: a study trains each run with at least 1 seed.")
    setting = ["the arguments after --"] if SEED_OPTION in command_line_paths(extra_args) else []
    setting += [f"run {run.name!r}" for run in study.runs if SEED_OPTION in command_line_paths(run.args_for(mode))]
    if setting:
        raise ConfigError(f"--{SEED_OPTION} is set by the study, once per seed (0 ... N-1), not by "
                          f"{', '.join(setting)}: give the number of seeds with --seeds N instead.")
    root = study_root(study, mode, runs_dir)
    configs = [arg for path in study.config_files(mode) for arg in ("--config", str(path))]
    configs += [arg for diagnostic in study.diagnostics for arg in diagnostic.args_for(mode)]
    tail = [*QUIET_ARGS, *(TINY_ARGS if mode == "tiny" else ()), *extra_args]
    planned = []
    for seed in range(count):
        for run in study.runs:
            name = seeded_name(run.name, seed)
            planned.append(PlannedRun(run, seed, root / name,
                                      (*configs, *run.args_for(mode), f"--{SEED_OPTION}", str(seed), *tail,
                                       "--runs_dir", str(root), "--run_name", name)))
    return planned


def is_count(value: object) -> bool:
    """Whether ``value`` is a whole number >= 1 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def is_finished(folder: Path) -> bool:
    """True when a version of the run logged ``zoo/run/completed`` (it ran to its end or diverged)."""
    versions = sorted({event.parent for event in folder.glob(f"*/{EVENT_GLOB}")}) if folder.is_dir() else []
    return any(load_run(version).status in ("completed", "diverged") for version in versions)


def newest_version(folder: Path) -> Path | None:
    """The run folder's highest ``version_N`` (numerically: ``version_10`` after ``version_9``), or None."""
    versions = [path for path in folder.glob("version_*") if path.name.split("_")[-1].isdigit()]
    return max(versions, key=lambda path: int(path.name.split("_")[-1]), default=None)


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
