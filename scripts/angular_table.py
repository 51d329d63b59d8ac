"""The angular update of each weight against its equilibrium, over the steps of runs that logged ``EffectiveLR``.

``normzoo report`` judges a claim by one metric of two runs at one step; the equilibrium claim
(Wan et al.; Li, Lyu & Arora 2020) is about a run's angular update over time against
sqrt(2 lr wd / (1 + momentum)). One step's angle is noisy, so this script averages each run's
``zoo/effective_lr/<layer>/angular_update`` over ``--windows`` equal spans of its measured steps,
then gives, per cell (the runs that differ only by their seed, as in the report) and layer, the
mean ± the half-width of the 95% Student-t interval over the seeds of:

- the window means of the angular update (radians per step);
- the equilibrium, where the cell's runs logged one (SGD with weight decay);
- the last window's mean over the equilibrium: of the cell's own, or of ``--reference CELL``'s
  for cells without one (a run without weight decay against the run with it);
- the weight norm at the first and the last measurement.

    python scripts/angular_table.py runs/studies/li_arora/quick --reference wd
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from normzoo.report.cells import Cell, group_cells
from normzoo.report.intervals import Interval
from normzoo.report.runs import Run, load_runs, split_evaluations
from normzoo.report.tables import format_interval, markdown_table

PREFIX = "zoo/effective_lr/"
UPDATE, EQUILIBRIUM, NORM = "angular_update", "angular_equilibrium", "weight_norm"


def layers_of(runs: Sequence[Run]) -> list[str]:
    """The layers any run logged an angular update for, in the order of their tags."""
    found: dict[str, None] = {}
    for run in runs:
        for tag in run.scalars:
            if tag.startswith(PREFIX) and tag.endswith("/" + UPDATE):
                found[tag[len(PREFIX):-len(UPDATE) - 1]] = None
    return list(found)


def window_means(run: Run, layer: str, windows: int) -> list[float | None]:
    """The run's angular update averaged over ``windows`` equal spans of its measured steps."""
    series = run.scalars.get(f"{PREFIX}{layer}/{UPDATE}")
    if series is None or not series.values:
        return [None] * windows
    values = list(series.values)
    bounds = [round(i * len(values) / windows) for i in range(windows + 1)]
    return [statistics.fmean(values[a:b]) if b > a else None for a, b in zip(bounds, bounds[1:], strict=False)]


def logged(run: Run, layer: str, stat: str, index: int) -> float | None:
    """The run's ``stat`` of ``layer`` at measurement ``index`` (0 first, -1 last), None if not logged."""
    series = run.scalars.get(f"{PREFIX}{layer}/{stat}")
    return series.values[index] if series is not None and series.values else None


def interval(values: Sequence[float | None]) -> str:
    return format_interval(Interval.of(v for v in values if v is not None))


def equilibrium_of(cell: Cell, layer: str) -> float | None:
    """The mean equilibrium the cell's runs logged for ``layer`` (the same in every run of a setup), or None."""
    found = [value for run in cell.runs if (value := logged(run, layer, EQUILIBRIUM, -1)) is not None]
    return statistics.fmean(found) if found else None


def table(cells: Sequence[Cell], layer: str, windows: int, reference: Cell | None) -> str:
    rows = []
    for cell in cells:
        runs = [run for run in cell.runs if run.status != "diverged"]
        means = [window_means(run, layer, windows) for run in runs]
        if not any(value is not None for row in means for value in row):
            continue
        own = equilibrium_of(cell, layer)
        target = own if own is not None else (equilibrium_of(reference, layer) if reference is not None else None)
        last = [row[-1] for row in means]
        ratio = interval([None if value is None or not target else value / target for value in last])
        rows.append([cell.label, *(interval([row[i] for row in means]) for i in range(windows)),
                     "–" if own is None else f"{own:.4g}", ratio if target else "–",
                     interval([logged(run, layer, NORM, 0) for run in runs]),
                     interval([logged(run, layer, NORM, -1) for run in runs])])
    header = ["cell", *(f"window {i + 1}/{windows}" for i in range(windows)), "equilibrium",
              "last window / equilibrium", "||w|| first", "||w|| last"]
    return markdown_table(header, rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Angular update per step against its equilibrium, per cell and "
                                                 "layer, from runs that logged normzoo's EffectiveLR callback.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders or any folder above them")
    parser.add_argument("--windows", type=int, default=5, help="equal spans of the steps to average (default 5)")
    parser.add_argument("--reference", metavar="CELL",
                        help="the cell whose equilibrium the cells without one are compared with")
    args = parser.parse_args(argv)
    if args.windows < 1:
        parser.error(f"--windows {args.windows}: give at least 1.")
    runs, _ = split_evaluations(load_runs(args.run_dirs))
    cells = group_cells(runs)
    labels = {cell.label: cell for cell in cells}
    if args.reference is not None and args.reference not in labels:
        parser.error(f"--reference {args.reference}: no such cell; the cells are {', '.join(labels)}.")
    reference = labels.get(args.reference) if args.reference else None
    print(f"Angular update per step (rad), mean ± 95% interval over seeds ({len(runs)} runs, {len(cells)} cells)")
    for layer in layers_of(runs):
        print(f"\n{layer}\n\n{table(cells, layer, args.windows, reference)}")


if __name__ == "__main__":
    main()
