"""Shared helpers of the diagnostics callbacks: which layers to watch, capturing their inputs
around one measured forward pass, and leaving the model exactly as it was.

Hooks live only inside ``capture_inputs``; nothing keeps activations past a measurement.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from normzoo.errors import ConfigError

NONLINEARITIES = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Softplus)
"""Module types whose inputs are "the input of a nonlinearity" (Ioffe & Szegedy Fig 1)."""


def select_layers(model: nn.Module, names: Sequence[str] | None = None) -> list[tuple[str, nn.Module]]:
    """The layers to watch: the named ones, or by default every nonlinearity module.

    Raises:
        ConfigError: a named layer does not exist, or the model has no nonlinearity modules.
    """
    modules = dict(model.named_modules())
    if names:
        missing = [name for name in names if name not in modules]
        if missing:
            raise ConfigError(
                f"No layer named {', '.join(map(repr, missing))} in {type(model).__name__}. "
                f"Some layer names: {', '.join(list(n for n in modules if n)[:12])}, ..."
            )
        return [(name, modules[name]) for name in names]
    chosen = [(name, m) for name, m in modules.items() if isinstance(m, NONLINEARITIES)]
    if not chosen:
        raise ConfigError(
            f"{type(model).__name__} has no nonlinearity modules (nn.ReLU, nn.Tanh, ...) to watch; "
            "functional activations cannot be hooked. Name the layers to watch with layers=[...]."
        )
    return chosen


class _InputRecorder:
    """Forward pre-hook that keeps the (detached) input of one layer from one forward pass."""

    def __init__(self, store: dict[str, Tensor], name: str) -> None:
        self.store, self.name = store, name

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.store[self.name] = inputs[0].detach()


@contextmanager
def capture_inputs(layers: Sequence[tuple[str, nn.Module]]) -> Iterator[dict[str, Tensor]]:
    """Record each layer's input during the forward passes inside the block; hooks always removed."""
    store: dict[str, Tensor] = {}
    handles = [module.register_forward_pre_hook(_InputRecorder(store, name)) for name, module in layers]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


RngState = tuple[Tensor, list[Tensor] | None]


def capture_rng() -> RngState:
    """The CPU generator's state and, once CUDA is in use, every CUDA generator's state."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def restore_rng(state: RngState) -> None:
    """Put the generators back to a ``capture_rng`` state: the next random draws repeat."""
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


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


@contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Run a measurement without side effects: buffers (BN statistics), modes and RNG restored.

    A train-mode probe forward would otherwise update BatchNorm running statistics and
    advance the RNG (noisy BN, dropout), changing the training run being measured. The
    model runs eagerly in the block (``eager_calls``), so the measurement's hooks fire.
    """
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    modes = {module: module.training for module in model.modules()}
    rng = capture_rng()
    try:
        with eager_calls(model):
            yield
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in buffers:
                    buffer.copy_(buffers[name])
        for module, training in modes.items():
            module.training = training
        restore_rng(rng)


def batch_inputs(batch: Any) -> Tensor:
    """The model input of a batch: the batch itself, or the first item of a tuple/list/dict."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for value in batch.values():
            if isinstance(value, Tensor):
                return value
    raise ConfigError(
        f"Cannot find the model input in a batch of type {type(batch).__name__}; diagnostics expect a "
        "tensor or a (inputs, targets, ...) tuple."
    )


TARGET_KEYS = ("targets", "target", "labels", "label", "y")


def batch_targets(batch: Any) -> Tensor | None:
    """The targets of a batch: the second item of a tuple/list, a ``targets``-like dict key, or None."""
    if isinstance(batch, (list, tuple)) and len(batch) > 1 and isinstance(batch[1], Tensor):
        return batch[1]
    if isinstance(batch, dict):
        for key in TARGET_KEYS:
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    return None


class ProbeBatch:
    """A fixed probe: the first ``size`` training samples (inputs, and targets when present).

    Collected from the batches the callback sees at the start of training, kept on the
    model's device for the run, and saved in the callback's state so a resumed run measures
    the same samples. A loader with fewer samples than ``size`` before the first measurement
    seals the probe there: every measurement of a run compares the same samples.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.inputs: Tensor | None = None
        self.targets: Tensor | None = None
        self.sealed = False

    def collect(self, batch: Any) -> None:
        if self.full:
            return
        inputs = batch_inputs(batch).detach()
        targets = batch_targets(batch)
        self.inputs = _append(self.inputs, inputs)[: self.size]
        if targets is not None and len(targets) == len(inputs):
            self.targets = _append(self.targets, targets.detach())[: self.size]

    @property
    def full(self) -> bool:
        return self.inputs is not None and (self.sealed or len(self.inputs) >= self.size)

    def ready(self, step: int) -> bool:
        """Measurable at ``step``: full, or (after step 0) whatever a small loader provided, then sealed."""
        if self.inputs is not None and step > 0:
            self.sealed = True
        return self.full

    def state_dict(self) -> dict[str, Any]:
        return {"inputs": None if self.inputs is None else self.inputs.cpu(),
                "targets": None if self.targets is None else self.targets.cpu(), "sealed": self.sealed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inputs, self.targets = state["inputs"], state["targets"]
        self.sealed = state.get("sealed", False)  # checkpoints from before sealing lack it


def _append(existing: Tensor | None, new: Tensor) -> Tensor:
    return new if existing is None else torch.cat([existing.to(new.device), new])


def sum_over_ranks(trainer: Any, tensor: Tensor) -> Tensor:
    """``tensor`` summed over all ranks (on device); the tensor itself in a single process."""
    return trainer.strategy.reduce(tensor, reduce_op="sum") if trainer.world_size > 1 else tensor
