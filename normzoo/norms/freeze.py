"""``freeze_norm`` and ``unfreeze_norm``: norm layers in eval mode with no gradients, through any training loop."""

from __future__ import annotations

from typing import Any

from torch import nn

from normzoo.norms.find import norm_layers

_FREEZE_HANDLE = "_normzoo_freeze_handle"
"""Attribute of a frozen norm layer holding the handle of its freeze hook."""


class _KeepFrozen:
    """Forward pre-hook of a frozen norm layer: puts it (and its children) in eval mode.

    A class rather than a closure so frozen models stay picklable and deep-copyable. It
    also remembers the parameters' ``requires_grad`` flags for ``unfreeze_norm``.
    """

    def __init__(self, requires_grad: dict[str, bool]) -> None:
        self.requires_grad = requires_grad

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        module.train(False)


def freeze_norm(model: nn.Module) -> nn.Module:
    """Freeze every norm layer of ``model``: no gradients, and eval mode for good.

    A frozen layer normalizes with its running statistics (BatchNorm) and keeps them and
    its affine parameters bit-identical through training, e.g. to fine-tune the rest of a
    network with small batches, or to test what BN's learned statistics contribute. The
    eval mode outlives ``model.train()`` (which Lightning calls every epoch): a forward
    pre-hook switches the layer back to eval before each of its forwards. Parameters get
    ``requires_grad=False``, so ``configure_optimizers`` that filter on it skip them.
    Freezing a frozen layer does nothing. The layers frozen are those of ``norm_layers``.

    Args:
        model: any module (a LightningModule included).

    Returns:
        ``model``, frozen in place.

    Raises:
        Nothing of its own.

    Example::

        model = freeze_norm(MLPClassifier(norm="bn"))
        lightning.Trainer(max_epochs=1).fit(model, loader)  # BN statistics stay as they were
    """
    for _, module in norm_layers(model):
        if hasattr(module, _FREEZE_HANDLE):
            continue
        requires_grad = {name: p.requires_grad for name, p in module.named_parameters()}
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        handle = module.register_forward_pre_hook(_KeepFrozen(requires_grad), prepend=True)
        setattr(module, _FREEZE_HANDLE, handle)
        module.eval()
    return model


def unfreeze_norm(model: nn.Module) -> nn.Module:
    """Undo ``freeze_norm``: remove the eval hooks and give the parameters their gradients back.

    Each unfrozen layer takes its parent's training mode now, and follows the parent's
    ``train()``/``eval()`` from then on. ``requires_grad`` returns to what it was before
    freezing (True for a normally built model).

    Args:
        model: a module frozen (wholly or in parts) by ``freeze_norm``; other modules are left alone.

    Returns:
        ``model``, unfrozen in place.

    Raises:
        Nothing of its own.

    Example::

        model = unfreeze_norm(freeze_norm(model))  # training updates BN statistics again
    """
    for path, module in list(model.named_modules()):
        handle = getattr(module, _FREEZE_HANDLE, None)
        if handle is None:
            continue
        hook = module._forward_pre_hooks.get(handle.id)
        requires_grad = hook.requires_grad if isinstance(hook, _KeepFrozen) else {}
        handle.remove()
        delattr(module, _FREEZE_HANDLE)
        for name, parameter in module.named_parameters():
            parameter.requires_grad_(requires_grad.get(name, True))
        if path:
            module.train(model.get_submodule(path.rpartition(".")[0]).training)
    return model
