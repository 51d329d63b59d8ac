"""Stable rank and mean pairwise cosine against depth, from runs that logged ``SignalPropagation``: rank collapse.

``normzoo report`` judges a claim by one metric of two runs; Daneshmand et al.'s claim is about how
the rank of the batch representation changes with depth, so this script reads the runs' event files
and tabulates it. ``SignalPropagation`` logs, once at initialization, ``zoo/signal_propagation/
<layer>/{stable_rank,cosine}`` for each layer it measured. A layer's name with its first numeric
part replaced by ``*`` is its site (``backbone.blocks.*.norm``, the pre-activation of every block);
that number plus one is its depth. Layers without a numeric part are left out.

For each site and statistic, a Markdown table: a row per cell (the runs that differ only by their
seed, as in the report), a column per ``--every``-th depth (and the first and the last), each entry
the mean ± the half-width of its 95% Student-t interval over the cell's runs. The values are at
initialization, before any step, so a run that later diverged counts too.

With ``--figure PATH``, a PNG: a row of panels per site (stable rank, cosine), a line per cell
against depth (the mean over seeds, its 95% interval shaded).

    python scripts/rank_table.py runs/studies/daneshmand/quick
    python scripts/rank_table.py runs/studies/daneshmand/quick --every 4 --figure rank.png
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from normzoo.report.cells import Cell, group_cells
from normzoo.report.figures import banded_line, save_figure
from normzoo.report.intervals import Interval
from normzoo.report.runs import Run, load_runs, split_evaluations
from normzoo.report.tables import format_interval, markdown_table

PREFIX = "zoo/signal_propagation/"
STATS = {"stable_rank": "stable rank ||H||²_F / ||H||²_2", "cosine": "mean pairwise cosine"}
"""The statistics tabulated, and their titles."""
TAG = re.compile(rf"^{re.escape(PREFIX)}(?P<layer>.+)/(?P<stat>{'|'.join(STATS)})$")


@dataclass(frozen=True)
class Layer:
    """Where a layer sits: its site (the name with the depth index as ``*``) and its depth (the index + 1)."""

    site: str
    depth: int

    @classmethod
    def of(cls, name: str) -> Layer | None:
        """``backbone.blocks.3.norm`` -> site ``backbone.blocks.*.norm``, depth 4; None without a numeric part."""
        parts = name.split(".")
        index = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        if index is None:
            return None
        return cls(".".join([*parts[:index], "*", *parts[index + 1:]]), int(parts[index]) + 1)


Profile = dict[tuple[str, str], dict[int, list[float]]]
"""(site, statistic) -> depth -> the values of a cell's runs."""


def profile(runs: Sequence[Run]) -> Profile:
    """Each run's first logged value (the measurement at initialization) of every tabulated tag, by site and depth."""
    found: Profile = {}
    for run in runs:
        for tag, series in run.scalars.items():
            match = TAG.match(tag)
            layer = Layer.of(match["layer"]) if match else None
            if match and layer and series.values:
                found.setdefault((layer.site, match["stat"]), {}).setdefault(layer.depth, []).append(series.values[0])
    return found


def shown_depths(depths: Sequence[int], every: int) -> list[int]:
    """The first and the last depth and every ``every``-th in between, among those measured."""
    measured = sorted(set(depths))
    if not measured:
        return []
    return [d for d in measured if d in (measured[0], measured[-1]) or d % every == 0]


def interval(values: Sequence[float] | None) -> Interval | None:
    return None if not values else Interval.of(values)


def depth_table(cells: Sequence[Cell], profiles: dict[str, Profile], key: tuple[str, str], every: int) -> str:
    """A row per cell that logged ``key`` (site, statistic), a column per shown depth."""
    present = [cell for cell in cells if key in profiles[cell.label]]
    depths = shown_depths([d for cell in present for d in profiles[cell.label][key]], every)
    rows = [[cell.label, *(format_interval(interval(profiles[cell.label][key].get(d))) for d in depths)]
            for cell in present]
    return markdown_table(["cell", *(f"layer {d}" for d in depths)], rows)


def keys_of(profiles: dict[str, Profile]) -> list[tuple[str, str]]:
    """Every (site, statistic) logged, sites in order of first appearance, statistics in ``STATS``'s order."""
    sites = list(dict.fromkeys(site for found in profiles.values() for site, _ in found))
    present = {key for found in profiles.values() for key in found}
    return [(site, stat) for site in sites for stat in STATS if (site, stat) in present]


def draw_figure(cells: Sequence[Cell], profiles: dict[str, Profile], path: Path) -> Path:
    """Each statistic against depth, a row of panels per site, a banded line per cell; saved as a PNG at ``path``."""
    keys = keys_of(profiles)
    sites = list(dict.fromkeys(site for site, _ in keys))
    figure = Figure(figsize=(5.0 * len(STATS), 3.4 * max(1, len(sites))), layout="constrained")
    axes = figure.subplots(max(1, len(sites)), len(STATS), squeeze=False)
    for row, site in zip(axes, sites, strict=False):
        for ax, stat in zip(row, STATS, strict=True):
            for index, cell in enumerate(cells):
                found = profiles[cell.label].get((site, stat))
                if not found:
                    continue
                depths = sorted(found)
                spans = [Interval.of(found[d]) for d in depths]
                banded_line(ax, depths, spans, cell.label, color=f"C{index % 10}", marker=".")
            ax.axhline(1.0 if stat == "stable_rank" else 0.0, color="0.5", linestyle=":", linewidth=1)
            ax.set_title(f"{STATS[stat]} at {site}", fontsize=9)
            ax.set_xlabel("depth (layer)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    return save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stable rank and mean pairwise cosine per cell against depth, "
                                                 "from runs that logged normzoo's SignalPropagation callback.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders or any folder above them")
    parser.add_argument("--every", type=int, default=4, help="depths between the tables' columns (default 4)")
    parser.add_argument("--figure", type=Path, metavar="PNG", help="also draw both statistics against depth")
    args = parser.parse_args(argv)
    runs, _ = split_evaluations(load_runs(args.run_dirs))
    cells = group_cells(runs)
    profiles = {cell.label: profile(cell.runs) for cell in cells}
    print(f"Rank at initialization against depth per cell, mean ± 95% interval over seeds "
          f"({len(runs)} runs, {len(cells)} cells)")
    for site, stat in keys_of(profiles):
        print(f"\n{STATS[stat]} at {site}:\n")
        print(depth_table(cells, profiles, (site, stat), args.every))
    if args.figure is not None:
        print(f"\nfigure: {draw_figure(cells, profiles, args.figure)}")


if __name__ == "__main__":
    main()
