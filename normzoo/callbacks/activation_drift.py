"""``ActivationDrift``: internal covariate shift as distribution drift (Ioffe & Szegedy 2015, Fig 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from normzoo.callbacks.base import ProbeCallback
from normzoo.callbacks.distribution import percentiles, sorted_sample, wasserstein1
from normzoo.errors import ConfigError

PREFIX = "diagnostics/activation_drift"


class ActivationDrift(ProbeCallback):
    """Track the distribution of each nonlinearity's input on a fixed probe batch over training.

    Ioffe & Szegedy's Fig 1 shows the {15, 50, 85}th percentiles of a sigmoid's input in the
    last hidden layer drifting without BN and staying put with it. This callback measures
    that for every watched layer, every ``every_n_steps`` optimizer steps (from
    ``trainer.global_step``, so gradient accumulation is safe), on the same probe samples:
    the first ``probe_size`` training samples, kept for the whole run (and in checkpoints).

    The probe forward runs in ``mode`` ("train": batch statistics and noisy-BN noise, as the
    layers see them in training; "eval": as at inference) under ``no_grad``; BN running
    statistics, module modes and the RNG are restored afterwards, so measuring does not
    change the run. Under DDP every rank measures its own probe shard and the samples are
    gathered, so the numbers describe the union of the shards; rank zero writes.

    Logged metrics (``<layer>`` is the module path, dots as in ``named_modules``):
        ``diagnostics/activation_drift/<layer>/p<q>`` for each percentile ``q``,
        ``.../mean``, ``.../std``, ``.../w1_prev`` (1-Wasserstein distance to the previous
        measurement), ``.../w1_first`` (to the first one). At the end of training, with a
        TensorBoard logger, a figure of the percentile bands over steps (``.../bands``).

    Args:
        every_n_steps: optimizer steps between measurements (step 0 is measured too).
        percentiles: which percentiles (0..100) to log.
        layers: module names to watch; default every nonlinearity module (its input).
        probe_size: samples in the probe batch (per rank).
        mode: "train" or "eval" for the probe forward.
        max_elements: values per layer kept for statistics (a fixed strided subset beyond it).
        log_figure: draw the percentile bands into TensorBoard at the end of training.
        unit: watch one feature (dim 1: a unit of an MLP layer, a channel of conv maps) instead
            of pooling all of them: Ioffe & Szegedy plot "a typical sigmoid".

    Raises:
        ConfigError: bad settings, or (in ``setup``) unknown layer names or no nonlinearity modules.

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
    ) -> None:
        super().__init__(every_n_steps, layers, probe_size, mode)
        self.unit = unit
        self.percentiles = tuple(float(q) for q in percentiles)
        self.max_elements = max_elements
        self.log_figure = log_figure
        self.history: dict[str, list[dict[str, float]]] = {}
        self._first: dict[str, Tensor] = {}
        self._previous: dict[str, Tensor] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.max_elements < 2:
            raise ConfigError("ActivationDrift needs max_elements >= 2.")
        if not all(0 <= q <= 100 for q in self.percentiles):
            raise ConfigError(f"percentiles must lie in [0, 100], got {self.percentiles}.")
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.log_figure:
            self._log_figure(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "history": self.history,
            "first": {k: v.cpu() for k, v in self._first.items()},
            "previous": {k: v.cpu() for k, v in self._previous.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.history = state_dict["history"]
        self._first, self._previous = dict(state_dict["first"]), dict(state_dict["previous"])

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, captured: dict[str, Tensor], outputs: Any, step: int
    ) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name, _ in self.layers:
            local = sorted_sample(self._watched(name, captured[name]), self.max_elements)
            values = trainer.strategy.all_gather(local).flatten().sort().values if trainer.world_size > 1 else local
            metrics.update(self._layer_metrics(name, values, step))
        return metrics

    def _watched(self, name: str, inputs: Tensor) -> Tensor:
        """The layer's input, or only feature ``unit`` of it."""
        if self.unit is None:
            return inputs
        if inputs.dim() < 2 or not -inputs.shape[1] <= self.unit < inputs.shape[1]:
            width = inputs.shape[1] if inputs.dim() > 1 else 0
            raise ConfigError(f"ActivationDrift(unit={self.unit}): layer {name!r} has inputs of shape "
                              f"{tuple(inputs.shape)}, so unit must lie in [0, {width}).")
        return inputs[:, self.unit]

    def _layer_metrics(self, name: str, values: Tensor, step: int) -> dict[str, float]:
        first = self._first.setdefault(name, values)
        previous = self._previous.get(name, values)
        self._previous[name] = values
        stats = torch.cat([
            percentiles(values, self.percentiles),
            torch.stack([values.mean(), values.std(), wasserstein1(values, previous.to(values.device)),
                         wasserstein1(values, first.to(values.device))]),
        ]).tolist()  # the one host sync of this measurement
        keys = [f"p{q:g}" for q in self.percentiles] + ["mean", "std", "w1_prev", "w1_first"]
        record = dict(zip(keys, stats, strict=True))
        self.history.setdefault(name, []).append({"step": float(step), **record})
        return {f"{PREFIX}/{name}/{key}": value for key, value in record.items()}

    def _log_figure(self, trainer: L.Trainer) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not self.history or trainer.global_rank != 0:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for name, records in self.history.items():
            steps = [r["step"] for r in records]
            figure, axis = plt.subplots(figsize=(5, 3.2))
            keys = [f"p{q:g}" for q in self.percentiles]
            for key in keys:
                axis.plot(steps, [r[key] for r in records], label=key)
            if len(keys) >= 2:
                axis.fill_between(steps, [r[keys[0]] for r in records], [r[keys[-1]] for r in records], alpha=0.15)
            axis.set_xlabel("step")
            axis.set_title(f"input of {name}")
            axis.legend(loc="best", fontsize=8)
            figure.tight_layout()
            for logger in loggers:
                logger.experiment.add_figure(f"{PREFIX}/{name}/bands", figure, global_step=trainer.global_step)
            plt.close(figure)
