"""``ProbeCallback``: the shared skeleton of callbacks that measure layers on a fixed probe batch.

Every ``every_n_steps`` optimizer steps (from ``trainer.global_step``), it runs the probe
through the model under ``no_grad`` in ``mode``, with the watched layers' inputs captured
and BN buffers, module modes and the RNG restored afterwards; the subclass turns the
captured inputs into metrics, which go to every logger at that step (rank zero writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from normzoo.callbacks.layout import Charts, chart_per_group, write_layout
from normzoo.callbacks.probe import ProbeBatch, capture_inputs, preserved_state, select_layers
from normzoo.errors import ConfigError


class ProbeCallback(L.Callback):
    """Base class; subclasses implement ``measure`` and may extend ``state_dict``.

    Args:
        every_n_steps: optimizer steps between measurements (step 0 is measured too).
        layers: module names to watch; default every nonlinearity module.
        probe_size: samples in the probe batch (per rank).
        mode: "train" (batch statistics, noise on) or "eval" for the probe forward.
    """

    name = "probe"

    def __init__(self, every_n_steps: int, layers: Sequence[str] | None, probe_size: int, mode: str) -> None:
        self.every_n_steps = every_n_steps
        self.layer_names = list(layers) if layers else None
        self.probe_size = probe_size
        self.mode = mode
        self.probe = ProbeBatch(probe_size)
        self.last_step = -1
        self.layers: list[tuple[str, nn.Module]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.every_n_steps < 1 or self.probe_size < 1:
            raise ConfigError(f"{type(self).__name__} needs every_n_steps >= 1 and probe_size >= 1.")
        if self.mode not in ("train", "eval"):
            raise ConfigError(f"{type(self).__name__} mode must be 'train' or 'eval', got {self.mode!r}.")
        self.layers = self.select(pl_module)

    def select(self, pl_module: L.LightningModule) -> list[tuple[str, nn.Module]]:
        """The layers whose inputs are captured: by default the named ones or every nonlinearity."""
        return select_layers(pl_module, self.layer_names)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_layout(trainer, pl_module, self)

    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """TensorBoard custom-scalars charts: one per watched layer."""
        return chart_per_group(self.name, [name for name, _ in self.layers])

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if not self.layers:  # nothing to watch in this model (see select)
            return
        self.probe.collect(batch)
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step != self.last_step and self.probe.ready(step):
            self.last_step = step
            self._run(trainer, pl_module, step)

    @torch.no_grad()
    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        with preserved_state(pl_module), capture_inputs(self.layers) as captured:
            pl_module.train(self.mode == "train")
            outputs = pl_module(self.probe.inputs.to(pl_module.device))
        metrics = self.measure(trainer, pl_module, captured, outputs, step)
        del captured
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, captured: dict[str, Tensor], outputs: Any, step: int
    ) -> dict[str, float]:
        """Metrics ``{"diagnostics/<name>/<layer>/<stat>": value}`` from the captured layer inputs.

        Runs under ``no_grad`` with the model's state restored afterwards; ``outputs`` is the
        probe forward's output.
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"probe": self.probe.state_dict(), "last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.probe.load_state_dict(state_dict["probe"])
        self.last_step = state_dict["last_step"]
