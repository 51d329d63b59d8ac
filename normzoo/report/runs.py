"""Read normzoo runs back from disk: their TensorBoard scalars, hyperparameters and status.

A run is a folder holding ``events.out.tfevents.*`` files (a resumed run holds several;
where the same step was logged twice, the newer file wins), usually with the
``hparams.yaml`` that ``NormClassifier`` saves beside it. A folder that also holds an
``evaluation.yaml`` is an evaluation of a checkpoint (``normzoo validate/test/predict``,
see ``normzoo.evaluation``): ``Run.evaluation`` says what it evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from normzoo.callbacks.divergence import COMPLETED_TAG, DIVERGED_TAG
from normzoo.errors import ConfigError
from normzoo.evaluation import Evaluation, read_evaluation
from normzoo.tb_logging import flatten

EVENT_GLOB = "events.out.tfevents.*"
LOSS_TAG = "train/loss"

RunStatus = Literal["completed", "diverged", "incomplete", "broken"]


@dataclass(frozen=True)
class Series:
    """One scalar tag of a run: steps in increasing order and their values."""

    steps: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def last(self) -> float:
        return self.values[-1]


@dataclass
class Run:
    """One training run as logged: ``label`` names it in figures and tables.

    ``hparams`` is ``hparams.yaml`` flattened to dotted keys (``norm``, ``lr``,
    ``data.batch_size``, ``optimizer.init_args.lr`` ...).
    """

    path: Path
    label: str
    hparams: dict[str, Any]
    scalars: dict[str, Series] = field(repr=False)
    broken: str | None = None
    """Why part of the run's record could not be read (its hyperparameters are then unknown)."""
    evaluation: Evaluation | None = None
    """What the folder evaluated, for an evaluation of a checkpoint; None for a fit run."""

    @property
    def fit_run_dir(self) -> Path | None:
        """For an evaluation, the folder of the fit run whose checkpoint it evaluated (None if unknown)."""
        return None if self.evaluation is None else self.evaluation.fit_run_dir(self.path)

    @property
    def diverged_at(self) -> int | None:
        """The step where the training loss was first NaN/inf, or None.

        Read from ``zoo/run/diverged`` (``StopOnDivergence``), or, for runs logged without it,
        from the first non-finite ``train/loss``.
        """
        marks = self.scalars.get(DIVERGED_TAG)
        if marks is not None:
            flagged = [step for step, value in zip(marks.steps, marks.values, strict=True) if value > 0]
            return flagged[0] if flagged else None
        loss = self.scalars.get(LOSS_TAG)
        if loss is not None:
            bad = [step for step, value in zip(loss.steps, loss.values, strict=True) if not math.isfinite(value)]
            return bad[0] if bad else None
        return None

    @property
    def status(self) -> RunStatus:
        if self.broken is not None:
            return "broken"
        if self.diverged_at is not None:
            return "diverged"
        return "completed" if COMPLETED_TAG in self.scalars else "incomplete"

    @property
    def last_step(self) -> int:
        return max((series.steps[-1] for series in self.scalars.values() if series.steps), default=0)

    def final(self, tag: str) -> float | None:
        """The tag's last logged value, or None if the run never logged it."""
        series = self.scalars.get(tag)
        return series.last if series is not None else None

    def best(self, tag: str) -> float | None:
        """The tag's largest finite value (for accuracies), or None."""
        series = self.scalars.get(tag)
        finite = [v for v in series.values if math.isfinite(v)] if series is not None else []
        return max(finite) if finite else None


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run folder at or below ``paths`` (folders holding event files), in a stable order.

    Raises:
        ConfigError: a path does not exist or holds no runs.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(f"No such run folder: {path}. Pass run folders (runs/<name>/version_N) or their parents.")
        runs = sorted({event.parent for event in path.rglob(EVENT_GLOB)}) if path.is_dir() else []
        if not runs:
            raise ConfigError(f"No TensorBoard event files under {path}: it holds no normzoo runs.")
        found += [run for run in runs if run not in found]
    return found


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Load every run at or below ``paths`` (see ``find_run_dirs``), labelled uniquely."""
    run_dirs = find_run_dirs(paths)
    labels = run_labels(run_dirs)
    return [load_run(run_dir, label) for run_dir, label in zip(run_dirs, labels, strict=True)]


def load_run(run_dir: Path, label: str | None = None) -> Run:
    """Read one run folder's scalars and hyperparameters; a run whose ``hparams.yaml`` is unreadable is ``broken``."""
    keep_one = {kind: 1 for kind in ("images", "tensors", "histograms", "compressedHistograms")}
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, **keep_one})  # every scalar, little else
    events.Reload()
    scalars = {}
    for tag in events.Tags().get("scalars", []):
        by_step = {event.step: float(event.value) for event in events.Scalars(tag)}  # newer files win
        steps = tuple(sorted(by_step))
        scalars[tag] = Series(steps, tuple(by_step[step] for step in steps))
    try:
        hparams, broken = read_hparams(run_dir), None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:  # one bad record does not sink the report
        hparams, broken = {}, f"unreadable hparams.yaml ({str(error).splitlines()[0]})"
    try:
        evaluation = read_evaluation(run_dir)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, ValueError) as error:
        evaluation, broken = None, broken or f"unreadable evaluation.yaml ({str(error).splitlines()[0]})"
    return Run(Path(run_dir), label or run_dir.name, hparams, scalars, broken, evaluation)


def split_evaluations(runs: Sequence[Run]) -> tuple[list[Run], list[Run]]:
    """``runs`` as (fit runs, evaluations of checkpoints), each in the given order."""
    return [run for run in runs if run.evaluation is None], [run for run in runs if run.evaluation is not None]


def matching_tags(runs: Sequence[Run], pattern: str) -> list[str]:
    """The scalar tags of ``runs`` that ``pattern`` names, in the order first logged.

    ``*`` stands for one part of a tag (no ``/``): ``zoo/dead_units/*/saturated_fraction``
    finds the layer a callback resolved from a rule such as ``layers=["last"]``. A pattern
    without ``*`` is a tag, returned as it is.
    """
    if "*" not in pattern:
        return [pattern]
    regex = re.compile(re.escape(pattern).replace(r"\*", "[^/]+"))
    return list(dict.fromkeys(tag for run in runs for tag in run.scalars if regex.fullmatch(tag)))


def read_hparams(run_dir: Path) -> dict[str, Any]:
    """``hparams.yaml`` of a run flattened to dotted keys; empty if there is none."""
    path = Path(run_dir) / "hparams.yaml"
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    return flatten(loaded, separator=".") if isinstance(loaded, Mapping) else {}


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Short unique names: the run name (``runs/<name>/version_N``), with the version only when needed."""
    names = [d.parent.name if d.name.startswith("version_") else d.name for d in run_dirs]
    labels = [
        f"{name}/{d.name}" if names.count(name) > 1 and d.name.startswith("version_") else name
        for name, d in zip(names, run_dirs, strict=True)
    ]
    if len(set(labels)) == len(labels):
        return labels
    root = Path(*_common_parts(run_dirs))
    return [str(d.resolve().relative_to(root)) for d in run_dirs]


def _common_parts(paths: list[Path]) -> tuple[str, ...]:
    parts = [p.resolve().parts for p in paths]
    common: list[str] = []
    for column in zip(*parts, strict=False):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    return tuple(common)
