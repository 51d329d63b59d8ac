"""Sharpness against 2/lr over the steps of runs that logged ``Sharpness``: the edge-of-stability tables.

``normzoo report`` judges a claim by one metric of two runs; Cohen et al.'s claim compares two
statistics of the same run over time (the sharpness against its own 2/lr), so this script reads
the runs' event files and tabulates it. For each run, at each measured step, the ratio

    rho = zoo/sharpness/top_eigenvalue / zoo/sharpness/two_over_lr = sharpness * lr / 2

is 1 exactly at the edge of stability. Per cell (the runs that differ only by their seed, as in
the report), each number is the mean ± the half-width of its 95% Student-t interval over the seeds:

- trajectory: rho at every ``--every`` steps;
- summary: rho at step 0; its peak and the peak's step; the first step with rho >= ``--reach``
  (how many seeds got there); the edge window, from that step to the last measurement with rho >=
  ``--reach``: its length, the median rho in it, the training loss (``train/loss``) at its start
  and end, and how many steps of the window the loss rose (it falls non-monotonically at the edge).

With ``--figure PATH``, a PNG of rho over steps: a panel per norm (the runs' ``norm`` hyperparameter),
a line per learning rate (the mean over seeds, its 95% interval shaded), the edge rho = 1 dashed.

    python scripts/eos_table.py runs/studies/cohen_eos/quick
    python scripts/eos_table.py runs/studies/cohen_eos/quick --every 50 --reach 0.9 --figure eos.png
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from normzoo.report.cells import Cell, group_cells
from normzoo.report.figures import banded_line, save_figure
from normzoo.report.intervals import Interval
from normzoo.report.runs import Run, Series, load_runs, split_evaluations
from normzoo.report.tables import format_interval, markdown_table

SHARPNESS = "zoo/sharpness/top_eigenvalue"
EDGE = "zoo/sharpness/two_over_lr"
LOSS = "train/loss"


@dataclass(frozen=True)
class EdgeSummary:
    """One run's sharpness in units of 2/lr (``rho``) over its measured steps, summarized."""

    steps: tuple[int, ...]
    rho: tuple[float, ...]
    reach: float
    loss: Series | None = None

    @classmethod
    def of(cls, run: Run, reach: float) -> EdgeSummary | None:
        """The run's ratio at the steps where both tags are finite; None if it logged no sharpness."""
        sharpness, edge = run.scalars.get(SHARPNESS), run.scalars.get(EDGE)
        if sharpness is None or edge is None:
            return None
        edges = dict(zip(edge.steps, edge.values, strict=True))
        pairs = [(step, value / edges[step]) for step, value in zip(sharpness.steps, sharpness.values, strict=True)
                 if step in edges and math.isfinite(value) and math.isfinite(edges[step]) and edges[step] > 0]
        if not pairs:
            return None
        return cls(tuple(step for step, _ in pairs), tuple(value for _, value in pairs), reach, run.scalars.get(LOSS))

    def at(self, step: int) -> float | None:
        """rho at the last measurement at or before ``step``."""
        before = [value for s, value in zip(self.steps, self.rho, strict=True) if s <= step]
        return before[-1] if before else None

    @property
    def peak(self) -> tuple[int, float]:
        index = max(range(len(self.rho)), key=self.rho.__getitem__)
        return self.steps[index], self.rho[index]

    @property
    def window(self) -> tuple[int, int] | None:
        """(first, last) measured step with rho >= ``reach``; None if it never got there."""
        at_edge = [step for step, value in zip(self.steps, self.rho, strict=True) if value >= self.reach]
        return (at_edge[0], at_edge[-1]) if at_edge else None

    def loss_in_window(self) -> tuple[float, float, int] | None:
        """The training loss at the window's start and end, and how many logged steps of it the loss rose."""
        window = self.window
        return None if window is None else loss_in(self.loss, *window)

    def median_in_window(self) -> float | None:
        window = self.window
        if window is None:
            return None
        return statistics.median(v for s, v in zip(self.steps, self.rho, strict=True) if window[0] <= s <= window[1])


def loss_in(series: Series | None, first: int, last: int) -> tuple[float, float, int] | None:
    """The loss at ``first`` and at ``last`` and how many logged steps in between it rose; None without a loss."""
    if series is None:
        return None
    inside = [(s, v) for s, v in zip(series.steps, series.values, strict=True) if first <= s <= last]
    if not inside:
        return None
    rises = sum(later > earlier for (_, earlier), (_, later) in zip(inside, inside[1:], strict=False))
    return inside[0][1], inside[-1][1], rises


def interval(values: Sequence[float | None]) -> str:
    return format_interval(Interval.of(v for v in values if v is not None))


def trajectory_table(cells: Sequence[Cell], summaries: dict[str, list[EdgeSummary]], every: int) -> str:
    last = max((s.steps[-1] for runs in summaries.values() for s in runs), default=0)
    steps = list(range(0, last + 1, every))
    rows = [[cell.label, *(interval([s.at(step) for s in summaries[cell.label]]) for step in steps)]
            for cell in cells if summaries[cell.label]]
    return markdown_table(["cell", *(f"step {step}" for step in steps)], rows)


def summary_table(cells: Sequence[Cell], summaries: dict[str, list[EdgeSummary]], reach: float) -> str:
    rows = []
    for cell in cells:
        found = summaries[cell.label]
        if not found:
            continue
        reached = [s for s in found if s.window is not None]
        losses = [s.loss_in_window() for s in reached]
        rows.append([
            cell.label,
            interval([s.rho[0] if s.steps[0] == 0 else None for s in found]),
            interval([s.peak[1] for s in found]),
            interval([float(s.peak[0]) for s in found]),
            f"{len(reached)}/{len(found)}: " + interval([float(s.window[0]) for s in reached]),
            interval([float(s.window[1] - s.window[0]) for s in reached]),
            interval([s.median_in_window() for s in reached]),
            *(interval([None if loss is None else float(loss[i]) for loss in losses]) for i in range(3)),
        ])
    header = ["cell", "rho at step 0", "peak rho", "peak step", f"seeds reaching {reach:g}: first step",
              "edge window (steps)", "median rho in it", "loss at its start", "loss at its end", "loss rises in it"]
    return markdown_table(header, rows)


def draw_figure(cells: Sequence[Cell], summaries: dict[str, list[EdgeSummary]], path: Path) -> Path:
    """rho over steps, a panel per norm and a banded line per learning rate; saved as a PNG at ``path``."""
    by_norm: dict[str, list[Cell]] = {}
    for cell in cells:
        if summaries[cell.label]:
            by_norm.setdefault(str(cell.hparams().get("norm", cell.label)), []).append(cell)
    figure = Figure(figsize=(3.2 * max(1, len(by_norm)), 3.4), layout="constrained")
    axes = figure.subplots(1, max(1, len(by_norm)), sharey=True, squeeze=False)[0]
    for ax, (norm, members) in zip(axes, by_norm.items(), strict=False):
        for cell in members:
            steps = sorted({step for s in summaries[cell.label] for step in s.steps})
            found = [Interval.of(v for s in summaries[cell.label] if (v := s.at(step)) is not None) for step in steps]
            banded_line(ax, steps, found, f"lr {cell.hparams().get('lr', cell.label)}")
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_title(f"norm: {norm}")
        ax.set_xlabel("step")
        ax.set_ylim(0, 3)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("sharpness / (2 / lr)")
    return save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Sharpness in units of 2/lr (rho = sharpness * lr / 2) per cell "
                                                 "over steps, from runs that logged normzoo's Sharpness callback.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders or any folder above them")
    parser.add_argument("--every", type=int, default=30, help="steps between the trajectory's columns (default 30)")
    parser.add_argument("--reach", type=float, default=0.9,
                        help="rho at which a run counts as at the edge of stability (default 0.9)")
    parser.add_argument("--figure", type=Path, metavar="PNG", help="also draw rho over steps, a panel per norm")
    args = parser.parse_args(argv)
    runs, _ = split_evaluations(load_runs(args.run_dirs))
    cells = group_cells(runs)
    summaries: dict[str, list[EdgeSummary]] = {}
    for cell in cells:
        found = [EdgeSummary.of(run, args.reach) for run in cell.runs if run.status != "diverged"]
        summaries[cell.label] = [s for s in found if s is not None]
    print(f"Sharpness / (2/lr) per cell, mean ± 95% interval over seeds ({len(runs)} runs, {len(cells)} cells)\n")
    print(trajectory_table(cells, summaries, args.every) + "\n")
    print(summary_table(cells, summaries, args.reach))
    if args.figure is not None:
        print(f"\nfigure: {draw_figure(cells, summaries, args.figure)}")


if __name__ == "__main__":
    main()
