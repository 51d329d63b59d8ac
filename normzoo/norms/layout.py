"""The two input layouts a norm layer takes, by its ``dims``: ``(N, C)`` feature vectors (1), ``(N, C, H, W)`` maps (2).

One check for a layer's ``dims`` and one for an input against a layer's ``num_features`` and ``dims``,
so every layer refuses a wrong one with the same message.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from normzoo.errors import ConfigError


def check_dims(dims: int) -> None:
    """Refuse a ``dims`` other than 1 (feature vectors) or 2 (conv maps)."""
    if dims not in (1, 2):
        raise ConfigError(f"dims must be 1 (feature vectors) or 2 (conv maps), got {dims!r}.")


def check_layout(layer: Any, x: Tensor) -> None:
    """Refuse an input whose layout is not ``layer``'s ``(N, C)`` or ``(N, C, H, W)`` with its C.

    ``layer`` has ``num_features`` and ``dims`` (the ``NormLayer`` protocol).
    """
    if x.dim() != (2 if layer.dims == 1 else 4) or x.shape[1] != layer.num_features:
        layout = "(N, C)" if layer.dims == 1 else "(N, C, H, W)"
        raise ConfigError(
            f"{type(layer).__name__}(num_features={layer.num_features}, dims={layer.dims}) expects inputs of "
            f"shape {layout} with C={layer.num_features}, got {tuple(x.shape)}."
        )
