"""Cells: the runs that differ only by their seed, summarized by a mean and a 95% interval over the seeds.

A study trains each of its runs once per seed, in folders named ``<run>_seed<k>``
(``seeded_name``) with ``--seed_everything k``; each run records ``seed: k`` in its
``hparams.yaml``. The report groups runs into cells: the runs whose names agree once the
``_seed<k>`` suffix (and a ``/version_N`` label) is taken off, and whose hyperparameters agree
but for ``seed``. Both must agree: two runs of a study may differ only by a trainer option
that ``hparams.yaml`` does not record, and the same name run with other settings is another
setup. A run of its own (no suffix, one seed) is a cell of one run.

A cell's number for a metric is the ``Interval`` over its runs (``Metric.values`` says which
count); its curve of a tag is, at every step, the mean and interval over the runs that logged
a finite value there.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from normzoo.report.intervals import Interval
from normzoo.report.metrics import Metric
from normzoo.report.runs import Run

SEED_KEY = "seed"
"""The ``hparams.yaml`` key of a run's seed (``seed_everything``), the one hyperparameter a cell's runs differ by."""
SEED_SUFFIX = "_seed"
VERSION = re.compile(r"/version_\d+$")
SEEDED = re.compile(rf"{SEED_SUFFIX}\d+$")


def seeded_name(name: str, seed: int) -> str:
    """The folder of run ``name`` trained with ``seed``: ``bn`` and 2 -> ``bn_seed2``."""
    return f"{name}{SEED_SUFFIX}{seed}"


def cell_name(label: str) -> str:
    """A run's label without its seed and version: ``bn_seed2`` and ``bn/version_1`` -> ``bn``."""
    return SEEDED.sub("", VERSION.sub("", label))


@dataclass(frozen=True)
class Curve:
    """A cell's tag over steps: the mean, and the interval's edges (NaN where fewer than 2 runs logged the step).

    ``lowest`` is the smallest run's value at each step (a log axis clips the band's lower edge to it).
    """

    steps: tuple[int, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    lowest: tuple[float, ...]


@dataclass(frozen=True)
class Cell:
    """The runs of one setup over seeds, named ``label``."""

    label: str
    runs: tuple[Run, ...]

    @property
    def seeds(self) -> list[Any]:
        """Each run's recorded seed (None for a run that recorded none), in order."""
        return [run.hparams.get(SEED_KEY) for run in self.runs]

    @property
    def diverged(self) -> int:
        return sum(run.status == "diverged" for run in self.runs)

    @property
    def legend_name(self) -> str:
        """The label, with "(diverged)" when every run diverged, or "(k/n diverged)" when some did."""
        if self.diverged == 0:
            return self.label
        if self.diverged == len(self.runs):
            return f"{self.label} (diverged)"
        return f"{self.label} ({self.diverged}/{len(self.runs)} diverged)"

    @property
    def status_text(self) -> str:
        """How many runs ended how: ``3 completed``, ``2 completed, 1 **diverged**``."""
        counts = Counter(run.status for run in self.runs)
        return ", ".join(f"{count} **{status}**" if status in ("diverged", "broken") else f"{count} {status}"
                         for status, count in sorted(counts.items()))

    def hparams(self) -> dict[str, Any]:
        """The hyperparameters every run of the cell shares (so not ``seed`` once seeds differ)."""
        shared = dict(self.runs[0].hparams)
        for run in self.runs[1:]:
            shared = {key: value for key, value in shared.items() if run.hparams.get(key, object()) == value}
        return shared

    def interval(self, metric: Metric) -> Interval | None:
        """The mean of ``metric`` over the cell's runs that count, and its 95% interval; None if none has a value."""
        return Interval.of(metric.values(self.runs))

    def curve(self, tag: str) -> Curve | None:
        """``tag``'s mean and interval at every step some run logged a finite value; None if none did.

        Every run's finite values count, a diverged run's too (its steps before the divergence).
        """
        by_step: dict[int, list[float]] = {}
        for run in self.runs:
            series = run.scalars.get(tag)
            if series is None:
                continue
            for step, value in zip(series.steps, series.values, strict=True):
                if math.isfinite(value):
                    by_step.setdefault(step, []).append(value)
        if not by_step:
            return None
        steps = tuple(sorted(by_step))
        intervals = [Interval.of(by_step[step]) or Interval(math.nan, None, 0) for step in steps]  # never empty
        return Curve(steps, tuple(i.mean for i in intervals),
                     tuple(math.nan if i.low is None else i.low for i in intervals),
                     tuple(math.nan if i.high is None else i.high for i in intervals),
                     tuple(min(by_step[step]) for step in steps))


def group_cells(runs: Sequence[Run]) -> list[Cell]:
    """``runs`` grouped into cells (same name without ``_seed<k>``, same hyperparameters but the seed), in the
    order of their first runs. Two cells that would share a name are told apart by `` [2]``, `` [3]``..."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        setup = {key: value for key, value in run.hparams.items() if key != SEED_KEY}
        key = (cell_name(run.label), json.dumps(setup, sort_keys=True, default=str))
        groups.setdefault(key, []).append(run)
    cells, named = [], Counter()
    for (name, _), members in groups.items():
        named[name] += 1
        cells.append(Cell(name if named[name] == 1 else f"{name} [{named[name]}]", tuple(members)))
    return cells


def has_seeds(cells: Sequence[Cell]) -> bool:
    """Whether some cell holds several runs (the report then shows means and intervals over seeds)."""
    return any(len(cell.runs) > 1 for cell in cells)
