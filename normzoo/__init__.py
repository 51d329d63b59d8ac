"""normzoo: normalization layers, models and diagnostics for studying them the way the papers do.

The public surface: ``normzoo.norms`` (the norm registry and layers), ``normzoo.models``
(plain ``nn.Module`` backbones and the LightningModules), ``normzoo.callbacks`` (the
diagnostics, for any LightningModule), ``normzoo.data`` (datamodules) and ``normzoo.speed``
(the precision default and the ``SpeedUp`` callback); ``normzoo.cli`` is the ``normzoo``
command. Each subpackage is imported on first use (``normzoo.callbacks`` works after a
plain ``import normzoo``), so ``import normzoo.norms`` costs no Lightning import. Importing
a package has no side effects beyond registering the built-in norms.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

__all__ = ["__version__", "callbacks", "data", "models", "norms", "speed"]

_SUBMODULES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> ModuleType:
    """The subpackage ``normzoo.<name>``, imported on first access."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)
