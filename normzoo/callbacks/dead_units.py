"""``DeadUnits``: dead rectifier units and saturated tanh/sigmoid units (the makemore lectures' plots)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from normzoo.callbacks.base import ProbeCallback
from normzoo.callbacks.probe import sum_over_ranks
from normzoo.errors import ConfigError

PREFIX = "diagnostics/dead_units"
SATURATING = (nn.Tanh, nn.Sigmoid)


class DeadUnits(ProbeCallback):
    """Fraction of dead rectifier units and of saturated tanh/sigmoid activations per layer.

    On a fixed probe batch (see ``ActivationDrift`` for how it is taken and why measuring
    does not change the run), every ``every_n_steps`` steps:

    - rectifier layers (ReLU, GELU, ...; any watched layer that is not tanh/sigmoid): a unit
      (a feature, or a channel of a map) is dead when its input is never positive over the
      whole probe (all ranks' shards under DDP), so it passes no gradient for any of them;
    - tanh and sigmoid layers: the fraction of (example, unit) activations on the flat tails,
      ``|tanh(x)| > threshold`` or ``|2 * sigmoid(x) - 1| > threshold`` (0.97 by default, the
      makemore lectures' cut), where the local gradient is below ~6% of its peak.

    At the end of training, with a TensorBoard logger, an image of examples x units per
    saturating layer (white: saturated; for maps, the fraction of saturated positions), as
    in the makemore lectures' ``plt.imshow(h.abs() > 0.99)``.

    Logged metrics: ``diagnostics/dead_units/<layer>/dead_fraction`` (rectifiers),
    ``diagnostics/dead_units/<layer>/saturated_fraction`` (tanh, sigmoid).

    Args:
        every_n_steps: optimizer steps between measurements.
        threshold: saturation cut on the tanh scale, in (0, 1).
        layers: module names to watch; default every nonlinearity module.
        probe_size: samples in the probe batch (per rank).
        mode: "train" or "eval" for the probe forward.
        log_image: draw the saturation map into TensorBoard at the end of training.

    Raises:
        ConfigError: bad settings, unknown layer names, or no nonlinearity modules.

    Example::

        trainer = Trainer(callbacks=[DeadUnits(every_n_steps=200, threshold=0.97)])
    """

    name = "dead_units"

    def __init__(
        self,
        every_n_steps: int = 200,
        threshold: float = 0.97,
        layers: Sequence[str] | None = None,
        probe_size: int = 128,
        mode: str = "train",
        log_image: bool = True,
    ) -> None:
        super().__init__(every_n_steps, layers, probe_size, mode)
        self.threshold = threshold
        self.log_image = log_image
        self.history: dict[str, list[dict[str, float]]] = {}
        self._maps: dict[str, Tensor] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigError(f"DeadUnits threshold must lie in (0, 1), got {self.threshold}.")
        super().setup(trainer, pl_module, stage)

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, captured: dict[str, Tensor], outputs: Any, step: int
    ) -> dict[str, float]:
        stats: dict[str, Tensor] = {}
        for name, module in self.layers:
            x = captured[name].float()
            reduce_dims = [d for d in range(x.dim()) if d != 1]
            if isinstance(module, SATURATING):
                output = module(x)
                tails = (output if isinstance(module, nn.Tanh) else 2 * output - 1).abs() > self.threshold
                counts = torch.stack([tails.sum().float(), torch.tensor(float(tails.numel()), device=x.device)])
                counts = sum_over_ranks(trainer, counts)
                stats[f"{name}/saturated_fraction"] = counts[0] / counts[1]
                self._maps[name] = tails.float().flatten(2).mean(-1) if tails.dim() > 2 else tails.float()
            else:
                active = sum_over_ranks(trainer, (x > 0).sum(dim=reduce_dims).float())
                stats[f"{name}/dead_fraction"] = (active == 0).float().mean()
        values = torch.stack(list(stats.values())).tolist() if stats else []  # the one host sync
        record = dict(zip(stats, values, strict=True))
        for key, value in record.items():
            layer, stat = key.rsplit("/", 1)
            self.history.setdefault(layer, []).append({"step": float(step), stat: value})
        return {f"{PREFIX}/{key}": value for key, value in record.items()}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.log_image or trainer.global_rank != 0:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for name, saturation in self._maps.items():
                    logger.experiment.add_image(f"{PREFIX}/{name}/saturation", saturation.cpu()[None],
                                                global_step=trainer.global_step, dataformats="CHW")
        self._maps.clear()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.history = state_dict["history"]

