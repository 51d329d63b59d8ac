"""``EffectiveLR``: the effective learning rate and the angular updates of the weights that feed a norm.

A weight ``w`` whose output a norm standardizes is scale-invariant: the loss sees only its
direction, its gradient is orthogonal to it and shrinks as ``1 / ||w||`` (Ioffe & Szegedy 2015;
van Laarhoven 2017). What a step does to such a weight is a rotation, and the learning rate that
sets it is ``lr / ||w||^2`` (Hoffer et al. 2018). Gradient noise grows ``||w||``, weight decay
shrinks it; under SGD with momentum ``mu`` and weight decay ``wd`` the two balance at an angular
update per step of ``sqrt(2 lr wd / (1 + mu))`` (Wan et al. 2020), reached after ``O(1 / (lr wd))``
steps (Li, Lyu & Arora 2020).

Each metric below is a function with the formula, and says what it reads: the weight, the raw
gradient (``dL/dw`` as backward left it: averaged over DDP ranks and unscaled from AMP, before
gradient clipping and before the optimizer adds weight decay), or the optimizer's real update
(the weight after the step against the weight before it: momentum, weight decay, Adam's scaling
and clipping included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from normzoo.callbacks.base import Diagnostic
from normzoo.callbacks.capture import select_per_stage
from normzoo.callbacks.evaluate import ForwardFn, ModelEvaluation
from normzoo.callbacks.layer_names import own_weight_layer
from normzoo.callbacks.probe import after_next_step, preserved_state, snapshot
from normzoo.errors import ConfigError, DiagnosticError, NormZooError
from normzoo.norms.introspect import cancels_bias
from normzoo.norms.norm_fed import SCALE_INVARIANCE_TOL, feeding_norms, scale_invariance_error


def weight_norm(w: Tensor) -> Tensor:
    """``||w||``, the weight's l2 norm before the step (float64). Reads the weight only."""
    return w.detach().double().norm()


def effective_lr(lr: float | Tensor, w: Tensor) -> Tensor:
    """``lr / ||w||^2``, the learning rate of ``w``'s direction (Hoffer et al. 2018). Reads the weight and
    its param group's learning rate at this step (after any scheduler), neither the gradient nor the update."""
    return torch.as_tensor(lr, dtype=torch.float64, device=w.device) / weight_norm(w) ** 2


def angular_update(before: Tensor, after: Tensor) -> Tensor:
    """``arccos(<w_t, w_t+1> / (||w_t|| ||w_t+1||))`` in radians: the optimizer's real update.

    ``w_t`` and ``w_t+1`` are the weight before and after the optimizer's step, so momentum,
    weight decay, Adam's scaling and clipping are all in it. Computed as ``2 atan2(||u - v||,
    ||u + v||)`` with the unit vectors ``u, v`` in float64, the same angle without arccos's loss
    of precision near 0 (where ``1 - cos`` underflows).
    """
    u, v = before.detach().double().flatten(), after.detach().double().flatten()
    u, v = u / u.norm(), v / v.norm()
    return 2 * torch.atan2((u - v).norm(), (u + v).norm())


def angular_equilibrium(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> float | None:
    """``sqrt(2 lr wd / (1 + mu))``, the angular update per step a scale-invariant weight settles at under
    SGD with momentum ``mu`` and weight decay ``wd`` (Wan et al. 2020), from the param group's settings.

    Reads neither the gradient nor the update: it is the theory's value for the current ``lr``, to
    draw beside ``angular_update``. None (not logged) unless the optimizer is ``torch.optim.SGD``
    with ``weight_decay > 0``, plain momentum (``mu >= 0``; ``mu = 0`` is plain SGD), no dampening,
    no Nesterov and not maximizing: the settings the formula was derived for.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        return None
    wd, mu = float(group.get("weight_decay", 0.0)), float(group.get("momentum", 0.0))
    if wd <= 0 or group.get("nesterov") or group.get("dampening", 0) != 0 or group.get("maximize"):
        return None
    return math.sqrt(2 * float(group["lr"]) * wd / (1 + mu))


def grad_cosine(w: Tensor, grad: Tensor) -> Tensor:
    """``<w, g> / (||w|| ||g||)`` with the raw gradient ``g``: ~0 for a scale-invariant weight, whose
    gradient is orthogonal to it (NaN, so not logged, for a zero gradient)."""
    w, grad = w.detach().double(), grad.detach().double()
    return (w * grad).sum() / (w.norm() * grad.norm())


def relative_grad_norm(w: Tensor, grad: Tensor) -> Tensor:
    """``||g|| / ||w||`` with the raw gradient ``g``: the angle (radians) a plain SGD step of ``lr = 1``
    would turn a scale-invariant weight by; ``||g||`` alone falls as ``||w||`` grows."""
    return grad.detach().double().norm() / weight_norm(w)


def scale_invariant_weights(model: nn.Module, forward: Callable[[], Any]) -> dict[str, str]:
    """The weights of ``model`` that feed a norm -> the norm's path, found on the forward ``forward()`` runs.

    The rule: a weight (a parameter with ``dim() >= 2``) counts when

    1. its layer's output tensor itself, unmodified, is the input of a norm layer (``is_norm``) at
       every call of the layer (``feeding_norms``): data flow, not module order or names;
    2. the norm standardizes it in the mode it runs in: the norm's output moves by less than
       ``SCALE_INVARIANCE_TOL`` when the layer's parameters double (``scale_invariance_error``), which
       a frozen BN or a BN in eval mode fails;
    3. the layer has no other parameter (a bias), or the norm cancels it (``cancels_bias``: BN, IN, GN
       with a channel per group): LN is invariant to a Linear's weight and bias scaled together, not
       to its weight alone.

    Limits: a norm applied as a function (``F.layer_norm``), a reshape or an activation between the
    layer and the norm (a flatten before BN1d, a ReLU before BN, which keeps the invariance) hide an
    invariant weight; an output also used past the norm (``bn(y) + y``) passes rule 1 though the loss
    sees its scale; modes and the batch are those of this one forward. ``grad_cosine`` far from 0
    shows a wrong call; ``EffectiveLR(weights=...)`` overrides it. Run it under ``no_grad`` with the
    model's state preserved (rule 2 calls the norms again).
    """
    with feeding_norms(model) as fed:
        forward()
    found: dict[str, str] = {}
    for layer_name, pair in fed.items():
        weights = [name for name, p in pair.layer.named_parameters(recurse=False) if p.dim() >= 2]
        others = [p for p in pair.layer.parameters(recurse=False) if p.dim() < 2]
        if not weights or (others and not cancels_bias(pair.norm)):
            continue
        if float(scale_invariance_error(pair)) <= SCALE_INVARIANCE_TOL:
            found.update({f"{layer_name}.{name}" if layer_name else name: pair.norm_name for name in weights})
    return found


class EffectiveLR(Diagnostic):
    """Effective learning rates and angular updates of the scale-invariant weights (see the module docstring).

    Which weights: at the first training batch of each fit, one extra forward (the replayed
    ``training_step``, or ``forward=``; the model's state and RNG are restored after it) finds every
    weight whose layer's output goes straight into a norm that standardizes it
    (``scale_invariant_weights``); above 12, the last one of each stage of the model. ``weights=``
    names them instead (for a norm applied as a function, a reshape before the norm, ...). Frozen
    layers are searched too: a fine-tuning run measures them once it unfreezes them. Under DDP rank
    zero's choice is broadcast, so every rank measures the same weights. The search costs about
    three forwards once per fit; a measured step, one copy of the watched weights.

    Every ``every_n_steps`` optimizer steps (from ``trainer.global_step``), at the real optimizer step
    (the last micro-batch of an accumulated step; under manual optimization each optimizer's step,
    with only that optimizer's weights), for each watched weight that the stepping optimizer holds
    and that has a gradient:

    - ``weight_norm``: ``||w||`` before the step;
    - ``effective_lr``: ``lr / ||w||^2``, ``lr`` of the param group holding ``w``;
    - ``angular_update``: the angle between ``w`` before and after the step, the real update;
    - ``angular_equilibrium``: ``sqrt(2 lr wd / (1 + mu))``, only for ``torch.optim.SGD`` with weight
      decay (and no Nesterov or dampening), where the theory gives it;
    - ``grad_cosine``: the cosine of ``w`` and its raw gradient, ~0 when ``w`` is scale-invariant;
    - ``relative_grad_norm``: ``||g|| / ||w||`` with the raw gradient.

    The values come from the weights (identical on all ranks) and the DDP-averaged gradients, so
    every rank computes the same numbers; nothing is reduced. Reading them changes nothing: training
    is bit-identical with and without the callback. The step hook is attached only for a measured
    step. A value that is not finite (the cosine of a zero gradient) is left out.

    Logged metrics: ``<prefix>/<parameter>/{weight_norm,effective_lr,angular_update,angular_equilibrium,
    grad_cosine,relative_grad_norm}`` under the callback's tag prefix (``self.prefix``).

    Args:
        every_n_steps: optimizer steps between measurements.
        weights: parameter names to measure instead of the ones found (each with ``dim() >= 2``).
        forward: ``(pl_module, batch) -> outputs`` (or its dotted path) to run instead of the replayed
            ``training_step`` when looking for the weights.
        strict: raise on any measurement error instead of warning and stopping.

    Raises:
        ConfigError: ``every_n_steps`` < 1, ``weights`` not a non-empty list of names, a ``forward``
            path that does not import. ``DiagnosticError`` at setup: a name in ``weights`` that is not
            a parameter with ``dim() >= 2``. A model where no weight feeds a norm gets a warning and
            no measurements, so one callback list serves runs with and without norms.

    Example::

        trainer = Trainer(callbacks=[EffectiveLR(every_n_steps=100)])
    """

    name = "effective_lr"
    families = {
        "weight_norm": ("weight_norm",),
        "effective_lr": ("effective_lr",),
        "angular update (rad)": ("angular_update", "angular_equilibrium"),
        "grad_cosine": ("grad_cosine",),
        "relative_grad_norm": ("relative_grad_norm",),
    }

    def __init__(self, every_n_steps: int = 100, weights: Sequence[str] | None = None,
                 forward: str | ForwardFn | None = None, strict: bool = False) -> None:
        super().__init__(every_n_steps, strict)
        if weights is not None and (isinstance(weights, str) or not weights
                                    or not all(isinstance(name, str) and name for name in weights)):
            raise ConfigError(f"EffectiveLR weights must be a non-empty list of parameter names, got {weights!r}; "
                              "leave it unset to measure every weight that feeds a norm.")
        self.weight_names = list(weights) if weights is not None else None
        self.evaluation = ModelEvaluation(type(self).__name__, forward=forward)
        self.weights: list[str] | None = None
        self.norm_of: dict[str, str] = {}
        self._stats: dict[str, Tensor] = {}
        self._step_hooks: list[RemovableHandle] = []
        self._armed_step = -1
        self._stepped = False

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.weights, self.norm_of = None, {}
        if self.weight_names is None:
            return  # found at the first training batch
        params = dict(pl_module.named_parameters())
        unknown = [name for name in self.weight_names if name not in params or params[name].dim() < 2]
        if unknown:
            candidates = [name for name, p in params.items() if p.dim() >= 2]
            raise DiagnosticError(
                f"EffectiveLR: {', '.join(map(repr, unknown))} named in weights= "
                f"{'is' if len(unknown) == 1 else 'are'} not a weight (dim() >= 2) of {type(pl_module).__name__}. "
                "Its weights: "
                f"{', '.join(candidates[:16])}{', ...' if len(candidates) > 16 else ''}."
            )
        self.weights = list(self.weight_names)
        self.name_layers(trainer, pl_module, {name: own_weight_layer(pl_module, name) for name in self.weights})

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._arm(trainer, pl_module, batch, idx)

    @override
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self._armed_step >= 0:
            with self.failure_policy(trainer, pl_module, self._armed_step):
                self._before_step(pl_module, optimizer)

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._finish(trainer, pl_module)

    def forget(self) -> None:
        for handle in self._step_hooks:
            handle.remove()
        self._step_hooks, self._stats = [], {}
        self._armed_step, self._stepped = -1, False

    def _arm(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        """Find the weights at the first batch; on a due step, measure this batch's optimizer steps."""
        step = trainer.global_step
        if self.weights is None and self.stopped is None:
            self._find_weights(trainer, pl_module, batch, idx)
        if self.weights and (self._armed_step == step or self.due(step)):
            self._armed_step = step

    def _find_weights(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        with self.failure_policy(trainer, pl_module, trainer.global_step):
            try:
                with torch.no_grad(), preserved_state(pl_module), trainer.precision_plugin.train_step_context():
                    for param in pl_module.parameters():  # frozen layers count too: fine-tuning unfreezes them later
                        param.requires_grad_(True)  # (put back by preserved_state)
                    found = scale_invariant_weights(
                        pl_module, lambda: self.evaluation.forward(trainer, pl_module, batch, idx))
            except NormZooError:
                raise
            except Exception as error:
                raise DiagnosticError(
                    f"EffectiveLR could not find the weights that feed a norm in {type(pl_module).__name__}: "
                    f"{type(error).__name__}: {error}. Name them with weights=[...], or remove the callback."
                ) from error
            self.norm_of = trainer.strategy.broadcast(found)  # rank zero's choice on every rank
            self.weights = select_per_stage(list(self.norm_of))
            if not self.weights:
                self.stop(trainer, f"{type(pl_module).__name__} has no weight whose output goes straight into a "
                                   "norm that standardizes it; name scale-invariant weights with weights=[...]")
                return
            self.name_layers(trainer, pl_module, {name: own_weight_layer(pl_module, name) for name in self.weights})

    @torch.no_grad()
    def _before_step(self, pl_module: L.LightningModule, optimizer: Any) -> None:
        """Statistics of the stepping optimizer's watched weights and raw gradients; a copy to measure its step."""
        self._stepped = True
        names = {id(p): name for name, p in pl_module.named_parameters()}
        watched = set(self.weights or [])
        params: list[tuple[str, Tensor]] = []
        for group in optimizer.param_groups:
            equilibrium = angular_equilibrium(optimizer, group)
            for param in group["params"]:
                name = names.get(id(param))
                if name not in watched or param.grad is None:
                    continue
                params.append((name, param))
                w, grad = param.detach(), param.grad.detach()
                self._stats[f"{name}/weight_norm"] = weight_norm(w)
                self._stats[f"{name}/effective_lr"] = effective_lr(group["lr"], w)
                self._stats[f"{name}/grad_cosine"] = grad_cosine(w, grad)
                self._stats[f"{name}/relative_grad_norm"] = relative_grad_norm(w, grad)
                if equilibrium is not None:
                    self._stats[f"{name}/angular_equilibrium"] = torch.tensor(
                        equilibrium, dtype=torch.float64, device=w.device)
        if not params:
            return
        before = snapshot([param for _, param in params])

        def after_step() -> None:
            for (name, param), old in zip(params, before, strict=True):
                self._stats[f"{name}/angular_update"] = angular_update(old, param)

        self._step_hooks.append(after_next_step(optimizer, after_step))

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After the measured step (all of the batch's optimizer steps): one record of the finite values."""
        if self._armed_step < 0 or not self._stepped:
            return  # not measuring, or an accumulating micro-batch before the step
        step, stats = self._armed_step, dict(self._stats)
        self.forget()
        with self.failure_policy(trainer, pl_module, step):
            self.record(trainer, step, stats, finite_only=True)
