"""``ActivationDrift``: internal covariate shift as distribution drift (Ioffe & Szegedy 2015, Fig 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from typing_extensions import override

from normzoo.callbacks.base import ProbeDiagnostic
from normzoo.callbacks.capture import Captured
from normzoo.callbacks.distribution import percentiles, sorted_sample, wasserstein1
from normzoo.callbacks.evaluate import Evaluation, ForwardFn
from normzoo.callbacks.figures import BAND_Y_LABEL, add_figure, draw_percentile_bands, layer_series
from normzoo.callbacks.layout import Charts, chart_title, family_charts, margin_chart
from normzoo.errors import ConfigError


class ActivationDrift(ProbeDiagnostic):
    """Track the distribution of each activation's input on a fixed probe batch over training.

    Ioffe & Szegedy's Fig 1 shows the {15, 50, 85}th percentiles of a sigmoid's input in the
    last hidden layer drifting without BN and staying put with it. This callback measures
    that for every watched activation, every ``every_n_steps`` optimizer steps, on the same
    probe samples: the first ``probe_size`` training samples, kept for the whole run (and in
    checkpoints). Step 0 is the untrained network (see ``ProbeDiagnostic``).

    What is watched: the input of every activation the model computes, as modules
    (``nn.ReLU``, in place or not), functions (``torch.relu``, ``F.gelu``) or tensor methods
    (``x.sigmoid()``), one site per call (``normzoo.callbacks.capture``); above 12 sites, the
    last one of each stage of the model (``layers=`` chooses).

    The probe forward is the model's own ``training_step``, replayed (``forward=`` replaces
    it), in ``mode`` ("train": batch statistics and noisy-BN noise, as the layers see them
    in training; "eval": as at inference) under ``no_grad``; BN running statistics, module
    modes, attributes and the RNG are restored afterwards, so measuring does not change the
    run. Under DDP every rank measures its own probe shard and the samples are gathered, so
    the numbers describe the union of the shards; rank zero writes.

    Logged metrics (``<layer>`` is the site name):
        ``zoo/activation_drift/<layer>/p<q>`` for each percentile ``q``,
        ``.../mean``, ``.../std``, ``.../w1_prev`` (1-Wasserstein distance to the previous
        measurement), ``.../w1_first`` (to the first one). At the end of training, with a
        TensorBoard logger, a figure of the percentile bands over steps (``.../bands``), titled
        with the layer, the run and the step.
        In CUSTOM SCALARS, per layer: the median in its band (p50 in p15-p85, a margin chart),
        mean and std, and the w1 distances, a chart each.

    Args:
        every_n_steps: optimizer steps between measurements (step 0 is measured too).
        percentiles: which percentiles (0..100) to log.
        layers: sites or module paths to watch (a module that is not an activation has its
            input watched), or ``"last"``: the last activation the forward computes; default
            every activation, one per stage above 12.
        probe_size: samples in the probe batch (per rank).
        mode: "train" or "eval" for the probe forward.
        max_elements: values per layer kept for statistics (a fixed strided subset beyond it).
        log_figure: draw the percentile bands into TensorBoard at the end of training.
        unit: watch one feature (dim 1: a unit of an MLP layer, a channel of conv maps) instead
            of pooling all of them: Ioffe & Szegedy plot "a typical sigmoid".
        forward: ``(pl_module, batch) -> outputs`` to run instead of the replayed ``training_step``.
        strict: raise on any measurement error instead of warning and stopping.
        figure_ylim: the band figures' y range, ``(low, high)``: the same for every run, so runs
            side by side in IMAGES share a scale (default: each run's own range; ``normzoo report``
            draws the runs' bands on one shared scale).

    Raises:
        ConfigError: bad settings. ``DiagnosticError`` at the first measurement: named layers
            that compute nothing, or a forward that fails.

    Example::

        trainer = Trainer(callbacks=[ActivationDrift(every_n_steps=200)])
    """

    name = "activation_drift"

    def __init__(
        self,
        every_n_steps: int = 200,
        percentiles: Sequence[float] = (15, 50, 85),
        layers: Sequence[str] | None = None,
        probe_size: int = 128,
        mode: str = "train",
        max_elements: int = 100_000,
        log_figure: bool = True,
        unit: int | None = None,
        forward: str | ForwardFn | None = None,
        strict: bool = False,
        figure_ylim: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(every_n_steps, layers, probe_size, mode, forward=forward, strict=strict)
        if max_elements < 2:
            raise ConfigError("ActivationDrift needs max_elements >= 2.")
        self.percentiles = tuple(float(q) for q in percentiles)
        if not all(0 <= q <= 100 for q in self.percentiles):
            raise ConfigError(f"percentiles must lie in [0, 100], got {self.percentiles}.")
        self.unit = unit
        self.max_elements = max_elements
        self.log_figure = log_figure
        if figure_ylim is not None and not float(figure_ylim[0]) < float(figure_ylim[1]):
            raise ConfigError(f"ActivationDrift figure_ylim must be (low, high) with low < high, got {figure_ylim}.")
        self.figure_ylim = None if figure_ylim is None else (float(figure_ylim[0]), float(figure_ylim[1]))
        self._first: dict[str, Tensor] = {}
        self._previous: dict[str, Tensor] = {}

    @override
    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """Per layer: the median inside the outermost percentile band around it (TensorBoard's margin
        chart; every percentile as lines too when more are logged, or instead when there is no band),
        mean and std, and the w1 distances: a chart each, as their scales differ."""
        band = percentile_band(self.percentiles)
        charts: Charts = {}
        if band is not None:
            value, lower, upper = (f"p{q:g}" for q in band)
            charts.update({chart_title(group, f"{value} in {lower}-{upper}"):
                           margin_chart(self.name, group, value, lower, upper) for group in self.groups})
        if band is None or len(set(self.percentiles)) > 3:
            charts.update(family_charts(self.name, self.groups, {"percentiles": [f"p{q:g}" for q in self.percentiles]}))
        families = {"mean, std": ("mean", "std"), "w1 distance": ("w1_prev", "w1_first")}
        return {**charts, **family_charts(self.name, self.groups, families)}

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._draw(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "first": {k: v.cpu() for k, v in self._first.items()},
            "previous": {k: v.cpu() for k, v in self._previous.items()},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._first, self._previous = dict(state_dict["first"]), dict(state_dict["previous"])

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule, captured: Captured, evaluation: Evaluation,
                step: int) -> dict[str, Tensor]:
        stats: dict[str, Tensor] = {}
        for name, inputs in captured.items():
            local = sorted_sample(self._watched(name, inputs), self.max_elements)
            values = trainer.strategy.all_gather(local).flatten().sort().values if trainer.world_size > 1 else local
            stats.update(self._layer_stats(name, values))
        return stats

    def _watched(self, name: str, inputs: Tensor) -> Tensor:
        """The layer's input, or only feature ``unit`` of it."""
        if self.unit is None:
            return inputs
        if inputs.dim() < 2 or not -inputs.shape[1] <= self.unit < inputs.shape[1]:
            width = inputs.shape[1] if inputs.dim() > 1 else 0
            raise ConfigError(f"ActivationDrift(unit={self.unit}): layer {name!r} has inputs of shape "
                              f"{tuple(inputs.shape)}, so unit must lie in [0, {width}).")
        return inputs[:, self.unit]

    def _layer_stats(self, name: str, values: Tensor) -> dict[str, Tensor]:
        first = self._first.setdefault(name, values)
        previous = self._previous.get(name, values)
        self._previous[name] = values
        stats = torch.cat([
            percentiles(values, self.percentiles),
            torch.stack([values.mean(), values.std(), wasserstein1(values, previous.to(values.device)),
                         wasserstein1(values, first.to(values.device))]),
        ])
        keys = [f"p{q:g}" for q in self.percentiles] + ["mean", "std", "w1_prev", "w1_first"]
        return {f"{name}/{key}": value for key, value in zip(keys, stats, strict=True)}

    def _draw(self, trainer: L.Trainer) -> None:
        """A band figure per layer: its percentiles over steps, in ``figure_ylim`` if given."""
        if not self.log_figure:
            return
        keys = {q: f"p{q:g}" for q in sorted(set(self.percentiles))}
        for name, (steps, series) in layer_series(self.history, self.groups, list(keys.values())).items():
            by_q = {q: series[key] for q, key in keys.items()}

            def draw(axis: Any, steps: list[float] = steps, by_q: dict[float, list[float]] = by_q) -> None:
                draw_percentile_bands(axis, steps, by_q)
                axis.set_ylabel(BAND_Y_LABEL)
                if self.figure_ylim is not None:
                    axis.set_ylim(*self.figure_ylim)
                axis.legend(loc="best", fontsize=8)

            title = f"percentiles of the input of {name}, steps {steps[0]:g}-{steps[-1]:g}"
            add_figure(trainer, f"{self.prefix}/{name}/bands", title, draw)


def percentile_band(qs: Sequence[float]) -> tuple[float, float, float] | None:
    """``(50, lowest, highest)`` of the percentiles: the median and the outermost pair around it
    (Ioffe & Szegedy's p15/p85 by default), or None without a median or a percentile on each side."""
    lower, upper = [q for q in qs if q < 50], [q for q in qs if q > 50]
    if 50 not in qs or not lower or not upper:
        return None
    return 50.0, min(lower), max(upper)
