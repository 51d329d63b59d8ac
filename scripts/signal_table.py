"""Signal propagation at initialization against depth, per cell, from runs that logged ``SignalPropagation``.

``normzoo report`` judges a claim by one metric of two cells; De & Smith 2020's and Brock, De &
Smith 2021's claims are about how the signal changes with depth, so this script reads the runs'
event files and tabulates it. ``SignalPropagation`` logs once, at step 0, ``zoo/signal_propagation/
<layer>/{channel_mean_sq,channel_var,stable_rank,cosine,grad_norm}`` for each layer (every activation
output) and ``zoo/signal_propagation/<block>/{branch_var,skip_var,branch_skip_ratio}`` for each
residual block, each in forward order.

For each statistic asked for (``--stats``), a Markdown table: a row per layer or block (those whose
name matches a ``--layers`` pattern, if given; of them every ``--every``-th in forward order, and the
last), a column per cell (the runs that differ only by
their seed, as in the report), each entry the mean ± the half-width of its 95% Student-t interval
over the cell's runs. The values are at initialization, before any step, so a run that later
diverged counts too. With ``--log10`` each run's value enters as its base-10 logarithm: without a
norm the variances grow exponentially with depth and seeds differ by orders of magnitude, so the
interval of the raw values says little (a value of 0, SkipInit's branch, prints as -inf).

With ``--figure PATH``, ``normzoo.signal_propagation``'s figure of every statistic against depth,
a line per cell: the mean over its runs; with ``--layers``, its layer panels draw the matching
layers only (``'*act2'``: the block outputs, Brock et al.'s plots), its block panels every block.

    python scripts/signal_table.py runs/studies/de_smith/quick
    python scripts/signal_table.py runs/studies/de_smith/quick --stats skip_var branch_skip_ratio --log10 \\
        --cells bn none_init skipinit --every 2 --figure spp.png
    python scripts/signal_table.py runs/studies/de_smith/quick --stats channel_var --layers '*act2' --every 3
"""

from __future__ import annotations

import argparse
import fnmatch
import math
from collections.abc import Sequence
from pathlib import Path

from normzoo.report.cells import Cell, group_cells
from normzoo.report.intervals import Interval
from normzoo.report.runs import Run, load_runs, split_evaluations
from normzoo.report.tables import format_interval, markdown_table
from normzoo.signal_propagation import (
    LAYER_STATS,
    RESIDUAL_STATS,
    LayerSignal,
    ResidualSignal,
    SignalReport,
    plot_signal_propagation,
)

PREFIX = "zoo/signal_propagation/"
STATS = (*LAYER_STATS, "grad_norm", *RESIDUAL_STATS)
DEFAULT_STATS = ("channel_mean_sq", "channel_var", "branch_var", "skip_var", "branch_skip_ratio")


def names_of(runs: Sequence[Run], stat: str) -> list[str]:
    """The layers (or blocks) for which some run logged ``stat``, in the order first logged (forward order)."""
    names: dict[str, None] = {}
    for run in runs:
        for tag in run.scalars:
            if tag.startswith(PREFIX) and tag.endswith(f"/{stat}"):
                names.setdefault(tag[len(PREFIX):-len(stat) - 1], None)
    return list(names)


def value_at_init(run: Run, name: str, stat: str) -> float | None:
    """The run's ``stat`` of layer ``name`` at step 0, None if it logged none."""
    series = run.scalars.get(f"{PREFIX}{name}/{stat}")
    if series is None or not series.steps or series.steps[0] != 0:
        return None
    return series.values[0]


def log10(value: float | None) -> float | None:
    """log10 of the value; -inf for 0 (SkipInit's branch)."""
    if value is None:
        return None
    return math.log10(value) if value > 0 else -math.inf


def every(names: Sequence[str], step: int, patterns: Sequence[str] = ()) -> list[str]:
    """Of the names matching a pattern of ``patterns`` (all if none given), every ``step``-th from the first,
    and the last."""
    names = [name for name in names if not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    chosen = list(names[::step])
    return chosen + [names[-1]] if names and names[-1] not in chosen else chosen


def entry(values: Sequence[float | None]) -> str:
    found = [v for v in values if v is not None]
    if any(math.isinf(v) for v in found):
        return "-inf" if all(v == -math.inf for v in found) else "–"
    return format_interval(Interval.of(found))


def stat_table(cells: Sequence[Cell], stat: str, step: int, logarithm: bool, patterns: Sequence[str] = ()) -> str:
    """A row per layer (``every``'s), a column per cell: the statistic's mean ± 95% half-width over seeds."""
    runs = [run for cell in cells for run in cell.runs]
    rows = []
    for name in every(names_of(runs, stat), step, patterns):
        row = [name]
        for cell in cells:
            values = [value_at_init(run, name, stat) for run in cell.runs]
            row.append(entry([log10(v) for v in values] if logarithm else values))
        rows.append(row)
    return markdown_table(["layer" if stat not in RESIDUAL_STATS else "block", *(cell.label for cell in cells)], rows)


def mean_report(cell: Cell, patterns: Sequence[str] = ()) -> SignalReport:
    """The cell's signal propagation as one ``SignalReport``: each statistic's mean over its runs (NaN if none),
    the layers those matching ``patterns`` (all if none given), every residual block."""

    def mean(name: str, stat: str) -> float:
        found = [v for run in cell.runs if (v := value_at_init(run, name, stat)) is not None]
        return sum(found) / len(found) if found else math.nan

    runs = list(cell.runs)
    layers = tuple(LayerSignal(name, *(mean(name, stat) for stat in LAYER_STATS),
                               grad_norm=None if math.isnan(g := mean(name, "grad_norm")) else g)
                   for name in every(names_of(runs, "channel_var"), 1, patterns))
    blocks = tuple(ResidualSignal(name, *(mean(name, stat) for stat in RESIDUAL_STATS))
                   for name in names_of(runs, "skip_var"))
    batch = runs[0].hparams.get("data.batch_size", 0) if runs else 0
    return SignalReport(cell.label, int(batch or 0), layers, blocks)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Signal propagation at initialization against depth, per cell, "
                                                 "from runs that logged normzoo's SignalPropagation callback.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders or any folder above them")
    parser.add_argument("--stats", nargs="+", choices=STATS, default=list(DEFAULT_STATS), metavar="STAT",
                        help=f"statistics to tabulate, of {', '.join(STATS)} (default: %(default)s)")
    parser.add_argument("--cells", nargs="+", metavar="CELL", help="the cells to show, in this order (default: all)")
    parser.add_argument("--layers", nargs="+", default=[], metavar="PATTERN",
                        help="only the layers or blocks whose name matches one of these shell patterns, e.g. '*act2' "
                             "(the output of every block)")
    parser.add_argument("--every", type=int, default=1, help="every N-th layer or block, and the last (default 1)")
    parser.add_argument("--log10", action="store_true", help="tabulate log10 of each run's value")
    parser.add_argument("--figure", type=Path, metavar="PNG", help="also draw every statistic against depth")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be >= 1")
    runs, _ = split_evaluations(load_runs(args.run_dirs))
    cells = [cell for cell in group_cells(runs) if names_of(cell.runs, "channel_var")]
    if args.cells:
        by_label = {cell.label: cell for cell in cells}
        unknown = [name for name in args.cells if name not in by_label]
        if unknown:
            parser.error(f"--cells {' '.join(unknown)}: the cells with signal propagation are {', '.join(by_label)}")
        cells = [by_label[name] for name in args.cells]
    scale = "log10 of each run's value, then " if args.log10 else ""
    print(f"Signal propagation at initialization (step 0), {scale}mean ± 95% interval over seeds "
          f"({sum(len(cell.runs) for cell in cells)} runs, {len(cells)} cells)")
    for stat in args.stats:
        table = stat_table(cells, stat, args.every, args.log10, args.layers)
        print(f"\n{stat}{' (log10)' if args.log10 else ''}:\n\n{table}")
    if args.figure is not None:
        reports = {cell.label: mean_report(cell, args.layers) for cell in cells}
        title = "Signal propagation at initialization, mean over seeds: " + ", ".join(reports)
        print(f"\nfigure: {plot_signal_propagation(reports, args.figure, title)}")


if __name__ == "__main__":
    main()
