"""A TensorBoard custom-scalars layout for the diagnostics: a category per callback, a chart per layer.

TensorBoard keeps one layout per run (the newest it finds), so the first diagnostics
callback of a run writes the layout of all of them, at fit start, on rank zero. Charts
select tags by regular expression across runs, so a BN run and a no-BN run of the same
model overlay in one chart per layer (TensorBoard's CUSTOM SCALARS tab).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

Charts = dict[str, list[str]]
"""Chart title -> the tag regexes it draws."""


def chart_per_group(callback_name: str, groups: Iterable[str]) -> Charts:
    """One chart per layer (or other group) holding all of its statistics."""
    prefix = f"diagnostics/{callback_name}"
    return {group: [f"^{re.escape(prefix)}/{re.escape(group)}/"] for group in groups}


def write_layout(trainer: L.Trainer, pl_module: L.LightningModule, caller: L.Callback) -> None:
    """Write every diagnostics callback's charts to each TensorBoard logger, once per run.

    Called by each diagnostics callback at fit start; only the first one in
    ``trainer.callbacks`` (one with ``layout_charts``) writes.
    """
    diagnostics = [callback for callback in trainer.callbacks if hasattr(callback, "layout_charts")]
    if not diagnostics or diagnostics[0] is not caller or not trainer.is_global_zero:
        return
    layout = {}
    for callback in diagnostics:
        charts = callback.layout_charts(pl_module)
        if charts:
            layout[f"diagnostics/{callback.name}"] = {title: ["Multiline", tags] for title, tags in charts.items()}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and layout:
            logger.experiment.add_custom_scalars(layout)
