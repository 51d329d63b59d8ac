"""Markdown tables: a row per cell (mean ± 95% interval over seeds), a row per run, pivots of a final metric.

A number over several runs is written ``mean ± half-width`` of its 95% Student-t interval
(``normzoo.report.intervals``); over one run it is the run's value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normzoo.report.cells import Cell
from normzoo.report.intervals import FORMULA, Interval
from normzoo.report.metrics import Metric
from normzoo.report.runs import Run

MISSING = "–"
DIVERGED = "diverged"
SEEDS_NOTE = f"{FORMULA}; diverged runs left out"
"""How a ``mean ± half-width`` was computed, said under every table that shows one."""
EVALUATION_METRICS = ("val/acc", "val/loss", "test/acc", "test/loss")
"""The metrics an evaluation of a checkpoint shows, those it logged."""


def format_number(value: float | None) -> str:
    if value is None:
        return MISSING
    if not math.isfinite(value):
        return str(value)
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}"


def format_interval(interval: Interval | None) -> str:
    """``0.9280 ± 0.0040`` (the mean and the interval's half-width, to the mean's decimals); one value alone."""
    if interval is None:
        return MISSING
    if interval.half_width is None or not math.isfinite(interval.mean):
        return format_number(interval.mean)
    decimals = 2 if abs(interval.mean) >= 10 else 4
    return f"{interval.mean:.{decimals}f} ± {interval.half_width:.{decimals}f}"


def format_hparam(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def status_text(run: Run) -> str:
    if run.status == "broken":
        return f"**broken**: {run.broken}"
    if run.status == "diverged":
        return f"**diverged** at step {run.diverged_at}"
    return run.status


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def runs_table(runs: Sequence[Run], hparams: Sequence[str], metrics: Sequence[Metric]) -> str:
    """One row per run: its label, status, last step, the given hyperparameters and final metrics.

    Hyperparameters no run has, and metrics no run logged, are left out.
    """
    hparams = [key for key in hparams if any(key in run.hparams for run in runs)]
    metrics = [metric for metric in metrics if any(metric.tag in run.scalars for run in runs)]
    header = ["run", "status", "steps", *hparams, *(metric.title for metric in metrics)]
    rows = [
        [run.label, status_text(run), str(run.last_step),
         *(format_hparam(run.hparams.get(key)) for key in hparams),
         *(format_number(metric.of(run)) for metric in metrics)]
        for run in runs
    ]
    return markdown_table(header, rows)


def cells_table(cells: Sequence[Cell], hparams: Sequence[str], metrics: Sequence[Metric]) -> str:
    """One row per cell: its name, runs, seeds, statuses, the shared hyperparameters and each metric's
    ``mean ± half-width`` over the runs that count (``Metric.values``: diverged runs are left out).

    Hyperparameters no cell shares, and metrics no run logged, are left out.
    """
    shared = [cell.hparams() for cell in cells]
    hparams = [key for key in hparams if any(key in values for values in shared)]
    metrics = [metric for metric in metrics if any(metric.tag in run.scalars for cell in cells for run in cell.runs)]
    header = ["cell", "runs", "seeds", "status", *hparams, *(metric.title for metric in metrics)]
    rows = [
        [cell.label, str(len(cell.runs)), ", ".join(format_hparam(seed) for seed in cell.seeds), cell.status_text,
         *(format_hparam(values.get(key)) for key in hparams),
         *(format_interval(cell.interval(metric)) for metric in metrics)]
        for cell, values in zip(cells, shared, strict=True)
    ]
    return markdown_table(header, rows)


def evaluations_table(evaluations: Sequence[Run], runs: Sequence[Run]) -> str:
    """One row per evaluation of a checkpoint: the fit run it evaluated, how, which checkpoint and step, its metrics.

    The fit run is named by its label when it is among ``runs``, else by its folder; ``logs``
    is the evaluation's own folder.
    """
    labels = {run.path.resolve(): run.label for run in runs}
    tags = [tag for tag in EVALUATION_METRICS if any(tag in run.scalars for run in evaluations)]
    header = ["fit run", "evaluation", "checkpoint", "step", *tags, "logs"]
    rows = []
    for run in evaluations:
        if run.evaluation is None:
            continue
        fit = run.fit_run_dir
        rows.append([labels.get(fit, MISSING if fit is None else str(fit)), run.evaluation.command,
                     Path(run.evaluation.checkpoint).name, str(run.evaluation.step),
                     *(format_number(run.final(tag)) for tag in tags), run.label])
    return markdown_table(header, rows)


@dataclass(frozen=True)
class Pivot:
    """A final metric laid out over two hyperparameters: ``cells[(row, column)]`` holds the runs of that square
    (a study's seeds of one run, when the two hyperparameters are all its runs differ by)."""

    row_key: str
    column_key: str
    metric: Metric
    rows: tuple[Any, ...]
    columns: tuple[Any, ...]
    cells: dict[tuple[Any, Any], tuple[Run, ...]]

    def interval(self, row: Any, column: Any) -> Interval | None:
        """The mean and 95% interval over the square's runs that count (``Metric.values``); None if none has a value."""
        return Interval.of(self.metric.values(self.cells.get((row, column), ())))

    def value(self, row: Any, column: Any) -> float | None:
        """The mean over the square's runs that count; None if there are none."""
        interval = self.interval(row, column)
        return None if interval is None else interval.mean

    @property
    def has_seeds(self) -> bool:
        """Whether some square holds several runs (its text is then ``mean ± half-width``)."""
        return any(len(runs) > 1 for runs in self.cells.values())

    def diverged(self, row: Any, column: Any) -> bool:
        """True when every run of the square diverged."""
        runs = self.cells.get((row, column), ())
        return bool(runs) and all(run.status == "diverged" for run in runs)

    def text(self, row: Any, column: Any) -> str:
        """``diverged`` when every run did; else the value, with ``(k/n diverged)`` when some runs did."""
        if self.diverged(row, column):
            return DIVERGED
        runs = self.cells.get((row, column), ())
        diverged = sum(run.status == "diverged" for run in runs)
        some = f" ({diverged}/{len(runs)} diverged)" if diverged and not self.metric.is_record else ""
        return format_interval(self.interval(row, column)) + some


def pivot(runs: Sequence[Run], row_key: str, column_key: str, metric: Metric) -> Pivot:
    """Group runs by two hyperparameters (sorted values; runs lacking either key are left out)."""
    cells: dict[tuple[Any, Any], list[Run]] = {}
    for run in runs:
        if row_key in run.hparams and column_key in run.hparams:
            cells.setdefault((run.hparams[row_key], run.hparams[column_key]), []).append(run)
    rows = tuple(sorted({row for row, _ in cells}, key=_sort_key))
    columns = tuple(sorted({column for _, column in cells}, key=_sort_key))
    return Pivot(row_key, column_key, metric, rows, columns, {k: tuple(v) for k, v in cells.items()})


def pivot_table(table: Pivot) -> str:
    header = [f"{table.row_key} \\ {table.column_key}", *(format_hparam(c) for c in table.columns)]
    rows = [[format_hparam(row), *(table.text(row, column) for column in table.columns)] for row in table.rows]
    over = f" (mean ± 95% interval over the runs of a square, {SEEDS_NOTE})" if table.has_seeds else ""
    return f"{table.metric.title}{over}:\n\n" + markdown_table(header, rows)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))
