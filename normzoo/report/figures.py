"""Comparison figures of runs, drawn with matplotlib's object API (no pyplot state, Agg PNGs).

Figures draw cells (``normzoo.report.cells``): the runs of one setup over its seeds. A cell's
curve is the mean over its seeds at each step, with the 95% Student-t interval of that mean
shaded around it in the cell's colour (where at least 2 seeds logged the step; on a log axis
the band's lower edge is clipped to the lowest seed where the interval would go below zero).
A curve of one step shows its interval as an error bar. A cell of one run is that run's line, without a band.

Every cell keeps one colour across all figures, TensorBoard's own: the SCALARS and CUSTOM
SCALARS dashboards colour runs from ``TENSORBOARD_PALETTE`` in the order TensorBoard lists
them (by the time of their first event, then by name), and the report colours cells in the
order of their first runs' first events, so a study's cells get the palette in the study's
order and a run of its own has the same colour in the report and in TensorBoard. A cell
whose runs all diverged is drawn dashed; an ``x`` marks where each diverged run diverged, and
"(diverged)" or "(k/n diverged)" follows the cell's name.

Figures are legible at their size: at least ``MIN_WIDTH`` inches (640 px at 100 dpi) wide,
their axes labelled with units, saved with a tight bounding box so no title, tick label or
minus sign is cut. Each ``plot_*`` saves the figure that its ``draw_*`` returns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from normzoo.callbacks.figures import BAND_Y_LABEL, draw_percentile_bands
from normzoo.report.cells import Cell, group_cells, has_seeds
from normzoo.report.intervals import Interval
from normzoo.report.runs import EVENT_GLOB, Run, matching_tags
from normzoo.report.tables import Pivot, format_hparam
from normzoo.tags import RECORDS, ROOT
from normzoo.tags import tag as diagnostic_tag

DIAGNOSTIC_TAG = re.compile(
    rf"^{ROOT}/(?!(?:{'|'.join(RECORDS)})/)(?P<callback>[^/]+)/(?:(?P<layer>.+)/)?(?P<stat>[^/]+)$")
MAX_PANELS = 8
PERCENTILE_STAT = re.compile(r"^p\d+(\.\d+)?$")
MIN_WIDTH = 6.4
"""Inches: 640 px at the 100 dpi of the PNGs, for a figure of one panel."""
BAND_ALPHA = 0.2
"""Opacity of a cell's 95% band over seeds, in the cell's colour."""
BAND_NOTE = "line: mean over seeds; band: its 95% interval"
TENSORBOARD_PALETTE = ("#ff7043", "#0077bb", "#cc3311", "#33bbee", "#ee3377", "#009988", "#bbbbbb")
"""TensorBoard's run colours (``tensorboardColorBlindAssist`` of its SCALARS and CUSTOM SCALARS), in order."""
STAT_LABELS = {
    "mean": "mean (input units)", "std": "std (input units)",
    "w1_prev": "W1 to the previous measurement (input units)", "w1_first": "W1 to the first measurement (input units)",
    "saturated_fraction": "saturated fraction (0-1)", "dead_fraction": "dead fraction of units (0-1)",
    "grad_norm": "gradient L2 norm", "entropy": "entropy (nats)",
    "update_ratio_log10": "log10(update / weight)", "lr_grad_ratio_log10": "log10(lr x grad / weight)",
    "cosine": "cosine similarity", "l2_diff": "gradient change (L2)", "relative_l2_diff": "relative gradient change",
    "loss": "loss", "loss_min": "loss", "loss_max": "loss", "loss_variation": "loss range (max - min)",
    "grad_change_min": "gradient change (L2)", "grad_change_max": "gradient change (L2)",
    "beta_smoothness": "grad change / step length", "mean_gap": "gap (in running stds)", "var_gap": "relative gap",
    "loss_gap": "loss gap (train - eval)", "acc_gap": "accuracy gap (train - eval)", "output_gap": "relative L2 gap",
}
"""The y label, with its unit, of a diagnostics statistic; others are labelled with their name."""


def file_name(tag: str) -> str:
    """A tag as a file name: ``val/acc`` -> ``val_acc.png``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).strip("_") + ".png"


def cell_colors(cells: Sequence[Cell]) -> dict[str, str]:
    """Each cell's colour: TensorBoard's palette in the order of the cells' first events (then of their first
    paths), repeating after 7, as TensorBoard colours runs; a cell of one run gets that run's TensorBoard colour."""
    def start(cell: Cell) -> tuple[float, str]:
        return min((first_event_time(run.path), str(run.path)) for run in cell.runs)

    ordered = sorted(cells, key=start)
    return {cell.label: TENSORBOARD_PALETTE[i % len(TENSORBOARD_PALETTE)] for i, cell in enumerate(ordered)}


@lru_cache(maxsize=1024)
def first_event_time(run_dir: Path) -> float:
    """The wall time of a run folder's first event, TensorBoard's start time of the run (inf if none)."""
    times = []
    for path in sorted(Path(run_dir).glob(EVENT_GLOB)):
        try:
            times += [event.wall_time for event, _ in zip(EventFileLoader(str(path)).Load(), range(1), strict=False)]
        except (OSError, ValueError):  # a truncated file: the other files, or inf
            continue
    return min(times, default=math.inf)


def plot_curves(runs: Sequence[Run], tag: str, path: Path, log_y: bool = False) -> Path | None:
    """One line per cell of ``tag`` over steps, banded over seeds; None (and no file) if no run logged it."""
    figure = draw_curves(runs, tag, log_y)
    return None if figure is None else save_figure(figure, path)


def draw_curves(runs: Sequence[Run], tag: str, log_y: bool = False) -> Figure | None:
    """The figure of ``plot_curves``, unsaved; None if no run logged ``tag``."""
    cells = group_cells(runs)
    present = [cell for cell in cells if any(tag in run.scalars for run in cell.runs)]
    if not present:
        return None
    colors = cell_colors(cells)
    figure = Figure(figsize=(MIN_WIDTH, 4.0))
    axis = figure.subplots()
    scale = log_y and _all_positive([run for cell in present for run in cell.runs], tag)
    for cell in present:
        _plot_cell(axis, cell, tag, colors[cell.label], scale)
    axis.set_xlabel("step")
    axis.set_ylabel(tag.rsplit("/", 1)[-1] + (" (log scale)" if scale else ""))
    if scale:
        axis.set_yscale("log")
    axis.set_title(tag, fontsize=9 if len(tag) > 60 else 12)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best", title=BAND_NOTE if has_seeds(present) else None, title_fontsize=7)
    return figure


def diagnostic_groups(runs: Sequence[Run]) -> dict[tuple[str, str], list[str]]:
    """``(callback, stat)`` -> the layers (``""`` for run-level stats) any run logged it for.

    Percentile stats (``p15`` ...) are left to ``plot_bands``, which draws them together.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for run in runs:
        for tag in run.scalars:
            match = DIAGNOSTIC_TAG.match(tag)
            if match and not PERCENTILE_STAT.match(match["stat"]):
                layers = groups.setdefault((match["callback"], match["stat"]), [])
                if (match["layer"] or "") not in layers:
                    layers.append(match["layer"] or "")
    return groups


def plot_diagnostic(runs: Sequence[Run], callback: str, stat: str, layers: Sequence[str], path: Path) -> Path:
    """One panel per layer (at most ``MAX_PANELS``, spread over the network), one line per cell, banded over seeds."""
    return save_figure(draw_diagnostic(runs, callback, stat, layers), path)


def draw_diagnostic(runs: Sequence[Run], callback: str, stat: str, layers: Sequence[str]) -> Figure:
    """The figure of ``plot_diagnostic``, unsaved: the layers' panels share their y scale, as runs and
    layers are compared; the legend (the runs) is below them."""
    layers = spread(layers, MAX_PANELS)
    columns = min(4, len(layers))
    rows = math.ceil(len(layers) / columns)
    figure = Figure(figsize=(max(MIN_WIDTH, 3.4 * columns), 2.6 * rows + 0.8))
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).flatten()
    cells = group_cells(runs)
    colors = cell_colors(cells)
    for axis, layer in zip(axes, layers, strict=False):
        tag = diagnostic_tag(callback, layer, stat)
        for cell in cells:
            _plot_cell(axis, cell, tag, colors[cell.label])
        axis.set_title(layer or stat, fontsize=8)
        axis.tick_params(labelsize=7, labelleft=True)
        axis.grid(alpha=0.3)
    for axis in axes[len(layers):]:
        axis.set_visible(False)
    for axis in axes[(rows - 1) * columns:]:
        axis.set_xlabel("step", fontsize=8)
    for axis in axes[::columns]:
        axis.set_ylabel(STAT_LABELS.get(stat, stat), fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    legend_rows = math.ceil(len(labels) / 4)
    figure.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8)
    figure.suptitle(f"{callback}: {stat} over steps" + (f" ({BAND_NOTE})" if has_seeds(cells) else ""))
    height = figure.get_figheight()  # fixed margins: tight_layout costs seconds on a grid of panels
    figure.subplots_adjust(left=0.6 / figure.get_figwidth() + 0.04, right=0.98, top=1 - 0.5 / height,
                           bottom=(0.55 + 0.2 * legend_rows) / height, hspace=0.5, wspace=0.3)
    return figure


def spread(items: Sequence[str], most: int) -> list[str]:
    """``items``, or ``most`` of them spread evenly from the first to the last."""
    if len(items) <= most:
        return list(items)
    return [items[round(i * (len(items) - 1) / (most - 1))] for i in range(most)]


def band_prefixes(runs: Sequence[Run], pattern: str) -> list[str]:
    """The tag prefixes with ``p<q>`` percentiles that ``pattern`` names (``*``: see ``matching_tags``).

    ``zoo/activation_drift/*`` is the layer ``ActivationDrift(layers=["last"])`` resolved to.
    A pattern that names none is returned as it is (``unknown_band_patterns`` tells them apart).
    """
    tags = matching_tags(runs, pattern.rstrip("/") + "/*") if "*" in pattern else []
    found = [tag.rsplit("/", 1)[0] for tag in tags if PERCENTILE_STAT.match(tag.rsplit("/", 1)[1])]
    return list(dict.fromkeys(found)) or [pattern]


def all_band_prefixes(runs: Sequence[Run]) -> list[str]:
    """Every tag prefix under which a run logged ``p<q>`` percentiles (each ActivationDrift layer), in
    the order first logged."""
    found = [tag.rsplit("/", 1)[0] for run in runs for tag in run.scalars
             if "/" in tag and PERCENTILE_STAT.match(tag.rsplit("/", 1)[1])]
    return list(dict.fromkeys(found))


def unknown_band_patterns(runs: Sequence[Run], patterns: Sequence[str]) -> list[str]:
    """The ``--bands`` patterns under which no run logged percentiles."""
    known = set(all_band_prefixes(runs))
    return [pattern for pattern in patterns if not known & set(band_prefixes(runs, pattern))]


def plot_bands(runs: Sequence[Run], prefix: str, path: Path) -> Path | None:
    """Percentile bands of ``prefix/p<q>`` tags (Ioffe & Szegedy Fig 1): a panel per run, one y scale."""
    figure = draw_bands(runs, prefix)
    return None if figure is None else save_figure(figure, path)


def draw_bands(runs: Sequence[Run], prefix: str) -> Figure | None:
    """The figure of ``plot_bands``, unsaved; None if no run logged percentiles under ``prefix``.

    Each panel is a cell, in the cell's colour and titled with its name; the panels share the y
    scale. Each percentile is its mean over the cell's seeds (the title then says over how
    many); the lowest and highest percentile bound the shaded band; every percentile is a line.
    """
    prefix = prefix.rstrip("/")
    cells = group_cells(runs)
    present = [(cell, _percentile_tags(cell, prefix)) for cell in cells]
    present = [(cell, tags) for cell, tags in present if tags]
    if not present:
        return None
    colors = cell_colors(cells)
    columns = min(4, len(present))
    rows = math.ceil(len(present) / columns)
    figure = Figure(figsize=(max(MIN_WIDTH, 3.4 * columns), 2.8 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).flatten()
    for axis, (cell, tags) in zip(axes, present, strict=False):
        curves = [(q, curve) for q, tag in tags if (curve := cell.curve(tag)) is not None]
        steps = curves[0][1].steps if curves else ()
        aligned = {q: curve.mean for q, curve in curves if curve.steps == steps}
        draw_percentile_bands(axis, steps, aligned, colors[cell.label])
        seeds = f", mean of {len(cell.runs)} runs" if len(cell.runs) > 1 else ""
        axis.set_title(cell.legend_name + seeds, fontsize=9, color=colors[cell.label])
        axis.tick_params(labelsize=8, labelleft=True)
        axis.set_xlabel("step", fontsize=8)
    for axis in axes[len(present):]:
        axis.set_visible(False)
    for axis in axes[::columns]:
        axis.set_ylabel(BAND_Y_LABEL, fontsize=8)
    axes[0].legend(fontsize=7, loc="best")
    figure.suptitle(f"percentiles of the input of {prefix.split('/')[-1]}", fontsize=10)
    return figure


def plot_versus(table: Pivot, path: Path, log_x: bool | None = None) -> Path:
    """The final metric against ``table.column_key``, one line per ``table.row_key`` value.

    Each point is the mean over its square's runs, with their 95% interval as an error bar when
    there are several (seeds). Diverged squares are drawn as ``x`` markers on the top edge.
    """
    figure = Figure(figsize=(6.4, 4.0))
    axis = figure.subplots()
    numeric = all(isinstance(c, (int, float)) for c in table.columns)
    xs = list(table.columns) if numeric else list(range(len(table.columns)))
    for index, row in enumerate(table.rows):
        intervals = [table.interval(row, column) for column in table.columns]
        ys = [math.nan if i is None else i.mean for i in intervals]
        errors = [math.nan if i is None or i.half_width is None else i.half_width for i in intervals]
        color = f"C{index % 10}"
        axis.errorbar(xs, ys, yerr=errors, fmt="o-", color=color, label=format_hparam(row), capsize=3)
        diverged = [x for x, column in zip(xs, table.columns, strict=True) if table.diverged(row, column)]
        if diverged:
            axis.plot(diverged, [1.0] * len(diverged), "x", color=color, ms=9, mew=2,
                      transform=axis.get_xaxis_transform(), clip_on=False)
    if log_x is None:
        log_x = numeric and min(xs) > 0 and max(xs) / min(xs) >= 10
    if log_x:
        axis.set_xscale("log", base=2 if all(float(x).is_integer() for x in xs) else 10)
    axis.set_xticks(xs, [format_hparam(c) for c in table.columns])
    axis.set_xlabel(table.column_key)
    axis.set_ylabel(table.metric.title)
    axis.grid(alpha=0.3)
    axis.legend(title=table.row_key, fontsize=8)
    notes = ["bars: 95% interval over seeds"] if table.has_seeds else []
    if any(table.diverged(r, c) for r in table.rows for c in table.columns):
        notes.append("x on the top edge: diverged")
    if notes:
        axis.set_title("; ".join(notes), fontsize=8)
    return save_figure(figure, path)


def plot_heatmap(table: Pivot, path: Path) -> Path:
    """The final metric as a grid over two hyperparameters (the mean over a square's seeds, its 95% interval's
    half-width below it); diverged squares are grey and say so."""
    values = [[table.value(r, c) for c in table.columns] for r in table.rows]
    grid = [[math.nan if v is None else v for v in row] for row in values]
    figure = Figure(figsize=(1.1 * len(table.columns) + 2.5, 0.7 * len(table.rows) + 1.8))
    axis = figure.subplots()
    image = axis.imshow(grid, cmap=colormaps["viridis"].with_extremes(bad="lightgrey"), aspect="auto")
    for i, row in enumerate(table.rows):
        for j, column in enumerate(table.columns):
            value = values[i][j]
            dark_cell = value is not None and float(image.norm(value)) < 0.6  # viridis is dark below ~0.6
            axis.text(j, i, table.text(row, column).replace(" ± ", "\n± "), ha="center", va="center",
                      fontsize=7 if table.has_seeds else 8, color="white" if dark_cell else "black")
    axis.set_xticks(range(len(table.columns)), [format_hparam(c) for c in table.columns])
    axis.set_yticks(range(len(table.rows)), [format_hparam(r) for r in table.rows])
    axis.set_xlabel(table.column_key)
    axis.set_ylabel(table.row_key)
    axis.set_title(table.metric.title + ("\n(mean ± 95% interval over seeds)" if table.has_seeds else ""))
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    return save_figure(figure, path)


def _plot_cell(axis, cell: Cell, tag: str, color: str, log_y: bool = False) -> None:
    """The cell's mean of ``tag`` as a line, its 95% interval over seeds as a band, an ``x`` where a run diverged."""
    curve = cell.curve(tag)
    if curve is None:
        return
    style = "--" if cell.diverged == len(cell.runs) else "-"
    marker = "o" if len(curve.steps) == 1 else None
    axis.plot(curve.steps, curve.mean, style, color=color, label=cell.legend_name, lw=1.2, marker=marker)
    low = [lowest if log_y and edge <= 0 else edge for edge, lowest in zip(curve.low, curve.lowest, strict=True)]
    banded = [math.isfinite(edge) for edge in low]
    if len(curve.steps) == 1 and banded[0]:  # a band over one step has no width: an error bar instead
        below, above = curve.mean[0] - low[0], curve.high[0] - curve.mean[0]
        axis.errorbar(curve.steps, curve.mean, yerr=[[below], [above]], fmt="none", ecolor=color, capsize=4)
    elif any(banded):
        axis.fill_between(curve.steps, low, curve.high, where=banded, color=color, alpha=BAND_ALPHA, lw=0)
    for run in cell.runs:
        if run.diverged_at is None:
            continue
        before = [(s, v) for s, v in zip(curve.steps, curve.mean, strict=True) if s <= run.diverged_at]
        if before:
            axis.plot(run.diverged_at, before[-1][1], "x", color=color, ms=8, mew=2)


def _percentile_tags(cell: Cell, prefix: str) -> list[tuple[float, str]]:
    pattern = re.compile(re.escape(prefix) + r"/p(\d+(?:\.\d+)?)$")
    found = {(float(m[1]), tag) for run in cell.runs for tag in run.scalars if (m := pattern.match(tag))}
    return sorted(found)


def banded_line(axis: Any, x: Sequence[float], intervals: Sequence[Interval | None], label: str,
                color: str | None = None, **style: Any) -> None:
    """A line through the intervals' means, their 95% band shaded (a point without an interval has no band)."""
    mean = [i.mean if i else math.nan for i in intervals]
    low = [i.low if i and i.low is not None else m for i, m in zip(intervals, mean, strict=True)]
    high = [i.high if i and i.high is not None else m for i, m in zip(intervals, mean, strict=True)]
    lines = axis.plot(x, mean, color=color, label=label, **style)
    axis.fill_between(x, low, high, color=lines[0].get_color(), alpha=BAND_ALPHA, linewidth=0)


def _all_positive(runs: Sequence[Run], tag: str) -> bool:
    return all(v > 0 for run in runs for v in run.scalars[tag].values if math.isfinite(v))


def save_figure(figure: Figure, path: Path) -> Path:
    """Write the PNG; its ``Legend`` text chunk lists the legend entries and panel titles (the runs drawn).

    The saved area is the drawn artists' own bounding box, so nothing is clipped, widened
    to ``MIN_WIDTH`` where it is narrower.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = {label for axis in figure.axes for label in axis.get_legend_handles_labels()[1]}
    labels |= {axis.get_title() for axis in figure.axes if axis.get_visible() and axis.get_title()}
    figure.savefig(path, dpi=100, bbox_inches=_saved_area(figure), metadata={"Legend": "; ".join(sorted(labels))})
    return path


def _saved_area(figure: Figure, pad: float = 0.15) -> Bbox:
    """The figure's tight bounding box in inches, padded, at least ``MIN_WIDTH`` wide."""
    FigureCanvasAgg(figure)
    figure.draw_without_rendering()  # lays out constrained figures, as savefig would
    box = figure.get_tightbbox(figure.canvas.get_renderer()).padded(pad)
    extra = max(0.0, MIN_WIDTH - box.width) / 2
    return Bbox.from_extents(box.x0 - extra, box.y0, box.x1 + extra, box.y1)
