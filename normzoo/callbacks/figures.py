"""Figures and images of the diagnostics, drawn into TensorBoard at the end of training (rank zero).

Matplotlib's Agg backend, each figure closed after it is written; loggers from
``lightning.pytorch`` and ``pytorch_lightning`` alike (``tensorboard_loggers``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from normzoo.tb_logging import tensorboard_loggers


def layer_series(history: Sequence[dict[str, float]], layers: Sequence[str],
                 keys: Sequence[str]) -> dict[str, tuple[list[float], dict[str, list[float]]]]:
    """Per layer, the steps at which all of ``<layer>/<key>`` were recorded and each key's values there."""
    series = {}
    for layer in layers:
        records = [r for r in history if all(f"{layer}/{key}" in r for key in keys)]
        if records:
            series[layer] = ([r["step"] for r in records],
                             {key: [r[f"{layer}/{key}"] for r in records] for key in keys})
    return series


def add_figure(trainer: Any, tag: str, title: str, draw: Callable[[Any], None]) -> None:
    """Draw one figure with ``draw(axis)`` and add it to every TensorBoard logger at the current step."""
    loggers = tensorboard_loggers(trainer.loggers)
    if not loggers or not trainer.is_global_zero:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    try:
        draw(axis)
        axis.set_title(title)
        figure.tight_layout()
        for logger in loggers:
            logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)
    finally:
        plt.close(figure)


def add_image(trainer: Any, tag: str, image: Tensor) -> None:
    """Add a (H, W) image with values in [0, 1] to every TensorBoard logger at the current step."""
    if not trainer.is_global_zero:
        return
    for logger in tensorboard_loggers(trainer.loggers):
        logger.experiment.add_image(tag, image.detach().float().cpu()[None], global_step=trainer.global_step,
                                    dataformats="CHW")
