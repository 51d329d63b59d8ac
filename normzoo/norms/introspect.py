"""What kind of layer a module is: every question normzoo asks of a norm layer, answered here.

Models, ``replace_norm``/``freeze_norm``/``recalibrate_bn``, the batch-statistics guards, the
BN batch-size report, the diagnostics and ``SpeedUp`` all ask the layer itself through these
functions, never a list of norm names, so a user's own norm gets the same treatment as a
built-in one by declaring class attributes (the ``NormLayer`` protocol below). torch's norm
classes need no declarations: their answers follow from their class.

- ``is_norm``: a norm layer (torch's BatchNorm, InstanceNorm, GroupNorm, LayerNorm, or a
  class declaring ``normzoo_norm = True``); the norm tools act on it as a whole.
- ``uses_batch_statistics``: it normalizes with statistics over the batch (BatchNorm-family).
- ``keeps_mean_and_variance``: it normalizes eval inputs with running mean and variance buffers.
- ``cancels_bias``: it subtracts a per-channel mean, so a bias right before it is redundant.
- ``slow_in_channels_last``: its eager kernels lose speed in channels-last memory format.
- ``brings_activation``: its output has been through its own nonlinearity (a norm-activation layer:
  FRN+TLU, EvoNorm), so models put no activation of their own after it.
- ``features_and_dims``: the ``(num_features, dims)`` a registered norm needs to replace it.
- ``surrogate_gradients``, ``first_order_only``: the layers of a model whose derivatives are not
  the exact first or second derivatives of their forward, with the reason (for Hessian tools).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from normzoo.errors import ConfigError

_TORCH_NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
"""torch's norm classes: norm layers without declaring anything."""

_SLOW_CHANNELS_LAST = (nn.GroupNorm, nn.InstanceNorm2d)
"""torch norms whose eager kernels lose speed in channels-last (GN on one H100: 20.3k -> 19.1k img/s)."""


class NormLayer(Protocol):
    """The protocol of a norm layer of one's own: what its class declares so normzoo treats it as a norm.

    Required, for the norm tools (``norm_layers``, ``replace_norm``, ``freeze_norm``) to act on it:

    - ``normzoo_norm = True`` (class attribute): the module is a norm layer, handled as a
      whole (the search for norm layers does not descend into it);
    - ``num_features`` and ``dims`` (attributes): the channels or features it normalizes, and
      its input layout, 1 for ``(N, C)`` vectors and 2 for ``(N, C, H, W)`` maps, which is
      what a registered norm needs to replace it.

    Optional class attributes, each False when absent (torch's norm classes have theirs from
    their class: see the functions of this module):

    - ``cancels_bias``: it subtracts a per-channel mean, so models build the layer before
      it without a bias;
    - ``batch_statistics``: it normalizes with statistics over the batch (while training,
      and in eval too unless it keeps running statistics); the single-value guard and the
      BN batch-size report then watch it, and ``sync_batchnorm`` gives it a ``process_group``
      if it is a ``BatchStatNorm``;
    - ``slow_channels_last``: its eager kernels are slower in channels-last, so ``SpeedUp``
      does not switch an uncompiled model to that layout;
    - ``brings_activation``: a norm-activation layer (timm's ``norm_act`` layers are the
      precedent): its forward ends in its own nonlinearity, which replaces the activation a
      model would put after the norm. Its constructor then also takes ``apply_act: bool``;
      with ``apply_act=False`` it is the layer without its nonlinearity (the layer's own choice:
      FRN without TLU, EvoNorm its affine alone), for the places where a model has no
      activation after the norm (a ResNet's last norm before the residual addition, its
      shortcut). Models ask ``normzoo.models.layers.norm_then_activation`` for the pair.

    Optional class attributes saying, in a sentence, why autograd's derivatives through the
    layer are not exact (empty when absent; torch's norm classes have exact ones):

    - ``surrogate_gradient``: its backward is deliberately not the derivative of its forward
      (Batch Renormalization holds r and d constant), so gradchecks fail by design and its
      second derivatives are those of the surrogate;
    - ``first_order_only``: it cannot be differentiated twice (a hand-written backward marked
      ``torch.autograd.function.once_differentiable``, a non-differentiable kernel).

    A batch-statistics layer keeps running statistics (``recalibrate_bn`` re-estimates them
    and ``RunningStatsConvergence`` watches them) when it has ``running_mean`` and
    ``running_var`` tensors (the unbiased variance, PyTorch's convention) and a true
    ``track_running_stats``.
    """

    normzoo_norm: ClassVar[bool]
    num_features: int
    dims: int
    cancels_bias: ClassVar[bool]
    batch_statistics: ClassVar[bool]
    slow_channels_last: ClassVar[bool]
    brings_activation: ClassVar[bool]
    surrogate_gradient: ClassVar[str]
    first_order_only: ClassVar[str]


def _declared(module: nn.Module, flag: str) -> bool | None:
    """The value of a class attribute of ``NormLayer`` that ``module``'s class declares, or None."""
    value = getattr(type(module), flag, None)
    return None if value is None else bool(value)


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a norm layer: a torch norm, or a class declaring ``normzoo_norm = True``."""
    return getattr(type(module), "normzoo_norm", False) is True or isinstance(module, _TORCH_NORMS)


def uses_batch_statistics(module: nn.Module) -> bool:
    """Whether ``module`` normalizes with batch statistics: torch's BatchNorms, or as ``batch_statistics`` declares."""
    declared = _declared(module, "batch_statistics")
    return declared if declared is not None else isinstance(module, _BatchNorm)


def keeps_mean_and_variance(module: nn.Module | None) -> bool:
    """Whether ``module`` normalizes eval inputs with running mean and variance buffers (BN-style).

    A torch BN uses its buffers in eval mode whenever it has them, also after
    ``track_running_stats`` was switched off to freeze it (Lightning's ``BaseFinetuning.freeze``);
    other batch-statistics layers use them only while they track.
    """
    if module is None or not isinstance(getattr(module, "running_var", None), torch.Tensor):
        return False
    if not isinstance(getattr(module, "running_mean", None), torch.Tensor):
        return False
    if isinstance(module, _BatchNorm):
        return True
    return uses_batch_statistics(module) and bool(getattr(module, "track_running_stats", False))


def cancels_bias(norm: nn.Module) -> bool:
    """Whether ``norm`` subtracts a per-channel mean, making a bias right before it redundant.

    True for BatchNorm (per-channel batch mean), InstanceNorm (per-sample, per-channel mean)
    and GroupNorm with one channel per group, or as the class declares. LayerNorm and
    GroupNorm with larger groups subtract a mean shared by several channels, so a
    per-channel bias still matters there.
    """
    declared = _declared(norm, "cancels_bias")
    if declared is not None:
        return declared
    if isinstance(norm, (_BatchNorm, _InstanceNorm)):
        return True
    return isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels


def slow_in_channels_last(module: nn.Module) -> bool:
    """Whether ``module``'s eager kernels lose speed in channels-last: GroupNorm, InstanceNorm2d, or as declared."""
    declared = _declared(module, "slow_channels_last")
    return declared if declared is not None else isinstance(module, _SLOW_CHANNELS_LAST)


def brings_activation(module: nn.Module) -> bool:
    """Whether ``module`` is a norm-activation layer whose forward ends in its own nonlinearity (as declared).

    Checked on the built module: one built with ``apply_act=False`` answers False.
    """
    return bool(getattr(type(module), "brings_activation", False)) and bool(getattr(module, "apply_act", True))


def surrogate_gradients(model: nn.Module) -> dict[str, str]:
    """The layers of ``model`` (by path, ``""`` for ``model`` itself) whose class declares ``surrogate_gradient``.

    Their backward is deliberately not the derivative of their forward, so a gradcheck fails
    and a Hessian-vector product is that of the surrogate gradient, not of the loss.
    """
    return _declared_reasons(model, "surrogate_gradient")


def first_order_only(model: nn.Module) -> dict[str, str]:
    """The layers of ``model`` (by path) that cannot be differentiated twice, with the reason their class declares.

    A Hessian-vector product, a gradient penalty or ``torch.autograd.gradgradcheck`` through
    any of them raises, so a tool needing second derivatives checks this first and names them.
    """
    return _declared_reasons(model, "first_order_only")


def _declared_reasons(model: nn.Module, flag: str) -> dict[str, str]:
    """``{path: reason}`` for each module of ``model`` whose class sets ``flag`` to a non-empty sentence."""
    return {name: reason for name, module in model.named_modules() if (reason := getattr(type(module), flag, ""))}


def features_and_dims(module: nn.Module) -> tuple[int, int]:
    """``(num_features, dims)`` of a norm layer, as the registry needs them to build its replacement.

    Raises:
        ConfigError: the layer's input layout has no registry ``dims`` (BatchNorm3d,
            InstanceNorm1d, SyncBatchNorm, a multi-dimensional LayerNorm, ...), or a class
            declaring ``normzoo_norm = True`` lacks ``num_features`` or ``dims``.
    """
    if getattr(type(module), "normzoo_norm", False) is True:
        try:
            return int(module.num_features), int(module.dims)
        except AttributeError as error:
            raise ConfigError(
                "its class declares normzoo_norm = True, so it must have the attributes "
                f"num_features and dims ({error})."
            ) from None
    if isinstance(module, nn.BatchNorm1d):
        return module.num_features, 1
    if isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)):
        return module.num_features, 2
    if isinstance(module, nn.GroupNorm):
        return module.num_channels, 2
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return module.normalized_shape[0], 1
    raise ConfigError(
        "normzoo's norms take feature vectors (N, C) or conv maps (N, C, H, W), and this "
        "layer's input layout is neither (or cannot be told from the layer)."
    )
