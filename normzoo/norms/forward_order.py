"""The order in which a forward pass first calls a model's modules.

Registration order is not forward order (normzoo's DenseBlock registers its norm before
its linear layer; ResNet shortcuts run after the main path), so code that needs "the
layers before layer i" (``recalibrate_bn``, the ``GradientICS`` diagnostic) reads it from
an actual forward pass with ``forward_order``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import nn


class _FirstCalls:
    """Forward pre-hook shared by the watched modules: appends a module's name at its first call.

    A class rather than a closure, so a model holding it stays picklable and deep-copyable.
    """

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.order: list[str] = []
        self._seen: set[int] = set()

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if id(module) not in self._seen:
            self._seen.add(id(module))
            self.order.append(self.names[id(module)])


@contextmanager
def forward_order(modules: Mapping[str, nn.Module]) -> Iterator[list[str]]:
    """Names of ``modules`` in the order forward passes inside the block first call them.

    The list fills as the block runs; modules never called are absent. Each module gets a
    forward pre-hook placed before its other hooks (so a hook that ends the forward early
    does not hide the call), and every hook is removed when the block exits, also on an error.

    Args:
        modules: the modules to watch, by name (e.g. a selection of ``dict(model.named_modules())``);
            a module listed under several names is recorded under the first.

    Example::

        with forward_order(dict(model.named_modules())) as order:
            model(x)
        first_called = order[0]
    """
    unique = {id(module): (name, module) for name, module in reversed(list(modules.items()))}
    recorder = _FirstCalls({key: name for key, (name, _) in unique.items()})
    handles = [module.register_forward_pre_hook(recorder, prepend=True) for _, module in unique.values()]
    try:
        yield recorder.order
    finally:
        for handle in handles:
            handle.remove()
