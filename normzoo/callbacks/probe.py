"""Measuring a model without changing it: its state kept and restored, its fixed probe batch, rank sums.

A measurement runs the user's own code (a replayed ``training_step``), which may update BN
buffers, draw random numbers, toggle ``requires_grad``, rebind attributes (a counter, a
torchmetrics state) or append to a list. ``preserved_state`` puts all of that back, so a
run with diagnostics trains exactly as one without them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from normzoo.batches import batch_length, batch_to, concat_batches, slice_batch

RngState = tuple[Tensor, list[Tensor] | None, Any, Any]


def capture_rng() -> RngState:
    """Every generator a training step may draw from: torch's CPU and CUDA ones, numpy's, Python's."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def restore_rng(state: RngState) -> None:
    """Put the generators back to a ``capture_rng`` state: the next random draws repeat."""
    cpu, cuda, numpy_state, python_state = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(numpy_state)
    random.setstate(python_state)


@contextmanager
def eager_calls(model: nn.Module) -> Iterator[None]:
    """Call ``model`` and its submodules eagerly inside the block, even if ``Module.compile()`` was used.

    A compiled module ignores forward hooks added after it was compiled (TorchDynamo skips
    guards on nn.Module hooks), so a measurement that hooks layers must run the eager forward.
    The compiled code stays cached and is used again after the block.
    """
    compiled = {module: module._compiled_call_impl for module in model.modules()
                if getattr(module, "_compiled_call_impl", None) is not None}
    for module in compiled:
        module._compiled_call_impl = None
    try:
        yield
    finally:
        for module, call in compiled.items():
            module._compiled_call_impl = call


class _Attributes:
    """A module's ``__dict__`` as it was: rebound attributes and the contents of its lists, dicts and sets."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.values = dict(module.__dict__)
        self.contents = {key: value.copy() for key, value in self.values.items()
                         if isinstance(value, (list, dict, set))}

    def restore(self) -> None:
        current = self.module.__dict__
        for key in [key for key in current if key not in self.values]:
            del current[key]
        current.update(self.values)
        for key, content in self.contents.items():
            container = self.values[key]
            container.clear()
            if isinstance(container, list):
                container.extend(content)
            else:
                container.update(content)


_measurements_running = 0


def measuring() -> bool:
    """Whether a diagnostic's measurement is running now: hooks that watch training skip its passes."""
    return _measurements_running > 0


@contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Run a measurement without side effects on ``model`` or the random generators.

    Restored afterwards: every buffer (BN statistics) by value, every module's mode and
    plain attributes (rebound values, the contents of lists/dicts/sets, so a replayed
    ``training_step`` that appends its outputs or counts its calls leaves no trace), every
    parameter's ``requires_grad`` (``toggle_optimizer``) and the RNG. The model runs
    eagerly in the block (``eager_calls``), so the measurement's hooks fire, and ``measuring()``
    is true in it. Tensors that the user's code changes in place outside buffers are not tracked.
    """
    global _measurements_running
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    attributes = [_Attributes(module) for module in model.modules()]
    requires_grad = [(p, p.requires_grad) for p in model.parameters()]
    rng = capture_rng()
    _measurements_running += 1
    try:
        with eager_calls(model):
            yield
    finally:
        _measurements_running -= 1
        for state in attributes:
            state.restore()
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in buffers:
                    buffer.copy_(buffers[name])
        for param, flag in requires_grad:
            param.requires_grad_(flag)
        restore_rng(rng)


def model_tensors(model: nn.Module) -> list[Tensor]:
    """The model's parameters and buffers: what its state at one moment consists of."""
    return [*model.parameters(), *model.buffers()]


def snapshot(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Detached copies of the tensors' current values."""
    return [t.detach().clone() for t in tensors]


@torch.no_grad()
def assign(tensors: Sequence[Tensor], values: Sequence[Tensor]) -> None:
    """Write ``values`` into the tensors in place (an optimizer's references to them stay valid)."""
    for tensor, value in zip(tensors, values, strict=True):
        tensor.copy_(value)


@contextmanager
def swapped_in(model: nn.Module, values: Sequence[Tensor]) -> Iterator[None]:
    """Give the model's parameters and buffers ``values`` (from ``model_tensors``) inside the block.

    The current values come back afterwards, even on an error.
    """
    tensors = model_tensors(model)
    current = snapshot(tensors)
    assign(tensors, values)
    try:
        yield
    finally:
        assign(tensors, current)


class ProbeBatch:
    """A fixed probe: the first ``size`` training samples, kept as the loader made them (tuple, dict, ...).

    Collected from the batches the callback sees at the start of training (whole batches,
    joined sample-wise, cut to ``size``), kept on the model's device for the run, and saved
    in the callback's state so a resumed run measures the same samples. A loader with fewer
    samples than ``size`` seals the probe at the end of its first epoch: every measurement of
    a run compares the same samples.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.batch: Any = None
        self.sealed = False

    def collect(self, batch: Any) -> None:
        if self.full:
            return
        batch = batch_to(batch)
        joined = batch if self.batch is None else concat_batches(self.batch, batch)
        self.batch = slice_batch(joined, self.size)

    def seal(self) -> None:
        """Take what was collected as the probe (the loader has no more samples to give)."""
        if self.batch is not None:
            self.sealed = True

    @property
    def full(self) -> bool:
        return self.batch is not None and (self.sealed or batch_length(self.batch) >= self.size)

    def state_dict(self) -> dict[str, Any]:
        return {"batch": batch_to(self.batch, "cpu"), "sealed": self.sealed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch, self.sealed = state["batch"], state["sealed"]


def sum_over_ranks(trainer: Any, tensor: Tensor) -> Tensor:
    """``tensor`` summed over all ranks (on device); the tensor itself in a single process."""
    return trainer.strategy.reduce(tensor, reduce_op="sum") if trainer.world_size > 1 else tensor


class _OnceAfterStep:
    """An optimizer step post-hook that runs ``action`` after the first step, and does nothing after later ones."""

    def __init__(self, action: Any) -> None:
        self.action, self.done = action, False

    def __call__(self, *args: Any) -> None:
        if not self.done:
            self.done = True
            self.action()


def after_next_step(optimizer: torch.optim.Optimizer, action: Any) -> Any:
    """Run ``action()`` once, right after ``optimizer``'s next step; returns the hook's handle.

    The caller removes the handle afterwards (at the end of the batch): a hook that removed itself
    would change the optimizer's hook dictionary while torch iterates it, which fails as soon as a
    second callback hooks the same step.
    """
    return optimizer.register_step_post_hook(_OnceAfterStep(action))
