"""Comparison figures of runs, drawn with matplotlib's object API (no pyplot state, Agg PNGs).

Every run keeps one colour across all figures; a diverged run is drawn dashed, with an
``x`` where it diverged and "(diverged)" after its name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from normzoo.report.runs import Run, matching_tags
from normzoo.report.tables import Pivot, format_hparam

DIAGNOSTIC_TAG = re.compile(r"^diagnostics/(?P<callback>[^/]+)/(?:(?P<layer>.+)/)?(?P<stat>[^/]+)$")
MAX_PANELS = 8
PERCENTILE_STAT = re.compile(r"^p\d+(\.\d+)?$")


def file_name(tag: str) -> str:
    """A tag as a file name: ``val/acc`` -> ``val_acc.png``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).strip("_") + ".png"


def run_colors(runs: Sequence[Run]) -> dict[str, str]:
    palette = [f"C{i}" for i in range(10)]
    return {run.label: palette[i % len(palette)] for i, run in enumerate(runs)}


def legend_name(run: Run) -> str:
    return f"{run.label} (diverged)" if run.status == "diverged" else run.label


def plot_curves(runs: Sequence[Run], tag: str, path: Path, log_y: bool = False) -> Path | None:
    """One line per run of ``tag`` over steps; None (and no file) if no run logged it."""
    present = [run for run in runs if tag in run.scalars]
    if not present:
        return None
    colors = run_colors(runs)
    figure = Figure(figsize=(6.4, 4.0))
    axis = figure.subplots()
    for run in present:
        _plot_series(axis, run, tag, colors[run.label], legend_name(run))
    axis.set_xlabel("step")
    axis.set_ylabel(tag.rsplit("/", 1)[-1])
    if log_y and _all_positive(present, tag):
        axis.set_yscale("log")
    axis.set_title(tag, fontsize=9 if len(tag) > 40 else 12)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    return _save(figure, path)


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
    """One panel per layer (at most ``MAX_PANELS``, spread over the network), one line per run."""
    if len(layers) > MAX_PANELS:
        layers = [layers[round(i * (len(layers) - 1) / (MAX_PANELS - 1))] for i in range(MAX_PANELS)]
    columns = min(4, len(layers))
    rows = math.ceil(len(layers) / columns)
    figure = Figure(figsize=(3.4 * columns, 2.6 * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    colors = run_colors(runs)
    for axis, layer in zip(axes, layers, strict=False):
        tag = "/".join(part for part in ("diagnostics", callback, layer, stat) if part)
        for run in runs:
            if tag in run.scalars:
                _plot_series(axis, run, tag, colors[run.label], legend_name(run))
        axis.set_title(layer or stat, fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in axes[len(layers):]:
        axis.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    legend_rows = math.ceil(len(labels) / 4)
    figure.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=7)
    figure.suptitle(f"{callback}: {stat} over steps")
    height = figure.get_figheight()  # fixed margins: tight_layout costs seconds on a grid of panels
    figure.subplots_adjust(left=0.07, right=0.98, top=1 - 0.5 / height, bottom=(0.45 + 0.18 * legend_rows) / height,
                           hspace=0.45, wspace=0.3)
    return _save(figure, path)


def band_prefixes(runs: Sequence[Run], pattern: str) -> list[str]:
    """The tag prefixes with ``p<q>`` percentiles that ``pattern`` names (``*``: see ``matching_tags``).

    ``diagnostics/activation_drift/*`` is the layer ``ActivationDrift(layers=["last"])`` resolved to.
    A pattern that names none is returned as it is, so the report says that nothing was logged under it.
    """
    tags = matching_tags(runs, pattern.rstrip("/") + "/*") if "*" in pattern else []
    found = [tag.rsplit("/", 1)[0] for tag in tags if PERCENTILE_STAT.match(tag.rsplit("/", 1)[1])]
    return list(dict.fromkeys(found)) or [pattern]


def plot_bands(runs: Sequence[Run], prefix: str, path: Path) -> Path | None:
    """Percentile bands of ``prefix/p<q>`` tags (Ioffe & Szegedy Fig 1): a panel per run.

    The lowest and highest percentile bound the shaded band; every percentile is a line.
    """
    prefix = prefix.rstrip("/")
    present = [(run, _percentile_tags(run, prefix)) for run in runs]
    present = [(run, tags) for run, tags in present if tags]
    if not present:
        return None
    figure = Figure(figsize=(3.6 * len(present), 3.2))
    axes = figure.subplots(1, len(present), squeeze=False, sharey=True)[0]
    for axis, (run, tags) in zip(axes, present, strict=True):
        for quantile, tag in tags:
            series = run.scalars[tag]
            axis.plot(series.steps, series.values, label=f"p{quantile:g}", lw=1.2)
        low, high = run.scalars[tags[0][1]], run.scalars[tags[-1][1]]
        if low.steps == high.steps:
            axis.fill_between(low.steps, low.values, high.values, alpha=0.15)
        axis.set_title(legend_name(run), fontsize=9)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("input value")
    axes[0].legend(fontsize=7)
    figure.suptitle(f"percentiles of {prefix.split('/')[-1]}'s input", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def plot_versus(table: Pivot, path: Path, log_x: bool | None = None) -> Path:
    """The final metric against ``table.column_key``, one line per ``table.row_key`` value.

    Diverged cells are drawn as ``x`` markers on the top edge.
    """
    figure = Figure(figsize=(6.4, 4.0))
    axis = figure.subplots()
    numeric = all(isinstance(c, (int, float)) for c in table.columns)
    xs = list(table.columns) if numeric else list(range(len(table.columns)))
    for index, row in enumerate(table.rows):
        ys = [table.value(row, column) for column in table.columns]
        color = f"C{index % 10}"
        axis.plot(xs, [math.nan if y is None else y for y in ys], "o-", color=color, label=format_hparam(row))
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
    if any(table.diverged(r, c) for r in table.rows for c in table.columns):
        axis.set_title("x on the top edge: diverged", fontsize=8)
    return _save(figure, path)


def plot_heatmap(table: Pivot, path: Path) -> Path:
    """The final metric as a grid over two hyperparameters; diverged cells are grey and say so."""
    values = [[table.value(r, c) for c in table.columns] for r in table.rows]
    grid = [[math.nan if v is None else v for v in row] for row in values]
    figure = Figure(figsize=(1.1 * len(table.columns) + 2.5, 0.7 * len(table.rows) + 1.8))
    axis = figure.subplots()
    image = axis.imshow(grid, cmap=colormaps["viridis"].with_extremes(bad="lightgrey"), aspect="auto")
    for i, row in enumerate(table.rows):
        for j, column in enumerate(table.columns):
            value = values[i][j]
            dark_cell = value is not None and float(image.norm(value)) < 0.6  # viridis is dark below ~0.6
            axis.text(j, i, table.text(row, column), ha="center", va="center", fontsize=8,
                      color="white" if dark_cell else "black")
    axis.set_xticks(range(len(table.columns)), [format_hparam(c) for c in table.columns])
    axis.set_yticks(range(len(table.rows)), [format_hparam(r) for r in table.rows])
    axis.set_xlabel(table.column_key)
    axis.set_ylabel(table.row_key)
    axis.set_title(table.metric.title)
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    return _save(figure, path)


def _plot_series(axis, run: Run, tag: str, color: str, label: str) -> None:
    series = run.scalars[tag]
    style = "--" if run.status == "diverged" else "-"
    marker = "o" if len(series.steps) == 1 else None
    axis.plot(series.steps, series.values, style, color=color, label=label, lw=1.2, marker=marker)
    diverged_at = run.diverged_at
    if diverged_at is not None:
        finite = [(s, v) for s, v in zip(series.steps, series.values, strict=True) if math.isfinite(v)]
        if finite:
            axis.plot(diverged_at, finite[-1][1], "x", color=color, ms=8, mew=2)


def _percentile_tags(run: Run, prefix: str) -> list[tuple[float, str]]:
    pattern = re.compile(re.escape(prefix) + r"/p(\d+(?:\.\d+)?)$")
    found = [(float(m[1]), tag) for tag in run.scalars if (m := pattern.match(tag))]
    return sorted(found)


def _all_positive(runs: Sequence[Run], tag: str) -> bool:
    return all(v > 0 for run in runs for v in run.scalars[tag].values if math.isfinite(v))


def _save(figure: Figure, path: Path) -> Path:
    """Write the PNG; its ``Legend`` text chunk lists the legend entries and panel titles (the runs drawn)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = {label for axis in figure.axes for label in axis.get_legend_handles_labels()[1]}
    labels |= {axis.get_title() for axis in figure.axes if axis.get_visible() and axis.get_title()}
    figure.savefig(path, dpi=100, metadata={"Legend": "; ".join(sorted(labels))})
    return path
