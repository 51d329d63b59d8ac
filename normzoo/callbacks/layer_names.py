"""One name per layer across the diagnostics.

A layer, in the papers' sense, is a weight layer and what acts on its output: ``g(BN(W u))``
(Ioffe & Szegedy), the linear or conv map ``W``, its norm and its nonlinearity. The callbacks
measure different parts of it: ``ActivationDrift`` and ``DeadUnits`` the nonlinearity's input,
``RunningStatsConvergence`` the norm's statistics, ``GradientFlow`` the weight's gradient and the
norm's output, ``GradientICS`` the weight layer. Each tags what it measured with the name of the
layer it belongs to, so that one layer has one name in every callback's tags and charts:

- a part's **weight layer** is the part itself when it is a weight layer (a module with its own
  trainable-or-not parameter of ``dim() >= 2`` that is not a norm: Linear, Conv, Embedding), or the
  module owning a measured weight; for any other part (a norm, an activation), the last weight
  layer the forward called before it, whose output it reads;
- the **layer's name** is the outermost module that holds that weight layer and no other one,
  short of a plain container (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict`` themselves,
  which list layers rather than make one): normzoo's MLP ``backbone.blocks.0`` (its linear, norm
  and activation), a VGG's ``backbone.features.0`` (conv and norm; its activation, a sibling
  module, follows it in the forward); in a ResNet block, which holds two or three weight layers,
  ``backbone.stages.0.0.conv1``.

A part that runs before any weight layer keeps its own name, and so do parts of one callback that
would otherwise share a name (two activations after one weight layer). Where the last weight
layer called is not the one a part reads (a residual sum computed after a shortcut projection),
the part is named after the layer called last; ``layers=`` and the tags' module paths are there
to tell such cases apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import nn

from normzoo.norms.introspect import is_norm


def is_weight_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a weight layer: it owns a parameter with ``dim() >= 2`` and is not a norm."""
    return not is_norm(module) and any(p.dim() >= 2 for p in module.parameters(recurse=False))


def weight_layers(model: nn.Module) -> list[str]:
    """The paths of ``model``'s weight layers, in registration order."""
    return [name for name, module in model.named_modules() if name and is_weight_layer(module)]


CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
"""Modules that list layers rather than make one (their exact types; a subclass is a layer of its own)."""


def layer_unit(modules: Mapping[str, nn.Module], weights: list[str], weight_layer: str) -> str:
    """The outermost module path that holds ``weight_layer`` and no other of ``weights``, short of a container."""
    unit = weight_layer
    while "." in unit:
        parent = unit.rpartition(".")[0]
        others = any(w != weight_layer and w.startswith(parent + ".") for w in weights)
        if others or type(modules[parent]) in CONTAINERS:
            break
        unit = parent
    return unit


def parameter_owner(name: str) -> str:
    """The module path of a parameter name: ``blocks.0.linear.weight`` -> ``blocks.0.linear``."""
    return name.rpartition(".")[0]


def layer_names(model: nn.Module, weight_of: Mapping[str, str | None]) -> dict[str, str]:
    """Measured part -> its layer's name (see the module docstring).

    Args:
        model: the module whose paths name the parts.
        weight_of: each measured part (a module path, an activation site, a parameter name) ->
            its weight layer's path, or None when it has none (it ran before every weight layer).
    """
    modules, weights = dict(model.named_modules()), weight_layers(model)
    names = {part: layer_unit(modules, weights, weight) if weight else part for part, weight in weight_of.items()}
    shared = Counter(names.values())
    return {part: name if shared[name] == 1 else part for part, name in names.items()}


def own_weight_layer(model: nn.Module, part: str) -> str | None:
    """``part`` when it is a weight layer of ``model``, the owner when it is a weight parameter, else None."""
    modules = dict(model.named_modules())
    if part in modules:
        return part if part and is_weight_layer(modules[part]) else None
    owner = parameter_owner(part)
    return owner if owner in modules and is_weight_layer(modules[owner]) else None


class LastWeightLayer:
    """Forward pre-hooks on a model's weight layers: ``last`` is the path of the one called most recently."""

    def __init__(self) -> None:
        self.last: str | None = None

    def hook(self, name: str) -> Any:
        def enter(module: nn.Module, inputs: Any) -> None:
            self.last = name

        return enter


@contextmanager
def tracking_weight_layers(model: nn.Module) -> Iterator[LastWeightLayer]:
    """Inside the block, ``tracker.last`` is the weight layer the forward called last (None before any)."""
    tracker = LastWeightLayer()
    handles = [module.register_forward_pre_hook(tracker.hook(name), prepend=True)
               for name, module in model.named_modules() if name and is_weight_layer(module)]
    try:
        yield tracker
    finally:
        for handle in handles:
            handle.remove()


class _FirstCallWeightLayer:
    """Forward pre-hook on one module: notes the weight layer called last before the module's first call."""

    def __init__(self, tracker: LastWeightLayer, weight_of: dict[str, str | None], name: str) -> None:
        self.tracker, self.weight_of, self.name = tracker, weight_of, name

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        self.weight_of.setdefault(self.name, self.tracker.last)


@contextmanager
def weight_layers_before(model: nn.Module, parts: list[str]) -> Iterator[dict[str, str | None]]:
    """Inside the block, the dict fills with each module of ``parts`` (paths) -> the weight layer the forward
    called last before the module's first call (None before any); parts never called are absent."""
    weight_of: dict[str, str | None] = {}
    modules = dict(model.named_modules())
    with tracking_weight_layers(model) as tracker:
        handles = [modules[name].register_forward_pre_hook(_FirstCallWeightLayer(tracker, weight_of, name))
                   for name in parts]
        try:
            yield weight_of
        finally:
            for handle in handles:
                handle.remove()
