"""The one way every diagnostic evaluates a user's model: its loss, and a forward pass.

The most faithful definition of "the loss" and of "a forward pass" of someone else's
LightningModule is its own ``training_step``: whatever the batch format, forward signature,
loss or number of outputs. So by default a diagnostic replays ``training_step(batch, idx)``:

- ``self.log`` / ``self.log_dict`` do nothing during the replay;
- under manual optimization, the optimizers' ``step`` and ``zero_grad``, ``manual_backward``,
  ``clip_gradients`` and the LR schedulers' ``step`` do nothing (a closure passed to ``step``
  still runs, so its forward is seen): the replay computes, it never trains;
- the loss is the returned tensor or its ``"loss"`` entry; the model's outputs are what the
  LightningModule's own ``forward`` returned the first time the step called it.

Buffers, modes, attributes and the RNG are restored by the caller (``preserved_state``).
``loss=`` and ``forward=`` replace the replay where it cannot serve: a loss under manual
optimization (several losses, one per optimizer), or a model to probe on other inputs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn

from normzoo.batches import batch_inputs, batch_targets
from normzoo.errors import ConfigError, DiagnosticError

LossFn = Callable[[nn.Module, Any], Tensor]
"""``loss(pl_module, batch) -> scalar loss``: a diagnostic's objective, replacing the replayed ``training_step``."""

ForwardFn = Callable[[nn.Module, Any], Any]
"""``forward(pl_module, batch) -> outputs``: a probe forward, replacing the replayed ``training_step``."""

_MISSING = object()


@contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    """``obj.name`` is ``value`` inside the block (an instance attribute, removed or restored after)."""
    before = obj.__dict__.get(name, _MISSING)
    object.__setattr__(obj, name, value) if isinstance(obj, nn.Module) else setattr(obj, name, value)
    try:
        yield
    finally:
        if before is _MISSING:
            obj.__dict__.pop(name, None)
        else:
            obj.__dict__[name] = before


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def _dry_step(closure: Callable[[], Any] | None = None, *args: Any, **kwargs: Any) -> None:
    """An optimizer step that only runs its closure (the forward and loss), never updating a weight."""
    if closure is not None:
        closure()


@contextmanager
def replaying(trainer: Any, pl_module: L.LightningModule) -> Iterator[None]:
    """Inside the block, calling ``training_step`` logs nothing and (manual optimization) steps nothing."""
    with ExitStack() as stack:
        for name in ("log", "log_dict"):
            stack.enter_context(_patched(pl_module, name, _nothing))
        if not pl_module.automatic_optimization:
            for name in ("manual_backward", "clip_gradients"):
                stack.enter_context(_patched(pl_module, name, _nothing))
            wrapped = list(getattr(trainer.strategy, "_lightning_optimizers", []))
            for optimizer in [*wrapped, *trainer.optimizers]:
                stack.enter_context(_patched(optimizer, "step", _dry_step))
                stack.enter_context(_patched(optimizer, "zero_grad", _nothing))
            for config in trainer.lr_scheduler_configs:
                stack.enter_context(_patched(config.scheduler, "step", _nothing))
        yield


@dataclass
class Evaluation:
    """One evaluation of the model on a batch: its outputs (or None) and its loss (or None)."""

    outputs: Any
    loss: Tensor | None


def step_loss(result: Any) -> Tensor | None:
    """The loss in a ``training_step`` result: the tensor itself or its ``"loss"`` entry."""
    if isinstance(result, Mapping):
        result = result.get("loss")
    return result if isinstance(result, Tensor) else None


def replay_training_step(trainer: Any, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> Evaluation:
    """Run the user's ``training_step`` as a measurement (see the module docstring)."""
    seen: list[Any] = []

    def first_output(module: nn.Module, inputs: Any, output: Any) -> None:
        if not seen:
            seen.append(output)

    handle = pl_module.register_forward_hook(first_output)
    try:
        with replaying(trainer, pl_module), trainer.precision_plugin.train_step_context():
            result = pl_module.training_step(batch, batch_idx)
    finally:
        handle.remove()
    return Evaluation(seen[0] if seen else None, step_loss(result))


class FunctionalLoss:
    """``torch.nn.functional.<name>(pl_module(inputs), targets)``: a standard supervised loss.

    A class rather than a closure so that callbacks holding it pickle under ``ddp_spawn``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.function = getattr(F, name)

    def __call__(self, model: nn.Module, batch: Any) -> Tensor:
        fix = "pass loss=(pl_module, batch) -> loss, or leave loss unset to use the training_step's loss"
        targets = batch_targets(batch)
        if targets is None:
            raise ConfigError(f"loss={self.name!r} needs targets, but the batch ({type(batch).__name__}) has none; "
                              f"{fix}.")
        return self.function(model(batch_inputs(batch, fix)), targets)


def resolve_callable(value: str | Callable | None, option: str) -> Callable | None:
    """``value`` itself, or the function its dotted import path names (``"package.module.function"``).

    ``option`` is the callback argument it came from (``loss``, ``forward``), for messages.
    """
    if value is None or callable(value):
        return value
    module_name, _, attribute = value.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"Cannot import the {option}= function {value!r}: {error}.") from error
    if not callable(function):
        raise ConfigError(f"{value!r} is not callable; {option}= takes a function (pl_module, batch).")
    return function


def resolve_loss(loss: str | LossFn | None) -> LossFn | None:
    """The objective a diagnostic evaluates; None means the replayed ``training_step`` loss.

    Args:
        loss: None (the user's own ``training_step`` loss), a ``torch.nn.functional`` loss
            name applied to ``(pl_module(inputs), targets)`` ("cross_entropy", "mse_loss", ...),
            a function ``(pl_module, batch) -> loss``, or its dotted import path.

    Raises:
        ConfigError: the name is neither a functional loss nor an importable callable.
    """
    if isinstance(loss, str) and "." not in loss:
        if not hasattr(F, loss) or not ("loss" in loss or "entropy" in loss):
            raise ConfigError(
                f"Unknown loss {loss!r}. Leave loss unset to use the training_step's own loss, or use a "
                "torch.nn.functional loss such as 'cross_entropy', 'mse_loss', 'binary_cross_entropy_with_logits', "
                "or a dotted path 'package.module.function' to a function (pl_module, batch) -> loss."
            )
        return FunctionalLoss(loss)
    return resolve_callable(loss, "loss")


class ModelEvaluation:
    """How one diagnostic evaluates the model: the replayed ``training_step``, or the user's overrides.

    Args:
        callback: the diagnostic's class name, for messages.
        loss: see ``resolve_loss``.
        forward: None (the replay), a function ``(pl_module, batch) -> outputs``, or its dotted path.
    """

    def __init__(self, callback: str, loss: str | LossFn | None = None, forward: str | ForwardFn | None = None) -> None:
        self.callback = callback
        self.loss_fn = resolve_loss(loss)
        self.forward_fn = resolve_callable(forward, "forward")

    def unavailable_loss(self, pl_module: L.LightningModule) -> str | None:
        """Why the default loss cannot be had for this module (manual optimization), or None."""
        if self.loss_fn is None and not pl_module.automatic_optimization:
            return (f"{type(pl_module).__name__} uses manual optimization: its training_step steps its own "
                    "optimizers and has no single loss to replay. Pass loss=(pl_module, batch) -> loss to measure.")
        return None

    def loss(self, trainer: Any, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> Tensor | None:
        """The objective on ``batch`` at the model's current weights (None: the step returned no loss)."""
        if self.loss_fn is not None:
            with trainer.precision_plugin.train_step_context():
                result = self._user_code(lambda: self.loss_fn(pl_module, batch), pl_module, "loss")
            return step_loss(result)
        return self._user_code(lambda: replay_training_step(trainer, pl_module, batch, batch_idx),
                               pl_module, "loss").loss

    def forward(self, trainer: Any, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> Evaluation:
        """A forward pass on ``batch``: the replayed step (outputs and loss) or ``forward=`` (outputs only)."""
        if self.forward_fn is not None:
            with trainer.precision_plugin.train_step_context():
                outputs = self._user_code(lambda: self.forward_fn(pl_module, batch), pl_module, "forward")
            return Evaluation(outputs, None)
        return self._user_code(lambda: replay_training_step(trainer, pl_module, batch, batch_idx),
                               pl_module, "forward")

    def _user_code(self, run: Callable[[], Any], pl_module: L.LightningModule, option: str) -> Any:
        """Run the user's code; an error in it names the callback, the module and the option that fixes it."""
        try:
            return run()
        except DiagnosticError:
            raise
        except Exception as error:
            given = (self.loss_fn if option == "loss" else self.forward_fn) is not None
            what = f"the {option}= function" if given else f"{type(pl_module).__name__}.training_step (replayed)"
            hint = (f"fix the {option}= function" if given else
                    f"pass {option}=(pl_module, batch) -> {'loss' if option == 'loss' else 'outputs'} to "
                    f"{self.callback} to say how to evaluate this model")
            raise DiagnosticError(f"{self.callback} could not evaluate {type(pl_module).__name__}: {what} raised "
                                  f"{type(error).__name__}: {error}. To measure, {hint}.") from error
