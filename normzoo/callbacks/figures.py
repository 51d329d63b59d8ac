"""Figures of the diagnostics, drawn into TensorBoard at the end of training (rank zero).

Every figure is 640 x 400 px (legible in TensorBoard's IMAGES, its tick labels and minus
signs uncut: ``tight_layout`` keeps the labels inside), with labelled axes and units, and
a title naming the run (TensorBoard's run name, ``<name>/version_N``) and the steps: IMAGES
shows runs side by side, and a bare image does not say whose it is. Matplotlib's Agg
backend, each figure closed after it is written; loggers from ``lightning.pytorch`` and
``pytorch_lightning`` alike (``tensorboard_loggers``). ``draw_percentile_bands`` is shared
with ``normzoo report``, so a band looks the same in both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from normzoo.tb_logging import tensorboard_loggers

FIGURE_SIZE = (6.4, 4.0)
"""Inches at 100 dpi: 640 x 400 px."""
BAND_Y_LABEL = "input value (pre-activation)"


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


def run_name(logger: Any) -> str:
    """The run as TensorBoard names it under the logger's save dir: ``<name>/version_N``."""
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return "/".join(part for part in (logger.name, version) if part)


def add_figure(trainer: Any, tag: str, title: str, draw: Callable[[Any], None],
               figsize: tuple[float, float] = FIGURE_SIZE) -> None:
    """Draw one figure with ``draw(axis)`` and add it to every TensorBoard logger at the current step.

    The title is ``title`` (which says the step or steps drawn), then the run's name on a second line.
    """
    loggers = tensorboard_loggers(trainer.loggers)
    if not loggers or not trainer.is_global_zero:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=figsize, dpi=100)
    try:
        draw(axis)
        for logger in loggers:
            axis.set_title(f"{title}\nrun {run_name(logger)}", fontsize=10)
            figure.tight_layout()
            logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)
    finally:
        plt.close(figure)


def draw_percentile_bands(axis: Any, steps: Sequence[float], series: dict[float, Sequence[float]],
                          color: str = "C0") -> None:
    """Percentiles of an input over steps (Ioffe & Szegedy Fig 1), all in one ``color``.

    ``series`` maps each percentile q to its values; the median is solid, the lower ones
    dashed, the upper ones dash-dotted, and the lowest and highest bound a shaded band.
    """
    qs = sorted(series)
    for q in qs:
        style = "-" if q == 50 else "--" if q < 50 else "-."
        axis.plot(steps, series[q], style, color=color, lw=1.6 if q == 50 else 1.1, label=f"p{q:g}")
    if len(qs) >= 2:
        axis.fill_between(steps, series[qs[0]], series[qs[-1]], color=color, alpha=0.15, lw=0)
    axis.set_xlabel("step")
    axis.grid(alpha=0.3)
