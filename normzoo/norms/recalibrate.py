"""``recalibrate_bn``: BatchNorm running statistics re-estimated under the current weights, exactly.

Two estimators, both from float64 moments shifted by a mean (``normzoo.norms.moments``):

- ``"population"``: the pooled mean and variance of each layer's input over the data, in eval
  mode, layer by layer, so each layer sees what it will see at evaluation;
- ``"batch_average"``: precise BN (Wu & Johnson 2021, fvcore's ``update_bn_stats``): the average,
  over many training batches, of the mean and unbiased variance of each batch, as the layers
  compute them in training. That is what PyTorch's running averages estimate, without their lag.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from normzoo.batches import batch_inputs
from normzoo.errors import ConfigError, DataError
from normzoo.norms.forward_order import forward_order
from normzoo.norms.introspect import keeps_mean_and_variance
from normzoo.norms.moments import PopulationMoments, channel_mean

ESTIMATORS = ("population", "batch_average")
"""The estimators ``recalibrate_bn`` offers (see the module docstring)."""

Reduce = Callable[[Tensor], Tensor]
"""``reduce(tensor) -> tensor summed over processes``: how ``recalibrate_bn`` adds up the ranks' sums."""


def syncs_batch_statistics(module: nn.Module) -> bool:
    """Whether ``module``'s forward now normalizes with batch statistics reduced over processes (synchronized BN).

    torch's ``SyncBatchNorm`` does in training mode, once ``torch.distributed`` is initialized
    with more than one process in its group; normzoo's batch-statistics layers (``BatchStatNorm``)
    do once ``convert_sync_norms`` gave them a process group (their ``syncing``).
    """
    if isinstance(module, nn.SyncBatchNorm):
        if not (module.training and dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size(module.process_group or dist.group.WORLD) > 1
    return getattr(module, "syncing", False) is True


class _StopForward(BaseException):
    """Raised by a capture hook once its layer's input is recorded: the rest of the forward is not needed.

    A ``BaseException``, so that a forward wrapping its work in ``except Exception`` lets it through.
    """


class _CaptureInput:
    """Forward pre-hook: folds the layer's input into ``moments``, then ends the forward pass.

    With ``reduce``, the shift of the moments is the first batch's mean averaged over the
    processes, so that their sums add up.
    """

    def __init__(self, reduce: Reduce | None) -> None:
        self.moments = PopulationMoments()
        self.reduce = reduce

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if self.reduce is not None and self.moments.shift is None:
            mean = channel_mean(inputs[0])
            summed = self.reduce(torch.cat([mean, mean.new_ones(1)]))
            self.moments.shift = summed[:-1] / summed[-1]
        self.moments.add(inputs[0])
        raise _StopForward


class _BatchStatistics:
    """Forward pre-hook: each call in training mode adds its batch's mean and unbiased variance to float64 sums.

    The batch is the one the layer normalizes over: this process's input, or, for a layer that
    syncs its statistics (``syncs_batch_statistics``) and with ``reduce``, the union of every
    process's input (two reductions per call, as the layer's own). Each batch's moments are
    shifted by its own mean. Calls in eval mode (a frozen layer normalizing with its running
    statistics) are counted and otherwise left out. ``batch_finite`` keeps one flag per batch
    on the device, read only on failure.
    """

    def __init__(self, reduce: Reduce | None) -> None:
        self.reduce = reduce
        self.sums: Tensor | None = None
        self.batches = 0
        self.calls = 0
        self.fewest: int | None = None
        self.batch_finite: list[Tensor] = []

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.calls += 1
        if not module.training:
            return
        x = inputs[0]
        if self.reduce is not None and syncs_batch_statistics(module):
            mean, count = channel_mean(x), x.numel() // x.shape[1]
            summed = self.reduce(torch.cat([mean * count, mean.new_full((1,), count)]))
            moments = PopulationMoments(summed[:-1] / summed[-1])
            moments.add(x)
            statistics = torch.stack(moments.mean_and_var(self.reduce(moments.sums)))
        else:
            moments = PopulationMoments()
            moments.add(x)
            self.fewest = moments.count if self.fewest is None else min(self.fewest, moments.count)
            if moments.count < 2:
                return
            statistics = torch.stack(moments.mean_and_var())
        self.batch_finite.append(torch.isfinite(statistics).all())
        self.sums = statistics if self.sums is None else self.sums + statistics
        self.batches += 1

    def first_non_finite_batch(self) -> int | None:
        """Index (from 0, among the training-mode calls) of the first batch whose statistics were NaN or inf."""
        if not self.batch_finite:
            return None
        bad = (~torch.stack(self.batch_finite)).nonzero()
        return int(bad[0, 0]) if len(bad) else None


def recalibrate_bn(
    model: nn.Module,
    dataloader: Iterable[Any],
    num_batches: int | None = None,
    *,
    estimator: str = "population",
    forward: Callable[[Any], Any] | None = None,
    reduce: Reduce | None = None,
) -> nn.Module:
    """Re-estimate every BatchNorm layer's running statistics exactly, under the current weights.

    The running averages kept during training lag behind the weights (and noise, batch
    size or a ``replace_norm``/weight edit can make them stale); BN's eval-mode output is
    only as good as them. This sets each layer's ``running_mean`` and ``running_var``
    (PyTorch's convention: the unbiased variance) to one of two estimates, and
    ``num_batches_tracked`` grows by the number of batches used. Covers every layer that
    ``keeps_mean_and_variance``: each ``_BatchNorm`` with running statistics
    (``NoisyBatchNorm``'s inner BN included) and normzoo's ``bn_manual`` and ``batch_renorm``;
    the l_p norms keep a running l_p scale rather than a variance and are left as they are.
    The moments are float64 sums shifted by a mean (``normzoo.norms.moments``), exact even when a
    channel's mean is large against its spread. Layers that the forward pass does not reach keep
    their statistics (with a warning naming them).

    ``estimator="population"`` (the default): the population mean and unbiased variance of
    the layer's input over all of ``dataloader``, with the model in eval mode: one layer at a
    time, in forward order, so each layer sees inputs normalized by the already recalibrated
    statistics of the layers before it, as it will at evaluation (noisy BN's noise off).
    Frozen layers are recalibrated too, since they normalize with their running statistics at
    evaluation: those of ``freeze_norm`` and torch BNs whose ``track_running_stats`` was
    switched off after construction, as Lightning's ``BaseFinetuning.freeze(module,
    train_bn=False)`` does. They stay frozen: training modes, ``track_running_stats``,
    ``requires_grad`` and ``freeze_norm``'s hook are left as they were. Cost: one forward pass
    to find the order, then one pass over the data per layer, each cut short right after the
    layer's input is recorded, and one device synchronization per layer. The dataloader is
    iterated once per layer plus once, so it must be re-iterable (a DataLoader, not a
    generator); use one without shuffling or augmentation for the exact population of a fixed
    dataset (``num_batches`` with a shuffled loader gives each layer a different sample).

    ``estimator="batch_average"``: precise BN (Wu & Johnson 2021, "Rethinking 'Batch' in
    BatchNorm"; fvcore's ``update_bn_stats``, which averages 200 batches by default): one pass
    over the batches with the model in the modes it has (put it in training mode first), and
    for each layer the average over its training-mode calls of each batch's mean and unbiased
    variance, exactly what PyTorch's running averages estimate, but with equal weights and
    under one set of weights. Each layer sees its input as in training: the layers before it
    normalize with batch statistics, noise and dropout are on. Layers that run in eval mode
    (``freeze_norm``'s) normalize with their running statistics in training too, and keep
    them. Unlike the population estimate, the spread of the batch means around the overall
    mean is not counted in the variance: it is what training normalizes with. Every other
    buffer of the model (the running statistics that the training-mode forwards update, the
    l_p norms' scales) is as it was afterwards; the random generators advance as in those
    forwards. Cost: one forward pass per batch and one device synchronization per layer. One
    pass, so a generator of batches will do.

    Training modes are restored and the hooks removed even if an error interrupts it. With
    ``"population"``, layers recalibrated before an error keep their new statistics, the failing
    layer and those after it keep their old ones; with ``"batch_average"`` an error leaves
    every statistic as it was.

    Args:
        model: any module whose forward takes the batch's inputs (or see ``forward``).
        dataloader: batches that are input tensors, ``(inputs, targets, ...)`` tuples/lists, or
            dicts whose input is found by key in any order (``{"image": x, "label": y}``), as
            ``normzoo.batches.batch_inputs`` reads them; inputs are moved to the model's device.
        num_batches: use only the first ``num_batches`` batches (for each layer); None for all.
        estimator: ``"population"`` or ``"batch_average"`` (see above).
        forward: ``forward(batch)`` runs the model on a batch as given (a LightningModule's
            ``training_step``, say); None for ``model(batch_inputs(batch))`` on the model's device.
        reduce: ``reduce(tensor)`` returns the tensor summed over processes (``all_reduce``), so
            that the statistics are those of every process's batches (with ``"batch_average"``,
            a synced layer's batch is the union of the processes' batches, as it normalizes
            over); every process must then call ``recalibrate_bn`` with as many batches. None:
            this process's batches only.

    Returns:
        ``model``, recalibrated in place.

    Raises:
        ConfigError: ``num_batches`` is not positive, ``estimator`` is unknown, the dataloader is a
            one-shot iterator (``"population"``), or a batch's input cannot be found
            (``batch_inputs``'s error, naming recalibrate_bn).
        DataError: the dataloader yields no batches, a layer receives fewer than 2 values per
            channel (over all its input, or in one training batch), or a layer's input holds a
            NaN or an inf (the message names the layer and the first such batch; the layer's
            statistics are left as they were).

    Example::

        loader = DataLoader(train_set, batch_size=256)  # no shuffling: the exact population
        recalibrate_bn(model, loader)
        trainer.test(model, test_loader)

        model.train()  # precise BN: the statistics training normalizes with, over 200 batches
        recalibrate_bn(model, train_loader, 200, estimator="batch_average")
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"recalibrate_bn: estimator must be one of {', '.join(map(repr, ESTIMATORS))}, "
                          f"got {estimator!r}.")
    if num_batches is not None and (isinstance(num_batches, bool) or num_batches < 1):
        raise ConfigError(f"num_batches must be a positive number of batches or None, got {num_batches!r}.")
    if estimator == "population" and isinstance(dataloader, Iterator):
        raise ConfigError(
            "recalibrate_bn reads the data once per BatchNorm layer (plus once), so it needs a "
            f"re-iterable dataloader (a DataLoader, a list of batches), not a one-shot {type(dataloader).__name__}."
        )
    layers = {name or "<model>": m for name, m in model.named_modules() if keeps_mean_and_variance(m)}
    if not layers:
        return model
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    run = forward if forward is not None else _InputsForward(model, device)
    if estimator == "batch_average":
        with torch.no_grad():
            _recalibrate_from_batches(model, layers, itertools.islice(dataloader, num_batches), run, reduce)
        return model
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            for name in _forward_order(layers, dataloader, run):
                _recalibrate_layer(layers[name], name, dataloader, num_batches, run, reduce)
    finally:
        for module, training in modes:
            module.training = training
    return model


class _InputsForward:
    """The default forward: ``model(batch_inputs(batch))``, on the model's device."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device

    def __call__(self, batch: Any) -> Any:
        fix = "pass batches of input tensors (a loader mapping each batch to its inputs)"
        try:
            inputs = batch_inputs(batch, fix=fix)
        except ConfigError as error:
            raise type(error)(f"recalibrate_bn: {error}") from None
        return self.model(inputs.to(self.device))


def _run(run: Callable[[Any], Any], batch: Any) -> None:
    """Run the model on a batch; a capture hook's ``_StopForward`` ends it early."""
    try:
        run(batch)
    except _StopForward:
        pass


def _forward_order(layers: dict[str, nn.Module], dataloader: Iterable[Any], run: Callable[[Any], Any]) -> list[str]:
    """The BN layers' names in the order the first batch's forward pass calls them; warns about unreached ones."""
    batches = 0
    with forward_order(layers) as order:
        for batch in itertools.islice(dataloader, 1):
            _run(run, batch)
            batches += 1
    if not batches:
        raise DataError("recalibrate_bn got a dataloader that yields no batches.")
    _warn_unreached([name for name in layers if name not in order])
    return order


def _warn_unreached(unreached: list[str]) -> None:
    if unreached:
        warnings.warn(
            f"recalibrate_bn: {len(unreached)} BatchNorm layer(s) were not called by the forward pass and "
            f"keep their running statistics: {', '.join(f'{name!r}' for name in unreached)}.",
            UserWarning,
            stacklevel=4,
        )


def _recalibrate_layer(
    layer: nn.Module,
    name: str,
    dataloader: Iterable[Any],
    num_batches: int | None,
    run: Callable[[Any], Any],
    reduce: Reduce | None,
) -> None:
    """Set one BN layer's running statistics to the population statistics of its input.

    Nothing is written unless the input had at least 2 values per channel, all of them finite.
    """
    capture = _CaptureInput(reduce)
    handle = layer.register_forward_pre_hook(capture, prepend=True)
    try:
        for batch in itertools.islice(dataloader, num_batches):
            _run(run, batch)
    finally:
        handle.remove()
    moments = capture.moments
    sums = moments.sums if reduce is None or moments.sums is None else reduce(moments.sums)
    count = moments.count if reduce is None or sums is None else int(sums[0, 0])
    if count < 2:
        raise DataError(
            f"recalibrate_bn: BatchNorm layer '{name}' received {count} value(s) per channel over "
            f"{moments.batches} batch(es); its statistics need at least 2. Pass a dataloader with more "
            "data, and a re-iterable one (a DataLoader, not a generator): it is read once per layer."
        )
    if not bool(torch.isfinite(sums).all()):
        raise _non_finite(name, moments.first_non_finite_batch(), "", "any layers before it were recalibrated")
    mean, var = moments.mean_and_var(sums)
    _write(layer, mean, var, moments.batches)


def _recalibrate_from_batches(
    model: nn.Module,
    layers: dict[str, nn.Module],
    batches: Iterable[Any],
    run: Callable[[Any], Any],
    reduce: Reduce | None,
) -> None:
    """Set every BN layer's running statistics to the average of its training batches' statistics (one pass)."""
    hooks = {name: _BatchStatistics(reduce) for name in layers}
    handles = [layer.register_forward_pre_hook(hooks[name]) for name, layer in layers.items()]  # after freeze hooks
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    count = 0
    try:
        for batch in batches:
            run(batch)
            count += 1
    finally:
        for handle in handles:
            handle.remove()
        for buffer, value in buffers:  # what the training-mode forwards folded into the buffers is undone
            buffer.copy_(value)
    if not count:
        raise DataError("recalibrate_bn got a dataloader that yields no batches.")
    _warn_unreached([name for name, hook in hooks.items() if hook.calls == 0])
    averages = {}
    for name, layer in layers.items():  # every layer, in one order: the same reductions on every process
        hook = hooks[name]
        if hook.fewest is not None and hook.fewest < 2:
            raise DataError(
                f"recalibrate_bn: BatchNorm layer '{name}' received a training batch with {hook.fewest} value(s) "
                "per channel; a batch's variance needs at least 2. Use larger batches (or drop_last=True)."
            )
        sums = hook.sums if hook.sums is not None else layer.running_mean.new_zeros((2, len(layer.running_mean)),
                                                                                  dtype=torch.float64)
        totals = torch.cat([sums, torch.full_like(sums[:1], hook.batches)])
        totals = totals if reduce is None else reduce(totals)
        batches, finite = torch.stack([totals[2, 0], torch.isfinite(totals).all().double()]).tolist()
        if not finite:
            raise _non_finite(name, hook.first_non_finite_batch(), " in training mode", "no layer was recalibrated")
        if batches:  # else in eval mode in every forward: it keeps the statistics it normalizes with
            averages[name] = (totals[0] / batches, totals[1] / batches, hook.batches)
    for name, (mean, var, batches) in averages.items():
        _write(layers[name], mean, var, batches)


def _non_finite(name: str, first: int | None, during: str, recalibrated: str) -> DataError:
    where = f", first in batch index {first} (counting from 0)" if first is not None else ""
    return DataError(
        f"recalibrate_bn: the input of BatchNorm layer '{name}'{during} held non-finite values (NaN or inf){where}; "
        "its running statistics are left as they were. Check the data and the part of the model before "
        f"that layer ({recalibrated})."
    )


def _write(layer: nn.Module, mean: Tensor, var: Tensor, batches: int) -> None:
    """Store a layer's new running statistics; ``num_batches_tracked`` grows by the batches they come from."""
    layer.running_mean.copy_(mean)
    layer.running_var.copy_(var)
    tracked = getattr(layer, "num_batches_tracked", None)
    if isinstance(tracked, Tensor):
        tracked.add_(batches)
