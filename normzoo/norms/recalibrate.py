"""``recalibrate_bn``: BatchNorm running statistics set to the exact population statistics under the current weights."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from normzoo.batches import batch_inputs
from normzoo.errors import ConfigError, DataError
from normzoo.norms.forward_order import forward_order
from normzoo.norms.introspect import keeps_mean_and_variance
from normzoo.norms.moments import PopulationMoments


class _StopForward(Exception):
    """Raised by a capture hook once its layer's input is recorded: the rest of the forward is not needed."""


class _CaptureInput:
    """Forward pre-hook: folds the layer's input into ``moments``, then ends the forward pass."""

    def __init__(self) -> None:
        self.moments = PopulationMoments()

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.moments.add(inputs[0])
        raise _StopForward


def recalibrate_bn(model: nn.Module, dataloader: Iterable[Any], num_batches: int | None = None) -> nn.Module:
    """Re-estimate every BatchNorm layer's running statistics exactly, under the current weights.

    The running averages kept during training lag behind the weights (and noise, batch
    size or a ``replace_norm``/weight edit can make them stale); BN's eval-mode output is
    only as good as them. This sets each layer's ``running_mean`` and ``running_var`` to the
    population mean and unbiased variance (PyTorch's ``running_var`` convention) of the
    layer's input over ``dataloader``, with the model in eval mode: one layer at a time,
    in forward order, so each layer sees inputs normalized by the already recalibrated
    statistics of the layers before it, as it will at evaluation. ``num_batches_tracked``
    grows by the number of batches used. Covers every layer that ``keeps_mean_and_variance``:
    each ``_BatchNorm`` with ``track_running_stats`` (``NoisyBatchNorm``'s inner BN included,
    with its noise off) and normzoo's ``bn_manual`` and ``batch_renorm``; the l_p norms keep
    a running l_p scale rather than a variance and are left as they are. The moments are
    float64 sums shifted by the first batch's mean (``normzoo.norms.moments``), exact even
    when a channel's mean is large against its spread.

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
            dicts whose input is found by key in any order (``{"image": x, "label": y}``), as
            ``normzoo.batches.batch_inputs`` reads them; inputs are moved to the model's device.
        num_batches: use only the first ``num_batches`` batches for each layer; None for all.

    Returns:
        ``model``, recalibrated in place.

    Raises:
        ConfigError: ``num_batches`` is not positive, the dataloader is a one-shot iterator,
            or a batch's input cannot be found (``batch_inputs``'s error, naming recalibrate_bn).
        DataError: the dataloader yields no batches, a layer receives fewer than 2 values per
            channel, or a layer's input holds a NaN or an inf (the message names the layer and
            the first such batch; the layer's statistics are left as they were).

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
    layers = {name or "<model>": m for name, m in model.named_modules() if keeps_mean_and_variance(m)}
    if not layers:
        return model
    modes = [(m, m.training) for m in model.modules()]
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    try:
        model.eval()
        with torch.no_grad():
            for name in _forward_order(model, layers, dataloader, device):
                _recalibrate_layer(model, layers[name], name, dataloader, num_batches, device)
    finally:
        for module, training in modes:
            module.training = training
    return model


def _forward(model: nn.Module, batch: Any, device: torch.device) -> None:
    """Run ``model`` on a batch's inputs; a capture hook's ``_StopForward`` ends it early."""
    try:
        inputs = batch_inputs(batch, fix="pass batches of input tensors (a loader mapping each batch to its inputs)")
    except ConfigError as error:
        raise type(error)(f"recalibrate_bn: {error}") from None
    try:
        model(inputs.to(device))
    except _StopForward:
        pass


def _forward_order(
    model: nn.Module, layers: dict[str, nn.Module], dataloader: Iterable[Any], device: torch.device
) -> list[str]:
    """The BN layers' names in the order the first batch's forward pass calls them; warns about unreached ones."""
    batches = 0
    with forward_order(layers) as order:
        for batch in itertools.islice(dataloader, 1):
            _forward(model, batch, device)
            batches += 1
    if not batches:
        raise DataError("recalibrate_bn got a dataloader that yields no batches.")
    unreached = [f"'{name}'" for name in layers if name not in order]
    if unreached:
        warnings.warn(
            f"recalibrate_bn: {len(unreached)} BatchNorm layer(s) were not called by the forward pass and "
            f"keep their running statistics: {', '.join(unreached)}.",
            UserWarning,
            stacklevel=3,
        )
    return order


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
    capture = _CaptureInput()
    handle = layer.register_forward_pre_hook(capture, prepend=True)
    try:
        for batch in itertools.islice(dataloader, num_batches):
            _forward(model, batch, device)
    finally:
        handle.remove()
    moments = capture.moments
    if moments.count < 2:
        raise DataError(
            f"recalibrate_bn: BatchNorm layer '{name}' received {moments.count} value(s) per channel over "
            f"{moments.batches} batch(es); its statistics need at least 2. Pass a dataloader with more "
            "data, and a re-iterable one (a DataLoader, not a generator): it is read once per layer."
        )
    if not moments.finite():
        first = moments.first_non_finite_batch()
        where = f", first in batch index {first} (counting from 0)" if first is not None else ""
        raise DataError(
            f"recalibrate_bn: the input of BatchNorm layer '{name}' held non-finite values (NaN or inf){where}; "
            "its running statistics are left as they were. Check the data and the part of the model before "
            "that layer (any layers before it were recalibrated)."
        )
    mean, var = moments.mean_and_var()
    layer.running_mean.copy_(mean)
    layer.running_var.copy_(var)
    if isinstance(layer.num_batches_tracked, Tensor):
        layer.num_batches_tracked.add_(moments.batches)
