"""``Diagnostic``: what every diagnostics callback shares. ``ProbeDiagnostic``: those that probe a fixed
batch; ``LossDiagnostic``: those that evaluate the training loss around an optimizer step.

A new diagnostic subclasses one of them and implements its measurement. The base gives it:

- a name and its tag prefix ``zoo/<name>`` (``normzoo.tags``), a cadence (``every_n_steps`` optimizer
  steps, from ``trainer.global_step``, so gradient accumulation is safe; step 0 included);
- layer names: a measured part (an activation, a norm, a weight) is tagged with the name of its
  layer, the same in every callback (``name_layers``, ``normzoo.callbacks.layer_names``);
- ``record``: the one host sync of a measurement, its history (one record per measured step,
  kept in checkpoints, so a resumed run continues its curves) and the logging;
- the TensorBoard custom-scalars layout: a chart per (layer, statistic family), from ``families``
  (``normzoo.callbacks.layout``; a diagnostic with other charts overrides ``layout_charts``);
- the failure policy. A problem found at setup or at the first measurement is one
  ``DiagnosticError`` naming the callback, the module and the option that fixes it, before
  hours of training. After a successful measurement, a diagnostic never ends the user's run:
  it warns once, with the cause, and measures nothing more (``strict=True`` raises instead).
  The model's state is restored either way.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor
from typing_extensions import override

from normzoo.callbacks.capture import (
    ACTIVATION_MODULES,
    Captured,
    capture,
    resolve_layers,
    select_per_stage,
    site_root,
)
from normzoo.callbacks.evaluate import Evaluation, ForwardFn, LossFn, ModelEvaluation
from normzoo.callbacks.layer_names import layer_names
from normzoo.callbacks.layout import Charts, chart_per_group, family_charts, write_layout
from normzoo.callbacks.objective import MicroBatch, StepObjective
from normzoo.callbacks.probe import (
    ProbeBatch,
    RngState,
    capture_rng,
    model_tensors,
    preserved_state,
    restore_rng,
    snapshot,
    swapped_in,
)
from normzoo.errors import ConfigError, DiagnosticError, NormZooError
from normzoo.tags import tag


class Diagnostic(L.Callback):
    """Base class of normzoo's diagnostics callbacks (see the module docstring).

    Args:
        every_n_steps: optimizer steps between measurements (step 0 is measured too).
        strict: raise on any measurement error instead of warning and stopping.

    Raises:
        ConfigError: ``every_n_steps`` < 1.
    """

    name: ClassVar[str] = "diagnostic"
    families: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """Family title -> the statistics of a layer that share a scale, drawn in one chart per layer; with none,
    one chart per layer holds all its statistics."""

    def __init__(self, every_n_steps: int, strict: bool = False) -> None:
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ConfigError(f"{type(self).__name__} needs every_n_steps >= 1, got {every_n_steps!r}.")
        self.every_n_steps = every_n_steps
        self.strict = strict
        self.history: list[dict[str, float]] = []
        self.last_step = -1
        self.stopped: str | None = None
        self.groups: list[str] = []
        self.layer_of: dict[str, str] = {}

    @property
    def prefix(self) -> str:
        return tag(self.name)

    def due(self, step: int) -> bool:
        """Whether ``step`` is one to measure (and was not measured yet, and measuring has not stopped)."""
        return self.stopped is None and step % self.every_n_steps == 0 and step != self.last_step

    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """TensorBoard custom-scalars charts: one per (family, measured layer) (``self.groups``)."""
        if not self.families:
            return chart_per_group(self.name, self.groups)
        return family_charts(self.name, self.groups, self.families)

    def layer(self, part: str) -> str:
        """The layer name a measured part is tagged with (the part itself until ``name_layers`` named it)."""
        return self.layer_of.get(part, part)

    def name_layers(self, trainer: L.Trainer, pl_module: L.LightningModule,
                    *parts: Mapping[str, str | None]) -> None:
        """Name the layers of the measured parts, and make them the chart groups.

        Each mapping holds parts whose statistics share names (part -> its weight layer, or None),
        so that two of them never get one name (``normzoo.callbacks.layer_names.layer_names``).
        """
        self.layer_of = {}
        for family in parts:
            self.layer_of.update(layer_names(pl_module, family))
        groups = [self.layer(part) for family in parts for part in family]
        self.set_groups(trainer, pl_module, list(dict.fromkeys(groups)))

    def set_groups(self, trainer: L.Trainer, pl_module: L.LightningModule, groups: Sequence[str]) -> None:
        """Name the measured layers; the layout is written again when they change."""
        if list(groups) != self.groups:
            self.groups = list(groups)
            write_layout(trainer, pl_module)

    def record(self, trainer: L.Trainer, step: int, stats: dict[str, Tensor],
               finite_only: bool = False) -> dict[str, float]:
        """Turn one measurement into numbers (its one host sync), keep it in the history and log it.

        ``finite_only`` leaves out values that are infinite or NaN (a logarithm of zero).
        """
        values = torch.stack([v.detach().reshape(()).to(torch.float64) for v in stats.values()]).tolist() \
            if stats else []
        record = {self._layer_key(key): value for key, value in zip(stats, values, strict=True)
                  if not finite_only or math.isfinite(value)}
        self.history.append({"step": float(step), **record})
        self.last_step = step
        metrics = {f"{self.prefix}/{key}": value for key, value in record.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        return record

    def _layer_key(self, key: str) -> str:
        """``"<part>/<stat>"`` with the part replaced by its layer's name."""
        part, separator, stat = key.partition("/")
        return f"{self.layer(part)}/{stat}" if separator else key

    @contextmanager
    def failure_policy(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> Iterator[None]:
        """Apply the failure policy to the measurement inside the block (see the module docstring)."""
        try:
            yield
        except Exception as error:
            if self.strict or not self.history:
                if isinstance(error, NormZooError):
                    raise
                raise DiagnosticError(
                    f"{type(self).__name__} failed to measure {type(pl_module).__name__} at step {step}: "
                    f"{type(error).__name__}: {error}. Choose other layers with layers=[...], or remove the callback."
                ) from error
            cause = str(error) if isinstance(error, NormZooError) else f"{type(error).__name__}: {error}"
            self.stop(trainer, f"measuring at step {step} failed: {cause}")

    def stop(self, trainer: L.Trainer | None, reason: str) -> None:
        """Measure nothing more in this run, and say why once (rank zero)."""
        if self.stopped is None:
            self.stopped = reason
            if trainer is None or trainer.is_global_zero:
                warnings.warn(f"{type(self).__name__} stops measuring: {reason.rstrip('.')}. Training goes on; "
                              "pass strict=True to raise instead.", UserWarning, stacklevel=3)

    def forget(self) -> None:
        """Drop whatever a measurement in progress holds (on teardown and on exceptions)."""

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_layout_once(trainer, pl_module)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.forget()

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.forget()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_step": self.last_step, "groups": self.groups,
                "layer_of": self.layer_of}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history, self.last_step = state_dict["history"], state_dict["last_step"]
        self.groups = state_dict.get("groups", [])
        self.layer_of = state_dict.get("layer_of", {})

    def _write_layout_once(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        diagnostics = [callback for callback in trainer.callbacks if isinstance(callback, Diagnostic)]
        if diagnostics and diagnostics[0] is self:  # one write for all of them
            write_layout(trainer, pl_module)


class ProbeDiagnostic(Diagnostic):
    """A diagnostic measured on a fixed probe batch: the first ``probe_size`` training samples.

    Every ``every_n_steps`` optimizer steps, before that step's update, the probe goes
    through the model (the replayed ``training_step``, or ``forward=``) under ``no_grad``,
    with what the model computes captured (``normzoo.callbacks.capture``); the model's state
    is restored afterwards (``preserved_state``), so measuring does not change the run.

    Step 0 is the untrained network, whatever the batch size: when the first batch holds
    fewer samples than the probe, the untrained weights and buffers are kept aside until
    the probe is full (or the first epoch, or training, ends), step 0 is measured on them
    then, and the copy is dropped; steps due in between are skipped.

    Args:
        every_n_steps: optimizer steps between measurements.
        layers: names to watch: module paths, activation sites, or ``"last"``, the last activation
            site (see ``capture``); default ``default_sites`` of the model.
        probe_size: samples in the probe batch (per rank).
        mode: "train" (the modes training uses: batch statistics, noise on) or "eval".
        forward: ``(pl_module, batch) -> outputs`` (or its dotted path) to run instead of
            the replayed ``training_step``.
        strict: raise on any measurement error instead of warning and stopping.
    """

    def __init__(self, every_n_steps: int, layers: Sequence[str] | None, probe_size: int, mode: str,
                 forward: str | ForwardFn | None = None, loss: str | LossFn | None = None,
                 strict: bool = False) -> None:
        super().__init__(every_n_steps, strict)
        if not isinstance(probe_size, int) or probe_size < 1:
            raise ConfigError(f"{type(self).__name__} needs probe_size >= 1, got {probe_size!r}.")
        if mode not in ("train", "eval"):
            raise ConfigError(f"{type(self).__name__} mode must be 'train' or 'eval', got {mode!r}.")
        self.layer_names = list(layers) if layers else None
        self.probe_size = probe_size
        self.mode = mode
        self.evaluation = ModelEvaluation(type(self).__name__, loss=loss, forward=forward)
        self.probe = ProbeBatch(probe_size)
        self.sites: list[str] | None = None
        self.hooked: list[str] = []
        self._initial: list[Tensor] | None = None
        self._rng: RngState | None = None

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule, captured: Captured, evaluation: Evaluation,
                step: int) -> dict[str, Tensor]:
        """Statistics ``{"<layer>/<stat>": tensor}`` of one probe forward (under ``no_grad``).

        ``captured`` maps each watched site to its input; ``evaluation`` holds the forward's
        outputs and loss.
        """
        raise NotImplementedError

    def nothing_to_watch(self, pl_module: L.LightningModule) -> str:
        """Why nothing is measured when the default selection finds no site."""
        return (f"{type(pl_module).__name__} computed no activation function on the probe batch; "
                "name the layers to watch with layers=[...]")

    def captures_activations(self) -> bool:
        """Whether activation sites are watched (else only ``hooked`` module inputs)."""
        return True

    def default_sites(self, trainer: L.Trainer, pl_module: L.LightningModule, found: Captured) -> list[str]:
        """The sites watched by default: every activation, one per stage above 12 (``select_per_stage``)."""
        return select_per_stage(list(found.kinds))

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        modules = dict(pl_module.named_modules())
        self.hooked = [name for name in self.layer_names or []
                       if name in modules and not isinstance(modules[name], ACTIVATION_MODULES)]

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._probe_step(trainer, pl_module, batch)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seal(trainer, pl_module)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seal(trainer, pl_module)

    @override
    def state_dict(self) -> dict[str, Any]:
        initial = None if self._initial is None else [t.cpu() for t in self._initial]
        return {**super().state_dict(), "probe": self.probe.state_dict(), "initial": initial}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.probe.load_state_dict(state_dict["probe"])
        self._initial = state_dict.get("initial")

    def forget(self) -> None:
        self._initial = None

    def _probe_step(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        if self.stopped is not None:
            return
        step = trainer.global_step
        self.probe.collect(batch)
        if step == 0 and self.last_step < 0 and not self.probe.full and self._initial is None:
            self._initial = snapshot(model_tensors(pl_module))  # the untrained network, for step 0
        self._measure_initial(trainer, pl_module)
        if self.probe.full and self.due(step):
            self._measure(trainer, pl_module, step)

    def _seal(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.probe.seal()
        self._measure_initial(trainer, pl_module)

    def _measure_initial(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._initial is None or not self.probe.full:
            return
        initial, self._initial = self._initial, None
        device = next(iter(model_tensors(pl_module)), torch.empty(0)).device
        with swapped_in(pl_module, [t.to(device) for t in initial]):
            self._measure(trainer, pl_module, 0)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        with self.failure_policy(trainer, pl_module, step):
            with torch.no_grad(), preserved_state(pl_module):
                if self.mode == "eval":
                    pl_module.eval()
                elif not pl_module.training:
                    pl_module.train()
                self._rng = capture_rng()  # every pass of this measurement draws the same random numbers
                if self.sites is None:
                    self._choose_sites(trainer, pl_module)
                if not self.sites and not self.hooked:
                    return
                with capture(pl_module, self.sites, self.hooked, self.captures_activations()) as captured:
                    evaluation = self.probe_forward(trainer, pl_module)
                if not self.layer_of:
                    parts = [*self.sites, *self.hooked]
                    self.name_layers(trainer, pl_module, {part: captured.weight_of.get(part) for part in parts})
                stats = self.measure(trainer, pl_module, captured, evaluation, step)
            self.record(trainer, step, stats)

    def probe_forward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Evaluation:
        """The probe through the model, with the random draws of this measurement's first pass."""
        restore_rng(self._rng)
        return self.evaluation.forward(trainer, pl_module, self.probe.batch, 0)

    def probe_loss(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Tensor | None:
        """The probe's loss (see ``ModelEvaluation.loss``), with the same random draws as ``probe_forward``."""
        restore_rng(self._rng)
        return self.evaluation.loss(trainer, pl_module, self.probe.batch, 0)

    def _choose_sites(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Find every site with one forward (keeping no tensors), then pick the named or default ones."""
        with capture(pl_module, [], self.hooked, self.captures_activations()) as found:
            self.probe_forward(trainer, pl_module)
        if self.layer_names:
            names = resolve_layers(self.layer_names, found.kinds)
            sites = [site for site in found.kinds if site in names or site_root(site) in names]
            missing = [name for name in names if not any(site_root(s) == name or s == name for s in sites)]
            if missing:
                raise DiagnosticError(
                    f"{type(self).__name__}: {', '.join(map(repr, missing))} named in layers= computed nothing in "
                    f"{type(pl_module).__name__}'s forward. Sites it computes: {', '.join(list(found.kinds)[:16])}"
                    f"{', ...' if len(found.kinds) > 16 else ''}; any module path works too."
                )
        else:
            sites = self.default_sites(trainer, pl_module, found)
            if not sites:
                self.stop(trainer, self.nothing_to_watch(pl_module))
        self.sites = sites


class LossDiagnostic(Diagnostic):
    """A diagnostic of the training loss around an optimizer step (``GradientICS``, ``LossLandscape``).

    On a due step it keeps every micro-batch of the step (``accumulate_grad_batches``) with
    the RNG state its forward starts from; ``objective`` is then the step's loss as Lightning
    computes it, at whatever weights the model holds (``StepObjective``). The loss is the
    replayed ``training_step``'s, or ``loss=``. Under manual optimization a replay has no
    single loss: without ``loss=`` the diagnostic says so once, at fit start, and stays off;
    with ``loss=`` it measures a module with one optimizer and refuses several.

    Args:
        every_n_steps: optimizer steps between measurements (step 0 is measured too).
        loss: see ``normzoo.callbacks.evaluate.resolve_loss``; None for the ``training_step`` loss.
        strict: raise on any measurement error instead of warning and stopping.
    """

    def __init__(self, every_n_steps: int, loss: str | LossFn | None = None, strict: bool = False) -> None:
        super().__init__(every_n_steps, strict)
        self.loss = loss
        self.evaluation = ModelEvaluation(type(self).__name__, loss=loss)
        self.micro_batches: list[MicroBatch] = []

    def objective(self, trainer: L.Trainer, pl_module: L.LightningModule) -> StepObjective:
        """The measured step's loss as a function of the weights the model holds when it is called."""
        return StepObjective(trainer, pl_module, self.micro_batches, self.evaluation)

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        reason = self.evaluation.unavailable_loss(pl_module)
        if reason:
            self.stop(trainer, reason)
        elif not pl_module.automatic_optimization and len(trainer.optimizers) > 1:
            raise DiagnosticError(
                f"{type(self).__name__} measures one loss along one optimizer's step, but {type(pl_module).__name__} "
                f"steps {len(trainer.optimizers)} optimizers under manual optimization. Measure a model with one "
                "optimizer, or remove the callback."
            )

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self.due(trainer.global_step):
            self.micro_batches.append(MicroBatch(batch, idx, capture_rng()))  # replayed with the same draws

    def forget(self) -> None:
        self.micro_batches = []
