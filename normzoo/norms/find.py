"""Finding the norm layers of any model: the layers that ``replace_norm`` and ``freeze_norm`` act on.

A norm layer is what ``normzoo.norms.introspect.is_norm`` says: torch's BatchNorm,
InstanceNorm, GroupNorm and LayerNorm, and every class declaring ``normzoo_norm = True``
(normzoo's own layers, noisy BN as a whole, a user's norm). The search does not descend
into a norm layer, so noisy BN's inner BatchNorm is not a layer of its own here.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from normzoo.norms.introspect import is_norm


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every outermost norm layer of ``model`` as ``(path, layer)``; ``""`` is the model itself.

    A module shared by several parents is listed once per path, so a swap reaches all of them.

    Example::

        norm_layers(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))  # [('1', BatchNorm1d(4, ...))]
    """
    if is_norm(model):
        return [("", model)]
    return list(_child_norm_layers(model, ""))


def _child_norm_layers(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """The norm layers below ``module``, without descending into norm layers."""
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if is_norm(child):
            yield path, child
        else:
            yield from _child_norm_layers(child, path)
