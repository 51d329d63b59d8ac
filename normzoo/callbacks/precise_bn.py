"""``PreciseBNGap``: validation loss and error with BN's EMA running statistics against precise ones.

Wu & Johnson 2021 ("Rethinking 'Batch' in BatchNorm", arXiv 2105.07576): BatchNorm evaluates
with running statistics that an exponential moving average (EMA) accumulates over training
batches, each computed under the weights of its own step. While the weights move fast, the EMA
lags behind them and mixes the statistics of several models. Precise BN replaces the EMA by the
true average of the per-batch mean and variance over many training batches under one fixed set
of weights. Their quantity is the validation error with EMA statistics minus the validation
error with precise statistics, over training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor
from typing_extensions import override

from normzoo.batches import batch_length, batch_targets
from normzoo.callbacks import trainer_data
from normzoo.callbacks.base import Diagnostic
from normzoo.callbacks.capture import select_per_stage
from normzoo.callbacks.evaluate import ForwardFn, LossFn, ModelEvaluation
from normzoo.callbacks.layer_names import weight_layers_before
from normzoo.callbacks.layout import Charts, family_charts
from normzoo.callbacks.probe import RngState, capture_rng, preserved_state, restore_rng, sum_over_ranks
from normzoo.callbacks.running_stats import hits, primary_output
from normzoo.errors import ConfigError
from normzoo.norms import keeps_mean_and_variance, recalibrate_bn
from normzoo.norms.moments import statistics_gap
from normzoo.norms.registry import norms_with_running_statistics

MODEL_FAMILIES: Mapping[str, tuple[str, ...]] = {
    "val_loss_ema, val_loss_precise": ("val_loss_ema", "val_loss_precise"),
    "val_loss_gap": ("val_loss_gap",),
    "val_error_ema, val_error_precise": ("val_error_ema", "val_error_precise"),
    "val_error_gap": ("val_error_gap",),
}
"""The whole model's statistics, by chart: a loss in nats and an error in fractions never share one."""

BATCH_FAMILIES: Mapping[str, tuple[str, ...]] = {"val_loss_batch": ("val_loss_batch",),
                                                 "val_error_batch": ("val_error_batch",)}
"""The train-mode evaluation's charts, with ``batch_statistics=True``."""

LAYER_FAMILIES: Mapping[str, tuple[str, ...]] = {"mean_gap, var_gap": ("mean_gap", "var_gap")}
"""Each BN layer's statistics: two relative distances."""


class PreciseBNGap(Diagnostic):
    """The validation loss and error with BN's EMA running statistics minus those with precise statistics.

    A measurement, under the current weights:

    1. evaluates the validation data in eval mode with the running statistics that training
       accumulated (the EMA);
    2. computes precise statistics with ``recalibrate_bn(estimator="batch_average")``: the
       average of each training batch's mean and unbiased variance, for every BN layer, over
       ``num_batches`` fresh training batches (200 by default, as fvcore's ``update_bn_stats``,
       capped to one epoch), with the model in its training modes, so each layer sees its input
       as training does (batch statistics before it, noise and dropout on). That is the quantity
       the EMA estimates; the two differ only by the EMA's lag and noise;
    3. evaluates the validation data again with the precise statistics;
    4. with ``batch_statistics=True``, evaluates it once more with every BN layer in train mode
       (the rest of the model in eval mode): each validation batch normalized with its own
       statistics, as training normalizes (``ghost_bn`` in chunks of its ``virtual_batch_size``),
       Wu & Johnson's "train-mode" evaluation, whose difference from the eval-mode error is the
       train-test inconsistency of small normalization batches. It needs validation batches that
       sample the data as training batches do: a loader sorted by class gives batches of one or
       two classes, whose statistics are not the population's (normzoo's own splits are shuffled);
    5. puts the EMA statistics back: afterwards the run is bit-identical to one without the
       callback (weights, every buffer including ``num_batches_tracked``, modes, attributes,
       ``requires_grad``, random generators, the training loader's shuffling and workers).

    When: by default right after each validation of the fit (not the sanity check), on the
    weights that validation evaluated, and logged at its step: the points of Wu & Johnson's
    curves, at the cadence the trainer validates (``check_val_every_n_epoch``,
    ``val_check_interval``), including the final model. ``every_n_steps=N`` measures every N
    optimizer steps instead (step 0 included), before that step's update, as the other
    diagnostics do.

    What is evaluated: the fit's first validation dataloader, every batch Lightning validates
    (``limit_val_batches``), or the first ``val_batches`` of them; each batch as Lightning's
    validation gets it (the module's batch-transfer hooks, with the trainer validating). "The
    loss" is the model's own: its ``training_step`` replayed in eval mode on the validation
    batch, or ``loss=``. The error is read from the primary output (the forward's output tensor,
    a tuple's first tensor, a dict's ``"logits"``) where it holds classification logits for the
    batch's targets (``(N, C)`` with integer labels, or a single logit with 0/1 targets). Both
    passes see the same random draws.

    Cost of a measurement: ``num_batches`` training forwards (no backward) and two (three with
    ``forward=``) forward passes over the validation batches.

    Logged metrics, under the callback's ``prefix`` (normzoo's tag root, then ``precise_bn``), each
    averaged over the validation samples of every rank:

    - ``val_loss_ema``, ``val_loss_precise``, ``val_loss_gap`` (EMA minus precise; positive when
      precise statistics do better), where the model has a loss (under manual optimization, pass ``loss=``);
    - ``val_error_ema``, ``val_error_precise``, ``val_error_gap`` (top-1 error, a fraction), for
      classifiers;
    - ``val_loss_batch``, ``val_error_batch``: the same in train mode (step 4), with ``batch_statistics``;
    - ``<layer>/mean_gap``: mean over channels of ``|ema_mean - precise_mean| / sqrt(precise_var + eps)``;
      ``<layer>/var_gap``: of ``|ema_var - precise_var| / (precise_var + eps)``; for every BN layer
      with running statistics (above 12 layers, the last one of each stage of the model).

    Under DDP every rank reads its shard of the training and validation data (the loaders'
    ``DistributedSampler``): the precise statistics average the batches of every rank (each
    rank's own batch for a layer that normalizes per rank; the union of the ranks' batches for
    a synchronized one, ``sync_batchnorm=True``), and the validation numbers are those of the
    union of the shards, as one process computes them on that union. Every rank must have as
    many training batches per epoch (as ``DistributedSampler`` gives them).

    Args:
        every_n_steps: measure every this many optimizer steps; None (default) after each validation.
        num_batches: training batches that the precise statistics average (capped to one epoch).
        val_batches: validation batches to evaluate; None for all that Lightning validates.
        eps: added to the precise variance in ``mean_gap`` and ``var_gap``.
        batch_statistics: also evaluate with each validation batch's own statistics (step 4; one more
            pass over the validation batches).
        forward: ``(pl_module, batch) -> outputs`` (or its dotted path) to run instead of the replayed
            ``training_step``, in the statistics pass and for the validation outputs.
        loss: ``(pl_module, batch) -> loss`` (or a ``torch.nn.functional`` name such as
            ``"cross_entropy"``) for the validation loss, instead of the ``training_step``'s.
        strict: raise on any measurement error instead of warning and stopping.

    Raises:
        ConfigError: a setting that cannot work (one message naming it), at construction.
        DiagnosticError: the first measurement fails (the model cannot be evaluated on a validation
            batch: pass ``loss=``/``forward=``). A model without BN layers with running statistics,
            or a fit without validation data, gets a warning and no measurements, so one callback
            list serves BN and no-BN runs.

    Example::

        trainer = Trainer(callbacks=[PreciseBNGap()], check_val_every_n_epoch=1)
        trainer.fit(model, datamodule=data)  # <prefix>/val_error_gap at every validation
    """

    name = "precise_bn"
    families: ClassVar[Mapping[str, tuple[str, ...]]] = {**MODEL_FAMILIES, **BATCH_FAMILIES, **LAYER_FAMILIES}

    def __init__(
        self,
        every_n_steps: int | None = None,
        num_batches: int = 200,
        val_batches: int | None = None,
        eps: float = 1e-5,
        forward: str | ForwardFn | None = None,
        loss: str | LossFn | None = None,
        batch_statistics: bool = False,
        strict: bool = False,
    ) -> None:
        for option, value, allow_none in (("every_n_steps", every_n_steps, True), ("num_batches", num_batches, False),
                                          ("val_batches", val_batches, True)):
            if not (value is None and allow_none) and (type(value) is not int or value < 1):
                none = " or None" if allow_none else ""
                raise ConfigError(f"PreciseBNGap needs {option} to be a positive number{none}, got {value!r}.")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ConfigError(f"PreciseBNGap needs eps >= 0, got {eps!r}.")
        super().__init__(every_n_steps if every_n_steps is not None else 1, strict)
        self.every_n_steps: int | None = every_n_steps  # type: ignore[assignment]
        self.num_batches = num_batches
        self.val_batches = val_batches
        self.eps = float(eps)
        self.batch_statistics = batch_statistics
        self.evaluation = ModelEvaluation(type(self).__name__, loss=loss, forward=forward)
        self.layers: list[str] = []
        self.watched: list[str] = []
        self.pending: int | None = None

    @property
    @override
    def state_key(self) -> str:
        """Two instances with other settings (a step cadence and the validation one) may share a trainer."""
        return self._generate_state_key(every_n_steps=self.every_n_steps, num_batches=self.num_batches,
                                        val_batches=self.val_batches)

    @override
    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """The whole model's loss, error and their gaps apart; per BN layer, its two distances."""
        model = {**MODEL_FAMILIES, **(BATCH_FAMILIES if self.batch_statistics else {})}
        return {**family_charts(self.name, [""], model), **family_charts(self.name, self.groups,
                                                                                  LAYER_FAMILIES)}

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.layers = [name for name, module in pl_module.named_modules() if keeps_mean_and_variance(module)]
        self.watched = select_per_stage(self.layers)
        self.groups = [self.layer(name) for name in self.watched]
        if stage != "fit":
            return
        if not self.layers:
            self.stop(trainer, f"{type(pl_module).__name__} has no BatchNorm layer with running statistics (norms "
                               f"with them: {', '.join(norms_with_running_statistics())}), so there are no EMA "
                               "statistics to compare with precise ones")
        elif trainer.limit_val_batches == 0:
            self.stop(trainer, f"{self._no_validation(pl_module)} (limit_val_batches=0)")

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch_start(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated(trainer)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._measure_pending(trainer, pl_module)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_end(trainer, pl_module)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pending": self.pending}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.pending = state_dict.get("pending")

    def _no_validation(self, pl_module: L.LightningModule) -> str:
        return (f"{type(pl_module).__name__}'s fit has no validation data to compare EMA and precise statistics on: "
                "give it val_dataloaders (or a datamodule's val_dataloader), a validation_step and "
                "limit_val_batches > 0")

    def _batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps is None:
            self._measure_pending(trainer, pl_module)
        elif self.due(trainer.global_step):
            self._measure(trainer, pl_module, trainer.global_step)

    def _validated(self, trainer: L.Trainer) -> None:
        """Note a validation of the fit: it is measured as soon as the model is back in its training modes."""
        if self.every_n_steps is None and not trainer.sanity_checking and trainer.state.fn == "fit" \
                and self.stopped is None:
            self.pending = trainer.global_step

    def _train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._measure_pending(trainer, pl_module)
        if not self.history and self.stopped is None:
            self.stop(trainer, "no validation ran in this fit, and PreciseBNGap measures after each one (unless "
                               "every_n_steps is given); a fit validates with val_dataloaders (or a datamodule's "
                               "val_dataloader), a validation_step and limit_val_batches > 0")

    def _measure_pending(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step, self.pending = self.pending, None
        if step is not None and step == trainer.global_step and step != self.last_step and self.stopped is None:
            self._measure(trainer, pl_module, step)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        with self.failure_policy(trainer, pl_module, step):
            if trainer_data.validation_loader(trainer) is None:
                self.stop(trainer, f"{self._no_validation(pl_module)} (none was loaded at step {step})")
                return
            with torch.no_grad(), preserved_state(pl_module):
                stats = self._compare(trainer, pl_module)
            self.record(trainer, step, stats)

    def _compare(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Tensor]:
        """Validate with the EMA statistics, recalibrate to precise ones, validate again (the state is the caller's)."""
        rng = capture_rng()  # both validation passes draw the same random numbers
        modules = dict(pl_module.named_modules())
        ema = {name: (modules[name].running_mean.detach().clone(), modules[name].running_var.detach().clone())
               for name in self.watched}
        with weight_layers_before(pl_module, self.watched) as weight_of:
            with_ema = self._validate(trainer, pl_module, rng)
        if not self.layer_of:
            self.name_layers(trainer, pl_module, {name: weight_of.get(name) for name in self.watched})
        limit = trainer_data.batch_limit(self.num_batches, trainer.num_training_batches)
        with trainer_data.training_batches(trainer, limit) as batches:
            recalibrate_bn(pl_module, batches, estimator="batch_average",
                           forward=lambda item: self.evaluation.forward(trainer, pl_module, item[1], item[0]),
                           reduce=lambda tensor: sum_over_ranks(trainer, tensor))
        precise = self._validate(trainer, pl_module, rng)
        stats = _validation_gaps(with_ema, precise)
        if self.batch_statistics:
            batch = self._validate(trainer, pl_module, rng, train_mode=[modules[name] for name in self.layers])
            stats.update({f"{key}_batch": value for key, value in _averages(batch).items()})
        for name, (mean, var) in ema.items():
            layer = modules[name]
            stats[f"{name}/mean_gap"], stats[f"{name}/var_gap"] = statistics_gap(
                mean, var, layer.running_mean, layer.running_var, self.eps)
        return stats

    def _validate(self, trainer: L.Trainer, pl_module: L.LightningModule, rng: RngState,
                  train_mode: Sequence[torch.nn.Module] = ()) -> Tensor:
        """Sums over the validation batches of every rank, in eval mode but for the ``train_mode`` modules:
        ``_SUMS`` as a float64 tensor (running statistics a train-mode BN updates are put back by the caller)."""
        modes = [(module, module.training) for module in pl_module.modules()]
        totals = torch.zeros(len(_SUMS), dtype=torch.float64, device=pl_module.device)
        restore_rng(rng)
        pl_module.eval()
        for module in train_mode:
            module.train()
        try:
            limit = trainer_data.batch_limit(self.val_batches, trainer.num_val_batches[0])
            with trainer_data.validation_batches(trainer, limit) as batches:
                for index, batch in batches:
                    totals += self._score(trainer, pl_module, index, batch)
        finally:
            for module, training in modes:
                module.training = training
        return sum_over_ranks(trainer, totals)

    def _score(self, trainer: L.Trainer, pl_module: L.LightningModule, index: int, batch: Any) -> Tensor:
        """One validation batch's ``_SUMS``: the loss times the samples, the correct predictions, the samples."""
        run = self.evaluation.forward(trainer, pl_module, batch, index)
        loss = run.loss
        if self.evaluation.loss_fn is not None or self.evaluation.forward_fn is not None:
            loss = self.evaluation.loss(trainer, pl_module, batch, index)
        device = pl_module.device
        zero = torch.zeros((), dtype=torch.float64, device=device)
        samples = zero + batch_length(batch)
        scored = [zero, zero, zero, zero, samples]
        if loss is not None and loss.numel() == 1:
            scored[0], scored[1] = loss.detach().reshape(()).to(device, torch.float64) * samples, samples
        output, targets = primary_output(run.outputs), batch_targets(batch)
        correct = hits(output, targets) if output is not None and targets is not None else None
        if correct is not None:
            scored[2], scored[3] = correct.to(device, torch.float64), samples
        return torch.stack(scored)


_SUMS = ("loss_sum", "loss_samples", "correct", "scored_samples", "samples")
"""What ``PreciseBNGap._validate`` adds up: the loss and the hits count only where every batch had them."""


def _averages(sums: Tensor) -> dict[str, Tensor]:
    """``val_loss`` and ``val_error`` of one pass's ``_SUMS``, each where every batch had it."""
    loss_sum, loss_samples, correct, scored, samples = range(len(_SUMS))
    found: dict[str, Tensor] = {}
    if sums[samples] > 0 and sums[loss_samples] == sums[samples]:
        found["val_loss"] = sums[loss_sum] / sums[samples]
    if sums[samples] > 0 and sums[scored] == sums[samples]:
        found["val_error"] = 1 - sums[correct] / sums[samples]
    return found


def _validation_gaps(with_ema: Tensor, precise: Tensor) -> dict[str, Tensor]:
    """The logged validation statistics from the EMA and the precise passes' ``_SUMS``."""
    ema, exact = _averages(with_ema), _averages(precise)
    stats: dict[str, Tensor] = {}
    for name in ("val_loss", "val_error"):
        if name in ema and name in exact:
            stats.update({f"{name}_ema": ema[name], f"{name}_precise": exact[name],
                          f"{name}_gap": ema[name] - exact[name]})
    return stats

