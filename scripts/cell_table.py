"""Final values of several tags per cell, and the per-run difference of two tags, with 95% intervals over seeds.

``normzoo report`` compares cells on one metric at a time; a study that measures one quantity
several ways (the validation error with EMA, precise and batch statistics) wants them side by
side, and a within-run difference (train-mode error minus eval-mode error) needs its interval
over the runs' own differences, not the difference of two intervals. Per cell (the runs that
differ only by their seed, as in the report; diverged runs left out), each entry is the mean ±
the half-width of the 95% Student-t interval over the seeds of a run's last logged value.

    python scripts/cell_table.py runs/studies/wu_johnson/quick zoo/precise_bn/val_error_ema \\
        zoo/precise_bn/val_error_batch --difference zoo/precise_bn/val_error_batch zoo/precise_bn/val_error_ema
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from normzoo.report.cells import Cell, group_cells
from normzoo.report.intervals import Interval
from normzoo.report.runs import Run, load_runs, split_evaluations
from normzoo.report.tables import format_interval, markdown_table


def final(run: Run, tag: str) -> float | None:
    """The run's last logged value of ``tag``, None if it logged none."""
    series = run.scalars.get(tag)
    return series.values[-1] if series is not None and series.values else None


def difference(run: Run, left: str, right: str) -> float | None:
    """``left - right`` at the run's last step that logged both, None if there is none."""
    a, b = run.scalars.get(left), run.scalars.get(right)
    if a is None or b is None:
        return None
    shared = sorted(set(a.steps) & set(b.steps))
    if not shared:
        return None
    step = shared[-1]
    return a.values[a.steps.index(step)] - b.values[b.steps.index(step)]


def interval(values: Sequence[float | None]) -> str:
    return format_interval(Interval.of(v for v in values if v is not None))


def table(cells: Sequence[Cell], tags: Sequence[str], differences: Sequence[tuple[str, str]]) -> str:
    rows = []
    for cell in cells:
        runs = [run for run in cell.runs if run.status != "diverged"]
        rows.append([cell.label, str(len(runs)), *(interval([final(run, tag) for run in runs]) for tag in tags),
                     *(interval([difference(run, a, b) for run in runs]) for a, b in differences)])
    header = ["cell", "runs", *tags, *(f"{a} - {b}" for a, b in differences)]
    return markdown_table(header, rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Final values of tags per cell, mean ± 95% interval over seeds.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folders' parent (a study's mode folder)")
    parser.add_argument("tags", nargs="*", metavar="TAG", help="scalar tags to tabulate (their last values)")
    parser.add_argument("--difference", nargs=2, action="append", default=[], metavar=("LEFT", "RIGHT"),
                        help="also LEFT - RIGHT within each run, at the last step that logged both (repeatable)")
    args = parser.parse_args(argv)
    if not args.tags and not args.difference:
        parser.error("name at least one TAG or --difference LEFT RIGHT.")
    runs, _ = split_evaluations(load_runs([args.run_dir]))
    known = {tag for run in runs for tag in run.scalars}
    unknown = [tag for tag in [*args.tags, *(t for pair in args.difference for t in pair)] if tag not in known]
    if unknown:
        parser.error(f"no run logged {', '.join(unknown)}.")
    cells = group_cells(runs)
    print(f"Last values, mean ± 95% interval over seeds ({len(runs)} runs, {len(cells)} cells)\n")
    print(table(cells, args.tags, [tuple(pair) for pair in args.difference]))


if __name__ == "__main__":
    main()
