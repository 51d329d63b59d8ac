"""Markdown tables of runs: one row per run, and pivots of a final metric over two hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normzoo.report.runs import Run

MISSING = "–"
DIVERGED = "diverged"
EVALUATION_METRICS = ("val/acc", "val/loss", "test/acc", "test/loss")
"""The metrics an evaluation of a checkpoint shows, those it logged."""


@dataclass(frozen=True)
class Metric:
    """A final-value column: ``tag``'s last value, or its best (largest), optionally as an error in %."""

    tag: str
    best: bool = False
    error: bool = False

    @property
    def title(self) -> str:
        name = f"best {self.tag}" if self.best else self.tag
        return f"{name} error %" if self.error else name

    def of(self, run: Run) -> float | None:
        value = run.best(self.tag) if self.best else run.final(self.tag)
        if value is None or not self.error:
            return value
        return 100.0 * (1.0 - value)


def format_number(value: float | None) -> str:
    if value is None:
        return MISSING
    if not math.isfinite(value):
        return str(value)
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}"


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
    """A final metric laid out over two hyperparameters: ``cells[(row, column)]`` holds the runs there."""

    row_key: str
    column_key: str
    metric: Metric
    rows: tuple[Any, ...]
    columns: tuple[Any, ...]
    cells: dict[tuple[Any, Any], tuple[Run, ...]]

    def value(self, row: Any, column: Any) -> float | None:
        """The mean over the cell's runs that did not diverge; None if there are none."""
        values = [self.metric.of(run) for run in self.cells.get((row, column), ()) if run.status != "diverged"]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        return sum(finite) / len(finite) if finite else None

    def diverged(self, row: Any, column: Any) -> bool:
        """True when every run of the cell diverged."""
        runs = self.cells.get((row, column), ())
        return bool(runs) and all(run.status == "diverged" for run in runs)

    def text(self, row: Any, column: Any) -> str:
        return DIVERGED if self.diverged(row, column) else format_number(self.value(row, column))


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
    return f"{table.metric.title}:\n\n" + markdown_table(header, rows)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))
