"""normzoo: normalization layers, models and diagnostics for studying them the way the papers do.

Subpackages: ``normzoo.norms`` (the norm registry and layers), ``normzoo.models``
(backbones and LightningModules), ``normzoo.data`` (datamodules), ``normzoo.cli``
(the ``normzoo`` command). Importing the package has no side effects beyond registering
the built-in norms.
"""

from normzoo import data, models, norms

__version__ = "0.1.0"

__all__ = ["__version__", "data", "models", "norms"]
