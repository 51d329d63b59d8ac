"""``DeadUnits``: dead rectifier units and saturated tanh/sigmoid units (the makemore lectures' plots)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from typing_extensions import override

from normzoo.callbacks.base import ProbeDiagnostic
from normzoo.callbacks.capture import SATURATING, Captured
from normzoo.callbacks.evaluate import Evaluation, ForwardFn
from normzoo.callbacks.figures import add_figure
from normzoo.callbacks.probe import sum_over_ranks
from normzoo.errors import ConfigError


def on_the_tails(kind: str, x: Tensor, threshold: float) -> Tensor:
    """Where tanh or sigmoid of ``x`` is saturated: ``|tanh(x)|`` or ``|2 sigmoid(x) - 1|`` over ``threshold``."""
    output = x.tanh() if kind == "tanh" else 2 * x.sigmoid() - 1
    return output.abs() > threshold


class DeadUnits(ProbeDiagnostic):
    """Fraction of dead rectifier units and of saturated tanh/sigmoid activations per layer.

    On a fixed probe batch (see ``ActivationDrift`` for how it is taken, which activations
    are watched, and why measuring does not change the run), every ``every_n_steps`` steps:

    - rectifier sites (ReLU, GELU, ...; any watched site that is not tanh/sigmoid): a unit
      (a feature, or a channel of a map) is dead when its input is never positive over the
      whole probe (all ranks' shards under DDP), so it passes no gradient for any of them;
    - tanh and sigmoid sites: the fraction of (example, unit) activations on the flat tails,
      ``|tanh(x)| > threshold`` or ``|2 * sigmoid(x) - 1| > threshold`` (0.97 by default, the
      makemore lectures' cut), where the local gradient is below ~6% of its peak.

    At the end of training, with a TensorBoard logger, a map of probe samples x units per
    saturating site at the last measurement (white: saturated; for maps, the fraction of
    saturated positions), as in the makemore lectures' ``plt.imshow(h.abs() > 0.99)``: a
    figure with its axes (unit index, probe sample), a colour bar, and the layer, run and
    step in its title.

    Logged metrics: ``zoo/dead_units/<layer>/dead_fraction`` (rectifiers),
    ``zoo/dead_units/<layer>/saturated_fraction`` (tanh, sigmoid).

    Args:
        every_n_steps: optimizer steps between measurements.
        threshold: saturation cut on the tanh scale, in (0, 1).
        layers: sites or module paths to watch, or ``"last"``: the last activation the forward
            computes; default every activation, one per stage above 12.
        probe_size: samples in the probe batch (per rank).
        mode: "train" or "eval" for the probe forward.
        log_image: draw the saturation map into TensorBoard at the end of training.
        forward: ``(pl_module, batch) -> outputs`` to run instead of the replayed ``training_step``.
        strict: raise on any measurement error instead of warning and stopping.

    Raises:
        ConfigError: bad settings. ``DiagnosticError`` at the first measurement: named layers
            that compute nothing, or a forward that fails.

    Example::

        trainer = Trainer(callbacks=[DeadUnits(every_n_steps=200, threshold=0.97)])
    """

    name = "dead_units"
    families = {"dead/saturated fraction": ("dead_fraction", "saturated_fraction")}  # a layer logs one

    def __init__(
        self,
        every_n_steps: int = 200,
        threshold: float = 0.97,
        layers: Sequence[str] | None = None,
        probe_size: int = 128,
        mode: str = "train",
        log_image: bool = True,
        forward: str | ForwardFn | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(every_n_steps, layers, probe_size, mode, forward=forward, strict=strict)
        if not 0 < threshold < 1:
            raise ConfigError(f"DeadUnits threshold must lie in (0, 1), got {threshold}.")
        self.threshold = threshold
        self.log_image = log_image
        self._maps: dict[str, Tensor] = {}
        self._map_step = 0

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule, captured: Captured, evaluation: Evaluation,
                step: int) -> dict[str, Tensor]:
        stats: dict[str, Tensor] = {}
        for name, inputs in captured.items():
            x = inputs.float()
            kind = captured.kinds[name]
            if kind in SATURATING:
                tails = on_the_tails(kind, x, self.threshold)
                counts = torch.stack([tails.sum().float(), torch.tensor(float(tails.numel()), device=x.device)])
                counts = sum_over_ranks(trainer, counts)
                stats[f"{name}/saturated_fraction"] = counts[0] / counts[1]
                self._maps[name] = tails.float().flatten(2).mean(-1) if tails.dim() > 2 else tails.float()
                self._map_step = step
            elif x.dim() >= 1:
                reduce_dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 1 else [0]
                active = sum_over_ranks(trainer, (x > 0).sum(dim=reduce_dims).float())
                stats[f"{name}/dead_fraction"] = (active == 0).float().mean()
        return stats

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.log_image:
            for name, saturation in self._maps.items():
                grid = saturation.reshape(len(saturation), -1).detach().float().cpu().numpy()

                def draw(axis: Any, grid: Any = grid) -> None:
                    draw_saturation_map(axis, grid, self.threshold)

                layer = self.layer(name)
                title = f"{layer}: saturated units at step {self._map_step}"
                add_figure(trainer, f"{self.prefix}/{layer}/saturation", title, draw)
        self._maps.clear()


def draw_saturation_map(axis: Any, grid: Any, threshold: float) -> None:
    """Probe samples x units, white where saturated (the makemore lectures' ``imshow(h.abs() > 0.99)``),
    with a colour bar: for maps, a unit (a channel) is the fraction of its saturated positions."""
    image = axis.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    axis.set_xlabel("unit index")
    axis.set_ylabel("probe sample")
    bar = axis.figure.colorbar(image, ax=axis)
    bar.set_label(f"saturated fraction (|output| > {threshold:g} on the tanh scale)", fontsize=8)
