"""Which weights a normalization makes scale-invariant: those of a layer whose output goes straight into a norm.

A Linear or Conv layer is homogeneous of degree 1 in its own parameters: scaling its weight and
bias together by ``a > 0`` scales its output by ``a``. When that output is the input of a norm
that divides by a statistic of its input (BN in training, LN, GN, RMS), the norm's output, and
so the loss, does not change: ``L(a * theta) = L(theta)``. Then the gradient is orthogonal to
``theta`` and the Hessian restricted to ``theta`` scales as ``1 / a^2`` (Ioffe & Szegedy 2015;
van Laarhoven 2017), which is why sharpness is only comparable across runs as
``lambda_max * ||theta||^2``.

- ``feeding_norms``: the candidates, found in the forward passes run inside it: modules owning
  trainable parameters (outside norm layers) whose output tensor, unmodified, is the input of a
  norm layer (``normzoo.norms.find.norm_layers``) at every call. Whether the output also goes
  somewhere else (a skip connection) cannot be seen from hooks; normzoo's models never do that.
- ``scale_invariance_error``: the check on a candidate, on the input it was called with: the
  relative change of the norm's output when the layer's own parameters are doubled. Doubling is
  exact in floating point, so only the norm's ``eps`` and real non-invariance show: a norm that
  uses fixed statistics (``frozen_bn``, BN in eval mode, Batch Renorm's population scale) fails.

Plain torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from normzoo.norms.find import norm_layers

SCALE_INVARIANCE_TOL = 1e-2
"""Largest ``scale_invariance_error`` of a scale-invariant pair: the norm's eps moves its output by about
``3 eps / (8 var)`` (under 1e-2 unless a statistic's variance is within ~40 eps); a norm with fixed
statistics moves it by a change of order 1."""


@dataclass
class NormFed:
    """A layer whose output goes straight into a norm, with the inputs of its first call (detached)."""

    layer_name: str
    layer: nn.Module
    norm_name: str
    norm: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> list[Tensor]:
        """The layer's own trainable parameters: the ones that scale together (``theta``)."""
        return [p for p in self.layer.parameters(recurse=False) if p.requires_grad]


@dataclass
class _Output:
    layer: str
    tensor: Tensor
    version: int


class _Recorder:
    """Forward hooks that pair each layer output with the norm that takes it as input.

    A class rather than closures, so a model holding its hooks stays picklable.
    """

    def __init__(self, layers: dict[int, str], norms: dict[int, str]) -> None:
        self.layers, self.norms = layers, norms
        self.calls: dict[str, int] = {}
        self.fed: dict[str, int] = {}
        self.first: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self.norm_of: dict[str, str] = {}
        self.outputs: dict[int, _Output] = {}

    def layer_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        name = self.layers[id(module)]
        self.calls[name] = self.calls.get(name, 0) + 1
        if name not in self.first:
            self.first[name] = (_detached(args), _detached(kwargs))
        if isinstance(output, Tensor):
            self.outputs[id(output)] = _Output(name, output, output._version)

    def norm_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        seen = self.outputs.get(id(x)) if isinstance(x, Tensor) else None
        if seen is not None and seen.tensor is x and x._version == seen.version:
            self.fed[seen.layer] = self.fed.get(seen.layer, 0) + 1
            self.norm_of.setdefault(seen.layer, self.norms[id(module)])


def _detached(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


@contextmanager
def feeding_norms(model: nn.Module) -> Iterator[dict[str, NormFed]]:
    """The layers of ``model`` whose output goes straight into a norm layer, by module path, in call order.

    The dict fills when the block exits, from the forward passes run inside it; every hook is
    removed then, also on an error.

    Example::

        with feeding_norms(model) as fed:
            model(x)
        fed  # {'blocks.0.linear': NormFed(layer_name='blocks.0.linear', norm_name='blocks.0.norm', ...), ...}
    """
    modules = dict(model.named_modules())
    norms = norm_layers(model)
    inside = {id(m) for _, norm in norms for m in norm.modules()}
    layers = {name: module for name, module in modules.items()
              if id(module) not in inside and any(p.requires_grad for p in module.parameters(recurse=False))}
    recorder = _Recorder({id(m): name for name, m in layers.items()}, {id(m): name for name, m in norms})
    handles = [m.register_forward_hook(recorder.layer_hook, with_kwargs=True) for m in layers.values()]
    handles += [m.register_forward_pre_hook(recorder.norm_hook) for _, m in norms]
    found: dict[str, NormFed] = {}
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()
        for name, calls in recorder.calls.items():
            if recorder.fed.get(name, 0) == calls:
                norm_name = recorder.norm_of[name]
                args, kwargs = recorder.first[name]
                found[name] = NormFed(name, layers[name], norm_name, modules[norm_name], args, kwargs)
        recorder.outputs.clear()


@torch.no_grad()
def scale_invariance_error(fed: NormFed, scale: float = 2.0) -> Tensor:
    """``||N(f(x; a theta)) - N(f(x; theta))|| / ||N(f(x; theta))||`` for layer ``f``, norm ``N``, ``a = scale``.

    Run on the layer's recorded input, in the modules' current modes, each time with copies of the
    norm's buffers (the model's own buffers, which a retained graph may hold, are never written)
    and torch's random generators as they were (a noisy norm draws the same noise twice; they are
    put back afterwards). Near 0 (the norm's ``eps`` only) for a scale-invariant pair, of order 1
    otherwise. A float64 scalar on the layer's device.
    """
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def normalized(params: dict[str, Tensor]) -> Tensor:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        buffers = {name: buffer.clone() for name, buffer in fed.norm.named_buffers()}
        return functional_call(fed.norm, buffers, (functional_call(fed.layer, params, fed.args, fed.kwargs),))

    own = dict(fed.layer.named_parameters(recurse=False))
    try:
        plain = normalized(own).double()
        scaled = normalized({name: p * scale for name, p in own.items()}).double()
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
    return (scaled - plain).norm() / plain.norm().clamp_min(1e-300)
