"""``SignalPropagation``: signal propagation at initialization, measured on the first training batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from typing_extensions import override

from normzoo.batches import batch_length
from normzoo.callbacks.base import Diagnostic
from normzoo.callbacks.evaluate import LossFn, ModelEvaluation
from normzoo.callbacks.figures import run_name
from normzoo.callbacks.layout import Charts
from normzoo.signal_propagation import SignalReport, draw_signal_propagation, trace_signal
from normzoo.signal_trace import ResidualSpec
from normzoo.tb_logging import tensorboard_loggers


class SignalPropagation(Diagnostic):
    """Signal propagation through the untrained model, layer by layer, as ``normzoo.signal_propagation`` measures it.

    Once per fit, on the first training batch, before the first optimizer step (the weights
    at initialization; a fit resumed past step 0 measures nothing): the user's ``training_step``
    is replayed (``normzoo.callbacks.evaluate``) in train mode, BN using the batch's own
    statistics, and its loss backpropagated into the layers' outputs (``torch.autograd.grad``:
    no ``.grad`` is written). Buffers, modes, attributes and the random generators are put back,
    so training is bit-identical with and without the callback. Per layer (every activation
    output, and the output of each residual block that is no activation's, in forward order):
    the channel moments (Brock, De & Smith 2021), the stable rank and the mean pairwise
    cosine of the batch representation (Daneshmand et al. 2020), the gradient norm (Yang
    et al. 2019); per residual block, the variance of its branch and of its skip (De & Smith
    2020). With a TensorBoard logger, a figure of all of them against depth (``.../vs_depth``).

    The values are at step 0 only, so no custom-scalars charts are added: the figure is the view.

    Logged metrics: ``zoo/signal_propagation/<layer>/{channel_mean_sq,channel_var,stable_rank,cosine,
    grad_norm}``, ``zoo/signal_propagation/<block>/{branch_var,skip_var,branch_skip_ratio}``
    (non-finite values, such as the stable rank of an all-zero layer, are left out).

    Args:
        layers: activation sites and module paths to measure (``normzoo.signal_propagation.trace_signal``);
            default every activation output and residual block output.
        residual_blocks: ``{block path or class: (branch submodule, skip submodule or None)}``;
            default the residual rule of ``normzoo.signal_trace``; ``{}``: none.
        loss: the loss to backpropagate: None (the replayed ``training_step``'s), a
            ``torch.nn.functional`` loss name, or ``(pl_module, batch) -> loss`` (see ``evaluate``).
        log_figure: draw the figure into TensorBoard.
        strict: raise on any measurement error instead of warning and stopping.

    Raises:
        ConfigError: an unknown ``loss``; at the measurement, names in ``layers`` or
            ``residual_blocks`` that the model does not have, a batch of one sample.
        DiagnosticError: the measurement failed otherwise (the replayed ``training_step`` raised).

    Example::

        trainer = Trainer(callbacks=[SignalPropagation()], logger=TensorBoardLogger("runs"))
    """

    name = "signal_propagation"

    def __init__(self, layers: Sequence[str] | None = None, residual_blocks: ResidualSpec | None = None,
                 loss: str | LossFn | None = None, log_figure: bool = True, strict: bool = False) -> None:
        super().__init__(every_n_steps=1, strict=strict)
        self.layers = list(layers) if layers is not None else None
        self.residual_blocks = residual_blocks
        self.evaluation = ModelEvaluation(type(self).__name__, loss=loss)
        self.log_figure = log_figure
        self.report: SignalReport | None = None

    @override
    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """None: one step of values makes no chart over steps."""
        return {}

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._measure(trainer, pl_module, batch, batch_idx)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step != 0 or not self.due(0):
            return
        with self.failure_policy(trainer, pl_module, 0):
            gradients = self.evaluation.unavailable_loss(pl_module) is None
            report = trace_signal(pl_module, lambda: self._loss(trainer, pl_module, batch, batch_idx),
                                  batch_length(batch), layers=self.layers, residual_blocks=self.residual_blocks,
                                  gradients=gradients)
            self.record(trainer, 0, {key: torch.tensor(value) for key, value in report.scalars().items()},
                        finite_only=True)
            self.report = report
            if self.log_figure:
                self._add_figure(trainer, report)

    def _loss(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> Any:
        """The step's loss (the replay runs the forward even under manual optimization, which has none)."""
        if self.evaluation.unavailable_loss(pl_module):
            self.evaluation.forward(trainer, pl_module, batch, batch_idx)
            return None
        return self.evaluation.loss(trainer, pl_module, batch, batch_idx)

    def _add_figure(self, trainer: L.Trainer, report: SignalReport) -> None:
        """The figure against depth, into every TensorBoard logger (rank zero), titled with the run."""
        if not trainer.is_global_zero:
            return
        for logger in tensorboard_loggers(trainer.loggers):
            title = (f"Signal propagation at initialization (step 0, train mode, batch of {report.batch_size}): "
                     f"{report.model}\nrun {run_name(logger)}")
            figure = draw_signal_propagation(report, title)
            figure.subplots_adjust(top=0.86)
            logger.experiment.add_figure(f"{self.prefix}/vs_depth", figure, global_step=0)
