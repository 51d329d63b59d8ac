"""normzoo: normalization layers, models and diagnostics for studying them the way the papers do.

The public surface: ``normzoo.norms`` (the norm registry and layers), ``normzoo.models``
(plain ``nn.Module`` backbones and the LightningModules), ``normzoo.callbacks`` (the
diagnostics, for any LightningModule), ``normzoo.data`` (datamodules) and ``normzoo.speed``
(the precision default and the ``SpeedUp`` callback); ``normzoo.cli`` is the ``normzoo``
command. Importing the package has no side effects beyond registering the built-in norms.
"""

from normzoo import callbacks, data, models, norms, speed

__version__ = "0.1.0"

__all__ = ["__version__", "callbacks", "data", "models", "norms", "speed"]
