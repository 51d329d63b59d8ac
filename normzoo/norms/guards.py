"""Guards that turn a norm's too-few-values failure into an error naming the layer.

torch raises ``Expected more than 1 value per channel when training`` (BatchNorm) or
``Expected more than 1 spatial element`` (InstanceNorm) from deep inside its functional
code, without saying which layer or what to do. The guards check the input shape
(metadata only, no host sync) before each such layer runs.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.utils.hooks import RemovableHandle

from normzoo.errors import BatchStatisticsError
from normzoo.norms.introspect import uses_batch_statistics


class _SingleValueGuard:
    """Forward pre-hook for one named norm layer (a class, so models stay picklable)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0]
        if x.dim() < 2:
            return
        kind = type(module).__name__
        uses_input_stats = module.training or not getattr(module, "track_running_stats", False)
        if uses_batch_statistics(module) and uses_input_stats and x.numel() == x.shape[1]:
            raise BatchStatisticsError(
                f"BatchNorm layer '{self.name}' ({kind}) got 1 value per channel "
                f"(input shape {tuple(x.shape)}): batch statistics need at least 2. Fixes: "
                "train with a batch size of 2 or more (normzoo's training loaders drop a last "
                "batch of 1), use a batch-independent norm (norm: ln, gn, in or none), or put "
                "the model in eval mode (for layers with running statistics)."
            )
        if isinstance(module, _InstanceNorm) and uses_input_stats and x[0, 0].numel() == 1:
            raise BatchStatisticsError(
                f"InstanceNorm layer '{self.name}' ({kind}) got a 1x1 map per channel (input "
                f"shape {tuple(x.shape)}): instance statistics need more than one spatial "
                "position. Fixes: use larger inputs (e.g. data.pad_to: 32, or CIFAR-sized "
                "images for VGG), a shallower network, or another norm (gn, ln, bn)."
            )


def guard_batch_statistics(model: nn.Module) -> list[RemovableHandle]:
    """Attach the guard to every layer that ``uses_batch_statistics`` and every InstanceNorm; returns the handles."""
    return [
        module.register_forward_pre_hook(_SingleValueGuard(name))
        for name, module in model.named_modules()
        if uses_batch_statistics(module) or isinstance(module, _InstanceNorm)
    ]
