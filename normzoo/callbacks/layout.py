"""A TensorBoard custom-scalars layout for the diagnostics: a category per callback, a chart per
(layer, statistic family).

A family is statistics that share a unit and a scale (a layer's mean and std; its w1
distances), so no chart squeezes a cosine against an l2 distance, and a chart of one family of
one layer draws a few lines per run, which the legend tells apart by run name. A percentile
band (Ioffe & Szegedy's Fig 1) is TensorBoard's own margin chart: the median as a line inside
the band of the outermost percentiles around it. Chart titles are ``"<layer>: <family>"``;
charts come family by family, layer by layer within a family. A callback's margin charts get a
category of their own, ``zoo/<callback> bands``, placed first: within one category TensorBoard
draws the margin charts after the others, and in reverse order, which the layout undoes.

TensorBoard keeps one layout per run (the newest it finds), so each write holds the charts
of every diagnostics callback of the trainer, on rank zero: at fit start, and again when a
callback learns its layers at its first measurement (activation sites are only known once
the model has run). Multiline charts select tags by regular expression and margin charts by
exact tag, both across runs, so a BN run and a no-BN run of the same model overlay in each
chart (TensorBoard's CUSTOM SCALARS tab).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from normzoo.tags import tag
from normzoo.tb_logging import tensorboard_loggers


@dataclass(frozen=True)
class Margin:
    """A margin chart: the ``value`` tag as a line inside the band from ``lower`` to ``upper`` (exact tags)."""

    value: str
    lower: str
    upper: str


Chart = list[str] | Margin
"""A multiline chart (the tag regexes it draws) or a margin chart."""

Charts = dict[str, Chart]
"""Chart title -> its content."""


def chart_title(group: str, family: str) -> str:
    """``"<layer>: <family>"``, or the family alone for statistics of no layer."""
    return f"{group}: {family}" if group else family


def stats_regex(callback_name: str, group: str, stats: Sequence[str]) -> str:
    """The regex of exactly these statistics of one group (a layer, or none: ``group=""``)."""
    path = "/".join(part for part in (tag(callback_name), group) if part)
    names = "|".join(re.escape(stat) for stat in stats)
    return f"^{re.escape(path)}/({names})$"


def chart_per_group(callback_name: str, groups: Iterable[str]) -> Charts:
    """One chart per layer (or other group) holding all of its statistics: for a diagnostic without families."""
    prefix = tag(callback_name)
    return {group: [f"^{re.escape(prefix)}/{re.escape(group)}/"] for group in groups}


def family_charts(callback_name: str, groups: Iterable[str], families: Mapping[str, Sequence[str]]) -> Charts:
    """A multiline chart per (family, group): family -> the statistics it draws of each group."""
    groups = list(groups)
    return {chart_title(group, family): [stats_regex(callback_name, group, stats)]
            for family, stats in families.items() for group in groups}


def margin_chart(callback_name: str, group: str, value: str, lower: str, upper: str) -> Margin:
    """A margin chart of three statistics of one group (``group=""`` for none)."""
    path = "/".join(part for part in (tag(callback_name), group) if part)
    return Margin(f"{path}/{value}", f"{path}/{lower}", f"{path}/{upper}")


def bands_category(callback_name: str) -> str:
    """The custom-scalars category of a callback's margin charts (its bands), placed before its other charts."""
    return f"{tag(callback_name)} bands"


def layout_proto_dict(charts: Charts) -> dict[str, list[Any]]:
    """Charts in ``SummaryWriter.add_custom_scalars``' form: title -> ["Multiline", regexes] or
    ["Margin", [value, lower, upper]]."""
    return {title: ["Margin", [chart.value, chart.lower, chart.upper]] if isinstance(chart, Margin)
            else ["Multiline", list(chart)] for title, chart in charts.items()}


def write_layout(trainer: Any, pl_module: Any) -> None:
    """Write every diagnostics callback's charts to each TensorBoard logger (rank zero only)."""
    if not trainer.is_global_zero:
        return
    layout = {}
    for callback in trainer.callbacks:
        charts = callback.layout_charts(pl_module) if hasattr(callback, "layout_charts") else None
        if charts:
            margins = {title: chart for title, chart in charts.items() if isinstance(chart, Margin)}
            if margins:  # TensorBoard draws a category's margin charts after its others, last first
                layout[bands_category(callback.name)] = layout_proto_dict(dict(reversed(margins.items())))
            layout[tag(callback.name)] = layout_proto_dict({title: chart for title, chart in charts.items()
                                                            if title not in margins})
    for logger in tensorboard_loggers(trainer.loggers):
        if layout:
            logger.experiment.add_custom_scalars(layout)
