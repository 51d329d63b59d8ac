"""``Sharpness``: the top Hessian eigenvalue against 2/lr (Cohen et al. 2021), the trace, the spherical sharpness."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch import Tensor
from typing_extensions import override

from normzoo.batches import batch_to
from normzoo.callbacks.base import LossDiagnostic
from normzoo.callbacks.capture import select_per_stage
from normzoo.callbacks.evaluate import LossFn
from normzoo.callbacks.layer_names import own_weight_layer
from normzoo.callbacks.layout import Charts, family_charts
from normzoo.callbacks.objective import MicroBatch, StepObjective
from normzoo.callbacks.probe import RngState, model_tensors, preserved_state, snapshot, sum_over_ranks, swapped_in
from normzoo.curvature import HessianOperator, hutchinson_trace, top_eigenvalue, twice_differentiable_attention
from normzoo.errors import ConfigError, DiagnosticError
from normzoo.norms.norm_fed import SCALE_INVARIANCE_TOL, NormFed, feeding_norms, scale_invariance_error


class Sharpness(LossDiagnostic):
    """The curvature of the training loss: sharpness against the edge of stability, trace, spherical sharpness.

    Cohen et al. (2021): under gradient descent with step size ``lr`` the sharpness (the largest
    eigenvalue of the training loss's Hessian) first rises, then hovers just above ``2 / lr``, the
    edge of stability, while the loss keeps falling. Every ``every_n_steps`` optimizer steps (from
    ``trainer.global_step``), just before the optimizer steps, at the weights the step's gradient
    was taken at, this callback logs:

    - ``top_eigenvalue``: the largest eigenvalue of the Hessian of the loss with respect to all
      parameters of the optimizer that require gradients, by Lanczos (``normzoo.curvature``): at
      most ``iterations`` Hessian-vector products, stopping once the residual bound proves it to
      ``tol`` relative. Ritz values never exceed the true value, so an unconverged one errs low;
    - ``two_over_lr``: ``2 / lr`` of the optimizer's first parameter group, the edge of stability
      of plain gradient descent (with heavy-ball momentum ``beta`` it is ``(2 + 2 beta) / lr``; for
      Adam it does not apply), drawn in the same chart;
    - ``trace``, ``trace_stderr``: the Hessian's trace by Hutchinson's estimator with
      ``trace_probes`` Rademacher probes, and its standard error;
    - ``loss``: the loss these are the curvature of;
    - per scale-invariant layer (a layer whose output goes straight into a norm that divides by
      statistics of its input: BN in training, LN, GN, RMS; ``normzoo.norms.norm_fed``; checked on
      the measurement's own forward pass each time): with ``theta`` the layer's own trainable
      parameters (weight and bias) as one vector, ``H_theta`` the Hessian restricted to them (the
      other parameters held fixed), ``top_eigenvalue`` (of ``H_theta``), ``squared_norm``
      (``||theta||^2``) and ``spherical_sharpness = lambda_max(H_theta) * ||theta||^2``. The loss
      does not change when ``theta`` is scaled by ``a``, so ``H_theta`` scales by ``1 / a^2``: the
      product is the scale-free sharpness Lyu, Li & Arora (2022) show falls at the edge of stability
      with weight decay.

    What is measured: the Hessian of the raw loss; the optimizer's update plays no part (its
    learning rate enters only ``two_over_lr``). The loss is that of a fixed training subset, the first ``num_batches``
    training batches of the run, kept as the loader made them and each replayed as its own
    ``training_step`` (the model's own loss, or ``loss=``) and averaged as Lightning averages
    accumulated batches: the same batch partition as training, so BN normalizes over the same
    batches, in the model's training modes (BN on batch statistics) and precision; the random draws
    of the replay (noisy-BN noise, dropout) are fixed, seeded by ``seed``, so every measurement of
    a run differentiates the same function of the weights. The subset is kept in checkpoints.
    Under DDP each rank keeps its own batches and the Hessian-vector products are averaged over
    ranks (the Hessian of the rank-averaged loss). Step 0 is the untrained network: when the first
    step holds fewer batches than ``num_batches``, its weights are kept aside and measured once the
    subset is complete (steps due in between are skipped).

    The run is unchanged: ``.grad``, the optimizer and its state are never touched, the weights are
    only swapped for step 0's copy and back (exactly), and BN buffers, module attributes and the RNG
    are restored. Cost per measurement: one forward and backward with ``create_graph`` on the subset,
    then Hessian-vector products, each one double backward through that graph (1 to 3.5 training
    steps each on the subset): up to ``iterations`` for the top eigenvalue (Lanczos reaches 1e-3 in
    12 to 16 on the Ioffe MLP and ResNet-20), ``trace_probes`` for the trace and up to
    ``iterations`` per scale-invariant layer (at most 12 layers by default). That is about 80
    training steps for the Ioffe MLP with BN and for ResNet-20 (measured on a CPU), 4% of training
    at the default cadence. Memory: the subset's activations and their double-backward graph, plus
    ``iterations`` vectors the size of the parameters (the Lanczos basis).

    Logged metrics: ``zoo/sharpness/{top_eigenvalue,two_over_lr,trace,trace_stderr,loss}`` and
    ``zoo/sharpness/<layer>/{top_eigenvalue,squared_norm,spherical_sharpness}``.

    Args:
        every_n_steps: optimizer steps between measurements (step 0 is measured too).
        num_batches: training batches in the fixed subset.
        iterations: most Lanczos iterations (Hessian-vector products) per eigenvalue.
        tol: relative accuracy at which Lanczos stops early.
        trace_probes: Rademacher probes of the trace (0: no trace).
        spherical: measure the scale-invariant layers.
        layers: module paths of the scale-invariant layers to measure (each must own trainable
            parameters); default (None or empty) every one found, one per stage above 12.
        seed: seeds the Lanczos start vectors, the trace probes and the replay's random draws.
        loss: the objective; None for the ``training_step``'s own loss (see ``GradientICS``).
        strict: raise on any measurement error instead of warning and stopping.

    Raises:
        ConfigError: a count below its minimum, ``tol`` outside (0, 1), an unknown loss, ``layers``
            with ``spherical=False``, or a named layer that owns no trainable parameter.
        DiagnosticError: at the first measurement, a named layer that is not scale-invariant.

    Example::

        trainer = Trainer(callbacks=[Sharpness(every_n_steps=100, num_batches=4)])
    """

    name = "sharpness"
    families = {"sharpness": ("top_eigenvalue",), "spherical sharpness": ("spherical_sharpness",),
                "squared norm": ("squared_norm",)}
    model_families: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "sharpness and the edge of stability 2/lr": ("top_eigenvalue", "two_over_lr"),
        "Hessian trace": ("trace", "trace_stderr"),
        "loss": ("loss",),
    }
    """Charts of the statistics of the whole model (``families``: those of each scale-invariant layer)."""

    def __init__(
        self,
        every_n_steps: int = 2000,
        num_batches: int = 1,
        iterations: int = 20,
        tol: float = 1e-3,
        trace_probes: int = 10,
        spherical: bool = True,
        layers: Sequence[str] | None = None,
        seed: int = 0,
        loss: str | LossFn | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(every_n_steps, loss, strict)
        for option, value, least in (("num_batches", num_batches, 1), ("iterations", iterations, 1),
                                     ("trace_probes", trace_probes, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"Sharpness needs {option} >= {least} (an integer), got {value!r}.")
        if not isinstance(tol, (int, float)) or not 0 < tol < 1:
            raise ConfigError(f"Sharpness needs 0 < tol < 1 (the relative accuracy of Lanczos), got {tol!r}.")
        if not isinstance(seed, int):
            raise ConfigError(f"Sharpness seed must be an integer, got {seed!r}.")
        if layers and not spherical:
            raise ConfigError("Sharpness layers= names the layers of the spherical sharpness; with spherical=False "
                              "nothing measures them. Drop layers=, or pass spherical=True.")
        self.num_batches, self.iterations, self.tol = num_batches, iterations, float(tol)
        self.trace_probes, self.spherical, self.seed = trace_probes, spherical, seed
        self.layer_names = list(layers) if layers else None
        self.subset: list[tuple[Any, int]] = []
        self.sealed = False
        self._initial: list[Tensor] | None = None
        self._initial_lr = math.nan

    @override
    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """Sharpness with 2/lr in one chart, the trace, the loss; then each scale-invariant layer's families."""
        return {**family_charts(self.name, [""], self.model_families), **super().layout_charts(pl_module)}

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        modules = dict(pl_module.named_modules())
        for name in self.layer_names or []:
            if name not in modules or not any(p.requires_grad for p in modules[name].parameters(recurse=False)):
                owners = [n for n, m in modules.items() if n and any(p.requires_grad for p in m.parameters(False))]
                raise ConfigError(
                    f"Sharpness layer {name!r} is not a module owning trainable parameters in "
                    f"{type(pl_module).__name__}. Such modules: {', '.join(owners[:12])}{', ...' * (len(owners) > 12)}"
                )

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._collect(trainer, pl_module, batch, idx)

    @override
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self._step(trainer, pl_module, optimizer)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seal(trainer, pl_module)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seal(trainer, pl_module)

    @override
    def state_dict(self) -> dict[str, Any]:
        initial = None if self._initial is None else [t.cpu() for t in self._initial]
        subset = [(batch_to(batch, "cpu"), idx) for batch, idx in self.subset]
        return {**super().state_dict(), "subset": subset, "sealed": self.sealed, "initial": initial,
                "initial_lr": self._initial_lr}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.subset = [(batch, idx) for batch, idx in state_dict.get("subset", [])]
        self.sealed = state_dict.get("sealed", False)
        self._initial, self._initial_lr = state_dict.get("initial"), state_dict.get("initial_lr", math.nan)

    def forget(self) -> None:
        super().forget()
        self._initial = None

    @property
    def full(self) -> bool:
        """Whether the fixed subset is complete (or the loader had no more batches to give)."""
        return len(self.subset) >= self.num_batches or (self.sealed and bool(self.subset))

    def _collect(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self.stopped is not None:
            return
        if not self.full and not self.sealed:
            self.subset.append((batch_to(batch), idx))
        self._measure_initial(trainer, pl_module)

    def _seal(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sealed = bool(self.subset)
        self._measure_initial(trainer, pl_module)

    def _step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        step = trainer.global_step
        if not self.due(step):
            return
        lr = float(optimizer.param_groups[0]["lr"])
        if self.full:
            self._measure(trainer, pl_module, step, lr)
        elif step == 0 and self.last_step < 0 and self._initial is None:
            self._initial, self._initial_lr = snapshot(model_tensors(pl_module)), lr  # measured once the subset is

    def _measure_initial(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._initial is None or not self.full:
            return
        initial, self._initial = self._initial, None
        device = next(iter(model_tensors(pl_module)), torch.empty(0)).device
        with swapped_in(pl_module, [t.to(device) for t in initial]):
            self._measure(trainer, pl_module, 0, self._initial_lr)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, lr: float) -> None:
        with self.failure_policy(trainer, pl_module, step):
            try:
                stats = self._curvature(trainer, pl_module, lr)
            finally:
                self.last_step = step
            if stats is not None:
                self.record(trainer, step, stats, finite_only=True)

    def _curvature(self, trainer: L.Trainer, pl_module: L.LightningModule, lr: float) -> dict[str, Tensor] | None:
        params = _trained_parameters(trainer, pl_module)
        device = params[0].device
        micro_batches = [MicroBatch(batch_to(batch, device), idx, _seeded_rng(self.seed + i))
                         for i, (batch, idx) in enumerate(self.subset)]
        objective = StepObjective(trainer, pl_module, micro_batches, self.evaluation)
        world = trainer.world_size
        reduce = None if world == 1 else (lambda t: sum_over_ranks(trainer, t) / world)
        with preserved_state(pl_module):
            with feeding_norms(pl_module) if self.spherical else nullcontext({}) as fed, \
                    twice_differentiable_attention():  # Transformers: the math kernel, which has a double backward
                loss = objective.loss()
            if loss is None:
                return None
            hessian = HessianOperator(lambda: loss, params, reduce)
            try:
                options = {"dtype": hessian.dtype, "device": device}
                top = top_eigenvalue(hessian.matvec, hessian.dim, generator=self._generator(),
                                     iterations=self.iterations, tol=self.tol, **options)
                loss = loss.detach().double().reshape(1)
                stats = {"loss": (loss if reduce is None else reduce(loss))[0],
                         "top_eigenvalue": _scalar(top.value, device),
                         "two_over_lr": _scalar(2 / lr if lr > 0 else math.inf, device)}
                if self.trace_probes:
                    trace = hutchinson_trace(hessian.matvec, hessian.dim, generator=self._generator(),
                                             probes=self.trace_probes, **options)
                    stats.update(trace=_scalar(trace.value, device), trace_stderr=_scalar(trace.stderr, device))
                if self.spherical:
                    stats.update(self._spherical(trainer, pl_module, hessian, fed, options))
            finally:
                hessian.release()
        return stats

    def _spherical(self, trainer: L.Trainer, pl_module: L.LightningModule, hessian: HessianOperator,
                   fed: dict[str, NormFed], options: dict[str, Any]) -> dict[str, Tensor]:
        """Each watched scale-invariant layer's restricted top eigenvalue, squared norm and their product."""
        position = {id(p): i for i, p in enumerate(hessian.params)}
        candidates = [name for name, layer in fed.items()
                      if layer.parameters() and all(id(p) in position for p in layer.parameters())]
        invariant = self._scale_invariant(trainer, [fed[name] for name in candidates])
        watched = self._watched(pl_module, [name for name, ok in zip(candidates, invariant, strict=True) if ok])
        self.name_layers(trainer, pl_module, {name: own_weight_layer(pl_module, name) for name in watched})
        stats: dict[str, Tensor] = {}
        for name in watched:
            indices = [position[id(p)] for p in fed[name].parameters()]
            restricted = top_eigenvalue(hessian.block(indices), hessian.block_dim(indices),
                                        generator=self._generator(), iterations=self.iterations, tol=self.tol,
                                        **options)
            squared_norm = torch.stack([hessian.params[i].detach().double().pow(2).sum() for i in indices]).sum()
            value = _scalar(restricted.value, squared_norm.device)
            stats.update({f"{name}/top_eigenvalue": value, f"{name}/squared_norm": squared_norm,
                          f"{name}/spherical_sharpness": value * squared_norm})
        return stats

    def _scale_invariant(self, trainer: L.Trainer, layers: list[NormFed]) -> list[bool]:
        """Whether each layer passes the doubling check (``scale_invariance_error``), agreed over ranks."""
        if not layers:
            return []
        with trainer.precision_plugin.train_step_context():
            errors = torch.stack([scale_invariance_error(layer) for layer in layers])
        errors = sum_over_ranks(trainer, errors) / trainer.world_size  # one decision on every rank
        return [bool(e) for e in (errors <= SCALE_INVARIANCE_TOL).tolist()]

    def _watched(self, pl_module: L.LightningModule, invariant: list[str]) -> list[str]:
        """The named scale-invariant layers, or by default all of them, one per stage above 12."""
        if not self.layer_names:
            return select_per_stage(invariant)
        missing = [name for name in self.layer_names if name not in invariant]
        if missing and not self.history:
            raise DiagnosticError(
                f"Sharpness: {', '.join(map(repr, missing))} named in layers= is not scale-invariant in "
                f"{type(pl_module).__name__}: its output does not go straight into a norm that divides by statistics "
                f"of its input (BN in training, LN, GN, RMS). Scale-invariant layers: "
                f"{', '.join(invariant[:16]) or 'none'}; pass spherical=False to measure none."
            )
        return [name for name in invariant if name in self.layer_names]

    def _generator(self) -> torch.Generator:
        """A CPU generator seeded with ``seed``: every estimate of every measurement draws the same vectors."""
        return torch.Generator().manual_seed(self.seed)


def _trained_parameters(trainer: L.Trainer, pl_module: L.LightningModule) -> list[Tensor]:
    """The parameters of the (first) optimizer that require gradients; the module's, without an optimizer."""
    if trainer.optimizers:
        params = [p for group in trainer.optimizers[0].param_groups for p in group["params"] if p.requires_grad]
    else:
        params = [p for p in pl_module.parameters() if p.requires_grad]
    if not params:
        raise DiagnosticError(f"Sharpness found no trainable parameter in {type(pl_module).__name__}'s optimizer.")
    return params


def _scalar(value: float, device: torch.device) -> Tensor:
    """A float64 scalar on ``device``: every statistic of a record on one device, for its one stack."""
    return torch.tensor(value, dtype=torch.float64, device=device)


def _seeded_rng(seed: int) -> RngState:
    """An RNG state (as ``capture_rng`` returns) of every generator seeded with ``seed``; the current one is kept."""
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        current = torch.cuda.get_rng_state_all()
        torch.cuda.manual_seed_all(seed)
        cuda = torch.cuda.get_rng_state_all()
        torch.cuda.set_rng_state_all(current)
    return (torch.Generator().manual_seed(seed).get_state(), cuda, np.random.RandomState(seed).get_state(),
            random.Random(seed).getstate())
