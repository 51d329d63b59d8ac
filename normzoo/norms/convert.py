"""Operations on the norm layers of an existing model: swap them, freeze them, recalibrate BN.

They work on any ``nn.Module`` (normzoo's backbones and LightningModules, torchvision
models, user networks), so an experiment can take a built or trained model and ask what
its normalization contributes:

- ``replace_norm(model, "gn")`` swaps every norm layer for a registered norm, in place;
- ``freeze_norm(model)`` fixes norm layers (eval mode, no gradients) through training,
  even when Lightning calls ``model.train()`` every epoch; ``unfreeze_norm`` undoes it;
- ``recalibrate_bn(model, loader)`` re-estimates BatchNorm population statistics exactly
  under the current weights, layer by layer in forward order.

A norm layer is a torch BatchNorm, InstanceNorm, GroupNorm or LayerNorm, normzoo's
``NoisyBatchNorm`` (handled as a whole: its inner BN is not a layer of its own here), or
any module whose class declares ``normzoo_norm = True`` (it then provides ``num_features``
and ``dims`` attributes for ``replace_norm``). The search does not descend into a norm layer.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from normzoo.batches import batch_inputs
from normzoo.errors import ConfigError
from normzoo.norms.layers import NoisyBatchNorm
from normzoo.norms.registry import NormConstructor, get_norm_layer
from normzoo.norms.traits import keeps_mean_and_variance

_FREEZE_HANDLE = "_normzoo_freeze_handle"
"""Attribute of a frozen norm layer holding the handle of its freeze hook."""

_NORM_CLASSES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm, NoisyBatchNorm)


# --------------------------------------------------------------------------- finding norms


def _declares_norm(module: nn.Module) -> bool:
    """Whether ``module``'s class declares itself a norm layer with ``normzoo_norm = True``."""
    return getattr(type(module), "normzoo_norm", False) is True


def _is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a norm layer (see the module docstring for the list)."""
    return _declares_norm(module) or isinstance(module, _NORM_CLASSES)


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every outermost norm layer of ``model`` by path: the layers replace_norm and freeze_norm act on."""
    return list(_norm_layers(model))


def _norm_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(path, layer)`` for every outermost norm layer of ``model``; ``""`` is the model itself.

    A module shared by several parents is yielded once per path, so a swap reaches all of them.
    """
    if _is_norm(model):
        yield "", model
        return
    yield from _child_norm_layers(model, "")


def _child_norm_layers(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """The norm layers below ``module``, without descending into norm layers."""
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if _is_norm(child):
            yield path, child
        else:
            yield from _child_norm_layers(child, path)


def _describe(path: str, module: nn.Module) -> str:
    """``"Layer 'path' (Class)"`` for error messages; the root model has no path."""
    where = f"'{path}'" if path else "<model>"
    return f"Layer {where} ({type(module).__name__})"


def _features_and_dims(module: nn.Module) -> tuple[int, int]:
    """``(num_features, dims)`` of a norm layer, as the registry needs them.

    Raises:
        ConfigError: the layer's input layout has no registry ``dims`` (BatchNorm3d,
            InstanceNorm1d, SyncBatchNorm, a multi-dimensional LayerNorm, ...).
    """
    if _declares_norm(module):
        try:
            return int(module.num_features), int(module.dims)
        except AttributeError as error:
            raise ConfigError(
                "its class declares normzoo_norm = True, so it must have the attributes "
                f"num_features and dims ({error})."
            ) from None
    if isinstance(module, NoisyBatchNorm):
        return _features_and_dims(module.bn)
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


# --------------------------------------------------------------------------- replace_norm


def replace_norm(model: nn.Module, name: str, **options: Any) -> nn.Module:
    """Swap every norm layer of ``model``, in place, for the registered norm ``name``.

    Turns a model built (or trained) with one normalization into the same network with
    another, e.g. a torchvision ResNet with BatchNorm into one with GroupNorm, so norms
    can be compared on architectures normzoo does not build itself. Each new layer keeps
    the old one's channel count, device, dtype and training mode; ``none`` gives
    ``nn.Identity``. Nothing else changes: a conv or linear layer before the norm keeps
    (or keeps lacking) its bias.

    ``dims`` follows the old layer: 1 (feature vectors) for BatchNorm1d and a LayerNorm over
    one dimension, 2 (conv maps) for BatchNorm2d, InstanceNorm2d and GroupNorm. A GroupNorm
    applied to feature vectors (an MLP built with ``gn``) is thus taken for conv maps, and a
    BatchNorm1d over sequences ``(N, C, L)`` for feature vectors; such a model fails at its
    first forward after a swap to a norm that needs the other layout.

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
    targets = list(_norm_layers(model))
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


def _build_replacement(path: str, old: nn.Module, constructors: dict[int, NormConstructor]) -> nn.Module:
    """The new layer for ``old``, placed like it; a ConfigError naming the layer if impossible."""
    try:
        num_features, dims = _features_and_dims(old)
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


# --------------------------------------------------------------------------- freeze_norm


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
    Freezing a frozen layer does nothing.

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
    for _, module in _norm_layers(model):
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


# --------------------------------------------------------------------------- recalibrate_bn


class _StopForward(Exception):
    """Raised by a capture hook once its layer's input is recorded: the rest of the forward is not needed."""


class _CallOrder:
    """Forward pre-hook shared by all BN layers: records the order of their first calls."""

    def __init__(self) -> None:
        self.layers: list[nn.Module] = []
        self._seen: set[int] = set()

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if id(module) not in self._seen:
            self._seen.add(id(module))
            self.layers.append(module)


class _InputMoments:
    """Forward pre-hook: per-channel count, sum and sum of squares of a BN layer's input, then stop.

    Sums run in float64 over the batch and spatial dimensions, of the input minus a
    per-channel shift (the first batch's mean), which keeps the variance exact even when
    the mean is large compared with the spread. Each batch also leaves a flag, on the
    input's device, saying whether its sum of squares is finite (False for an input holding
    a NaN or an inf): read only when the totals turn out non-finite, so a clean pass costs
    no extra device synchronization.
    """

    def __init__(self) -> None:
        self.count = 0
        self.batches = 0
        self.shift: Tensor | None = None
        self.sum: Tensor | None = None
        self.sum_sq: Tensor | None = None
        self.batch_finite: list[Tensor] = []

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0].detach()
        device = x.device if x.device.type != "mps" else torch.device("cpu")  # MPS has no float64
        channels = x.transpose(0, 1).reshape(x.shape[1], -1).to(device=device, dtype=torch.float64)
        if self.shift is None:
            self.shift = channels.mean(dim=1)
            self.sum = torch.zeros_like(self.shift)
            self.sum_sq = torch.zeros_like(self.shift)
        centered = channels - self.shift[:, None]
        batch_sq = centered.square().sum(dim=1)
        self.sum += centered.sum(dim=1)
        self.sum_sq += batch_sq
        self.batch_finite.append(torch.isfinite(batch_sq).all())
        self.count += channels.shape[1]
        self.batches += 1
        raise _StopForward

    def finite(self) -> bool:
        """Whether the sums are finite: False once any batch's input held a NaN or an inf (one device sync)."""
        assert self.sum is not None and self.sum_sq is not None
        return bool(torch.isfinite(self.sum).all() & torch.isfinite(self.sum_sq).all())

    def first_non_finite_batch(self) -> int | None:
        """Index (from 0) of the first batch whose input held a NaN or an inf; None if no batch's did."""
        bad = (~torch.stack(self.batch_finite)).nonzero()
        return int(bad[0, 0]) if len(bad) else None

    def mean_and_unbiased_var(self) -> tuple[Tensor, Tensor]:
        """Population mean and variance with the N/(N-1) correction (PyTorch's running_var)."""
        assert self.shift is not None and self.sum is not None and self.sum_sq is not None
        offset = self.sum / self.count
        biased = (self.sum_sq / self.count - offset.square()).clamp_min(0.0)
        return self.shift + offset, biased * (self.count / (self.count - 1))


def recalibrate_bn(model: nn.Module, dataloader: Iterable[Any], num_batches: int | None = None) -> nn.Module:
    """Re-estimate every BatchNorm layer's running statistics exactly, under the current weights.

    The running averages kept during training lag behind the weights (and noise, batch
    size or a ``replace_norm``/weight edit can make them stale); BN's eval-mode output is
    only as good as them. This sets each layer's ``running_mean`` and ``running_var`` to the
    population mean and unbiased variance (PyTorch's ``running_var`` convention) of the
    layer's input over ``dataloader``, with the model in eval mode: one layer at a time,
    in forward order, so each layer sees inputs normalized by the already recalibrated
    statistics of the layers before it, as it will at evaluation. ``num_batches_tracked``
    grows by the number of batches used. Covers every ``_BatchNorm`` with
    ``track_running_stats`` (``NoisyBatchNorm``'s inner BN included, with its noise off)
    and normzoo's ``bn_manual`` and ``batch_renorm``; the l_p norms keep a running l_p
    scale rather than a variance and are left as they are.

    Frozen layers are recalibrated too, since they normalize with their running statistics
    at evaluation: those of ``freeze_norm`` and torch BNs whose ``track_running_stats`` was
    switched off after construction, as Lightning's ``BaseFinetuning.freeze(module,
    train_bn=False)`` does (they stop updating their buffers, yet still normalize with them
    in eval mode). They stay frozen: training modes, ``track_running_stats``,
    ``requires_grad`` and ``freeze_norm``'s hook are left as they were.

    Cost: one forward pass to find the order, then one pass over the data per layer, each
    cut short right after the layer's input is recorded, and one device synchronization per
    layer to check its input was finite. The dataloader is iterated once per layer plus
    once, so it must be re-iterable (a DataLoader, not a generator); use one without
    shuffling or augmentation for the exact population of a fixed dataset (``num_batches``
    with a shuffled loader gives each layer a different sample). Layers that the forward
    pass does not reach keep their statistics (with a warning naming them). Training modes
    are restored and the hooks removed even if an error interrupts it; the layers
    recalibrated before the error keep their new statistics, the failing layer and those
    after it keep their old ones.

    Args:
        model: any module whose forward takes the batch's inputs.
        dataloader: batches that are input tensors, ``(inputs, targets, ...)`` tuples/lists, or
            dicts whose input is found by key in any order (``{"image": x, "label": y}``, see
            ``normzoo.batches.batch_inputs``); inputs are moved to the model's device.
        num_batches: use only the first ``num_batches`` batches for each layer; None for all.

    Returns:
        ``model``, recalibrated in place.

    Raises:
        ConfigError: ``num_batches`` is not positive, the dataloader is a one-shot iterator
            or yields no batches, a batch's input cannot be found, a layer receives fewer
            than 2 values per channel, or a layer's input holds a NaN or an inf (the message
            names the layer and the first such batch; the layer's statistics are left as they were).

    Example::

        loader = DataLoader(train_set, batch_size=256)  # no shuffling: the exact population
        recalibrate_bn(model, loader)
        trainer.test(model, test_loader)
    """
    if num_batches is not None and num_batches < 1:
        raise ConfigError(f"num_batches must be a positive number of batches or None, got {num_batches!r}.")
    if isinstance(dataloader, Iterator):
        raise ConfigError(
            "recalibrate_bn reads the data once per BatchNorm layer (plus once), so it needs a "
            f"re-iterable dataloader (a DataLoader, a list of batches), not a one-shot {type(dataloader).__name__}."
        )
    layers = [m for m in model.modules() if keeps_mean_and_variance(m)]
    if not layers:
        return model
    modes = [(m, m.training) for m in model.modules()]
    device = _placement(model)[0] or torch.device("cpu")
    names = {id(m): name or "<model>" for name, m in model.named_modules()}
    try:
        model.eval()
        with torch.no_grad():
            ordered = _forward_order(model, layers, names, dataloader, device)
            for layer in ordered:
                _recalibrate_layer(model, layer, names[id(layer)], dataloader, num_batches, device)
    finally:
        for module, training in modes:
            module.training = training
    return model


def _model_input(batch: Any, device: torch.device) -> Tensor:
    """The input tensor of a batch (read by ``normzoo.batches.batch_inputs``), on ``device``."""
    try:
        inputs = batch_inputs(batch, fix="pass batches of input tensors (a loader mapping each batch to its inputs)")
    except ConfigError as error:
        raise ConfigError(f"recalibrate_bn: {error}") from None
    return inputs.to(device)


def _forward(model: nn.Module, batch: Any, device: torch.device) -> None:
    """Run ``model`` on a batch's inputs; a capture hook's ``_StopForward`` ends it early."""
    try:
        model(_model_input(batch, device))
    except _StopForward:
        pass


def _forward_order(
    model: nn.Module,
    layers: list[nn.Module],
    names: dict[int, str],
    dataloader: Iterable[Any],
    device: torch.device,
) -> list[nn.Module]:
    """The BN layers in the order the first batch's forward pass calls them; warns about unreached ones by path."""
    order = _CallOrder()
    handles = [layer.register_forward_pre_hook(order, prepend=True) for layer in layers]
    try:
        batches = 0
        for batch in itertools.islice(dataloader, 1):
            _forward(model, batch, device)
            batches += 1
    finally:
        for handle in handles:
            handle.remove()
    if not batches:
        raise ConfigError("recalibrate_bn got a dataloader that yields no batches.")
    called = {id(layer) for layer in order.layers}
    unreached = [f"'{names[id(layer)]}'" for layer in layers if id(layer) not in called]
    if unreached:
        warnings.warn(
            f"recalibrate_bn: {len(unreached)} BatchNorm layer(s) were not called by the forward pass and "
            f"keep their running statistics: {', '.join(unreached)}.",
            UserWarning,
            stacklevel=3,
        )
    return order.layers


def _recalibrate_layer(
    model: nn.Module,
    layer: nn.Module,
    name: str,
    dataloader: Iterable[Any],
    num_batches: int | None,
    device: torch.device,
) -> None:
    """Set one BN layer's running statistics to the population statistics of its input.

    Nothing is written unless the input had at least 2 values per channel, all of them finite.
    """
    moments = _InputMoments()
    handle = layer.register_forward_pre_hook(moments, prepend=True)
    try:
        for batch in itertools.islice(dataloader, num_batches):
            _forward(model, batch, device)
    finally:
        handle.remove()
    if moments.count < 2:
        raise ConfigError(
            f"recalibrate_bn: BatchNorm layer '{name}' received {moments.count} value(s) per channel over "
            f"{moments.batches} batch(es); its statistics need at least 2. Pass a dataloader with more "
            "data, and a re-iterable one (a DataLoader, not a generator): it is read once per layer."
        )
    if not moments.finite():
        first = moments.first_non_finite_batch()
        where = f", first in batch index {first} (counting from 0)" if first is not None else ""
        raise ConfigError(
            f"recalibrate_bn: the input of BatchNorm layer '{name}' held non-finite values (NaN or inf){where}; "
            "its running statistics are left as they were. Check the data and the part of the model before "
            "that layer (any layers before it were recalibrated)."
        )
    mean, var = moments.mean_and_unbiased_var()
    layer.running_mean.copy_(mean)
    layer.running_var.copy_(var)
    if isinstance(layer.num_batches_tracked, Tensor):
        layer.num_batches_tracked.add_(moments.batches)
