"""A study's or sweep's results index: one CSV row per run, and the sweep's table grouped by its axes.

``<root>/index.csv`` has one row per planned run (every seed): its name, cell (the run without
``_seed<k>``), seed, its value on each swept axis, its status, its last step, and its final
metrics (``INDEX_METRICS``). The runner rewrites it (atomically) as runs finish; a finished run's
row is read from its event files once and kept, so a sweep of hundreds of runs is indexed
once. ``summarize`` turns the rows into the sweep's Markdown table: one row per point of the grid,
each metric as the mean ± the half-width of its 95% interval over the seeds, from the index
alone (no event file is opened).

Statuses: ``completed``, ``diverged`` (finished runs), ``unfinished`` (a run with logs but not to
its end, e.g. stopped), ``failed`` (its process exited with an error), ``not run``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from normzoo.files import write_atomically
from normzoo.report.cells import cell_name
from normzoo.report.intervals import Interval
from normzoo.report.metrics import Metric
from normzoo.report.runs import load_run
from normzoo.report.tables import format_interval, markdown_table
from normzoo.studies.spec import PlannedRun, Study, newest_version

INDEX_NAME = "index.csv"
INDEX_METRICS = ("val/acc", "best val/acc", "val/loss", "train/loss")
"""The final metrics each row records (``best`` is the maximum over the run)."""
FINISHED = ("completed", "diverged")


def index_path(root: Path) -> Path:
    return root / INDEX_NAME


def axis_columns(study: Study) -> list[str]:
    """The index's columns for the swept axes: the axes' keys (none for a study)."""
    return [axis.key for axis in study.sweep_axes]


def columns(study: Study) -> list[str]:
    return ["run", "cell", "seed", *axis_columns(study), "status", "last_step", *INDEX_METRICS]


def run_row(study: Study, run: PlannedRun, failed: int | None = None) -> dict[str, str]:
    """The row of ``run``, from its newest version's event files (``failed``: the exit status of a failed run)."""
    args = run.study_run.args
    axes = {axis.key: args[args.index(f"--{axis.key}") + 1] for axis in study.sweep_axes}
    row = {"run": run.name, "cell": cell_name(run.name), "seed": str(run.seed), **axes, "status": "not run",
           "last_step": "", **dict.fromkeys(INDEX_METRICS, "")}
    newest = newest_version(run.folder)
    if newest is not None:
        logged = load_run(newest, run.name)
        row["status"] = logged.status if logged.status in FINISHED else "unfinished"
        row["last_step"] = "" if logged.last_step is None else str(logged.last_step)
        for metric in INDEX_METRICS:
            value = Metric.parse(metric).of(logged)
            if value is not None:
                row[metric] = repr(value)
    if failed is not None and row["status"] not in FINISHED:
        row["status"] = "failed"
    return row


def read_index(path: Path) -> list[dict[str, str]]:
    """The rows of an index file (``[]`` if there is none)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_index(study: Study, root: Path, planned: Sequence[PlannedRun],
                failed: Mapping[str, int] | None = None) -> Path:
    """Rewrite ``<root>/index.csv`` for ``planned``: finished runs' rows kept from the file, the others read anew."""
    path = index_path(root)
    known = {row["run"]: row for row in read_index(path) if row.get("status") in FINISHED}
    failed = failed or {}
    rows = [known.get(run.name) or run_row(study, run, failed.get(run.name)) for run in planned]
    header = columns(study)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    root.mkdir(parents=True, exist_ok=True)
    write_atomically(path, buffer.getvalue())
    return path


def summarize(rows: Sequence[Mapping[str, str]], axes: Sequence[str],
              metrics: Sequence[str] = INDEX_METRICS) -> str:
    """One Markdown row per cell (point of the grid): its axes' values, runs, statuses and each metric's
    mean ± 95% half-width over the cell's finished, not diverged, runs."""
    cells: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        cells.setdefault(row["cell"], []).append(row)
    table = []
    for cell, members in cells.items():
        statuses: dict[str, int] = {}
        for row in members:
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        counted = [row for row in members if row["status"] == "completed"]
        values = [format_interval(Interval.of(float(row[m]) for row in counted if row.get(m))) for m in metrics]
        table.append([cell, *(members[0].get(axis, "") for axis in axes), str(len(members)),
                      ", ".join(f"{count} {status}" for status, count in statuses.items()), *values])
    return markdown_table(["cell", *axes, "runs", "status", *metrics], table)
