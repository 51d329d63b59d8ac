"""A TensorBoard custom-scalars layout for the diagnostics: a category per callback, a chart per layer.

TensorBoard keeps one layout per run (the newest it finds), so each write holds the charts
of every diagnostics callback of the trainer, on rank zero: at fit start, and again when a
callback learns its layers at its first measurement (activation sites are only known once
the model has run). Charts select tags by regular expression across runs, so a BN run and a
no-BN run of the same model overlay in one chart per layer (TensorBoard's CUSTOM SCALARS tab).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from normzoo.tb_logging import tensorboard_loggers

Charts = dict[str, list[str]]
"""Chart title -> the tag regexes it draws."""


def chart_per_group(callback_name: str, groups: Iterable[str]) -> Charts:
    """One chart per layer (or other group) holding all of its statistics."""
    prefix = f"diagnostics/{callback_name}"
    return {group: [f"^{re.escape(prefix)}/{re.escape(group)}/"] for group in groups}


def write_layout(trainer: Any, pl_module: Any) -> None:
    """Write every diagnostics callback's charts to each TensorBoard logger (rank zero only)."""
    if not trainer.is_global_zero:
        return
    layout = {}
    for callback in trainer.callbacks:
        charts = callback.layout_charts(pl_module) if hasattr(callback, "layout_charts") else None
        if charts:
            layout[f"diagnostics/{callback.name}"] = {title: ["Multiline", tags] for title, tags in charts.items()}
    for logger in tensorboard_loggers(trainer.loggers):
        if layout:
            logger.experiment.add_custom_scalars(layout)
