"""``replace_norm``: swap every norm layer of an existing model for a registered norm, in place."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from normzoo.errors import ConfigError
from normzoo.norms.find import norm_layers
from normzoo.norms.introspect import features_and_dims
from normzoo.norms.registry import NormConstructor, get_norm_layer


def replace_norm(model: nn.Module, name: str, **options: Any) -> nn.Module:
    """Swap every norm layer of ``model``, in place, for the registered norm ``name``.

    Turns a model built (or trained) with one normalization into the same network with
    another, e.g. a torchvision ResNet with BatchNorm into one with GroupNorm, so norms
    can be compared on architectures normzoo does not build itself. Each new layer keeps
    the old one's channel count, device, dtype and training mode; ``none`` gives
    ``nn.Identity``. Nothing else changes: a conv or linear layer before the norm keeps
    (or keeps lacking) its bias. The layers swapped are those of ``norm_layers``.

    ``dims`` follows the old layer: 1 (feature vectors) for BatchNorm1d and a LayerNorm over
    one dimension, 2 (conv maps) for BatchNorm2d, InstanceNorm2d and GroupNorm, and a
    declared norm's own ``dims`` (see ``normzoo.norms.introspect.features_and_dims``). A
    GroupNorm applied to feature vectors (an MLP built with ``gn``) is thus taken for conv
    maps, and a BatchNorm1d over sequences ``(N, C, L)`` for feature vectors; such a model
    fails at its first forward after a swap to a norm that needs the other layout.

    Every new layer is built before any is swapped, so a refused swap leaves the model as it
    was. Learned running statistics and affine parameters of the old layers are dropped
    (with one warning if any layer had seen a batch): retrain, or at least recalibrate. A
    model without norm layers is returned unchanged, with a warning saying so.

    Args:
        model: any module; if it is itself a norm layer, the new layer is returned.
        name: a registered norm name (``bn``, ``ln``, ``in``, ``gn``, ``none``, ``noisy_bn``, ...).
        **options: options of the norm, as in ``get_norm_layer`` (``num_groups=8`` for gn).

    Returns:
        ``model`` with its norm layers replaced (or the new layer, if ``model`` was one).

    Raises:
        UnknownNormError: ``name`` is not registered.
        ConfigError: ``options`` names an option the norm lacks, or a layer cannot take the
            new norm; the message names the layer's path and the reason.

    Example::

        import torchvision
        model = replace_norm(torchvision.models.resnet18(weights=None), "gn", num_groups=16)
        assert type(model.bn1) is nn.GroupNorm
    """
    # resolving both layouts up front reports an unknown name or option as it is, for any model
    constructors = {dims: get_norm_layer(name, dims=dims, **options) for dims in (1, 2)}
    replacements: dict[int, nn.Module] = {}
    targets = norm_layers(model)
    if not targets:
        warnings.warn(
            f"replace_norm({name!r}): {type(model).__name__} has no norm layer to replace, so it is returned "
            "unchanged. A model built without norms (norm='none') has none; to add norms, build it with norm=...",
            UserWarning,
            stacklevel=2,
        )
    for path, old in targets:
        if id(old) not in replacements:
            replacements[id(old)] = _build_replacement(path, old, constructors)
    if any(_has_learned_statistics(old) for _, old in targets):
        warnings.warn(
            f"replace_norm({name!r}): some replaced layers had learned running statistics "
            "(BatchNorm-like layers); learned BN statistics and the old layers' affine "
            "parameters do not carry over to the new layers. Retrain or fine-tune the model.",
            UserWarning,
            stacklevel=2,
        )
    for path, old in targets:
        if not path:
            return replacements[id(old)]
        parent_path, _, child_name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), child_name, replacements[id(old)])
    return model


def _describe(path: str, module: nn.Module) -> str:
    """``"Layer 'path' (Class)"`` for error messages; the root model has no path."""
    where = f"'{path}'" if path else "<model>"
    return f"Layer {where} ({type(module).__name__})"


def _build_replacement(path: str, old: nn.Module, constructors: dict[int, NormConstructor]) -> nn.Module:
    """The new layer for ``old``, placed like it; a ConfigError naming the layer if impossible."""
    try:
        num_features, dims = features_and_dims(old)
    except ConfigError as error:
        raise ConfigError(f"{_describe(path, old)} cannot be replaced: {error}") from None
    if dims not in constructors:
        raise ConfigError(f"{_describe(path, old)} declares dims={dims!r}; normzoo's norms take 1 or 2.")
    try:
        new = constructors[dims](num_features)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{_describe(path, old)}: {error}") from error
    device, dtype = _placement(old)
    new.to(device=device, dtype=dtype)
    return new.train(old.training)


def _placement(module: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    """The device and floating dtype of ``module``'s parameters and buffers (None if it has none)."""
    tensors = list(itertools.chain(module.parameters(), module.buffers()))
    device = tensors[0].device if tensors else None
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), None)
    return device, dtype


def _has_learned_statistics(module: nn.Module) -> bool:
    """Whether ``module`` holds running statistics updated by at least one batch.

    Any ``num_batches_tracked`` buffer counts (torch's BatchNorm and InstanceNorm, and
    normzoo's own batch-statistics layers, which follow the same convention).
    """
    for m in module.modules():
        tracked = getattr(m, "num_batches_tracked", None)
        if isinstance(tracked, Tensor) and tracked.numel() == 1 and int(tracked) > 0:
            return True
    return False
