"""The fit's own training and validation batches, read again in the middle of a fit without changing the fit.

A diagnostic that needs more data than the batch at hand (BN statistics over many training
batches, a pass over the validation set) reads the trainer's dataloaders a second time. Done
naively, that changes the run it measures:

- a ``DataLoader`` with ``persistent_workers`` hands out one shared iterator, and a second
  ``iter()`` resets the one that training is consuming; here such a loader is read through a
  shallow copy with its own workers, shut down afterwards;
- a shuffling loader's ``torch.Generator`` (``DataLoader(generator=...)``, its sampler's)
  advances with every new iterator, so the next epoch would shuffle differently; here their
  states are put back afterwards. The global random generators are the caller's to restore
  (``normzoo.callbacks.probe.preserved_state``).

Batches come out as the LightningModule's steps get them: moved to the device through its
batch-transfer hooks (``on_before_batch_transfer``, ``transfer_batch_to_device``,
``on_after_batch_transfer``), with the trainer's stage set to validating while validation
batches are read, so hooks that augment only while training leave them alone. Several training
loaders are combined as Lightning's default ``max_size_cycle`` does; of several validation
loaders, the first is read. A sampler or dataset with state of its own (a stateful streaming
dataset) is not rewound.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch.utils.data import DataLoader

Batches = Iterator[tuple[int, Any]]
"""``(batch_idx, batch on the device)`` pairs."""


def validation_loader(trainer: L.Trainer) -> Any | None:
    """The fit's first validation dataloader, or None when the fit has none (yet, or at all)."""
    loaders = trainer.val_dataloaders
    if loaders is None:
        return None
    flattened = CombinedLoader(loaders).flattened
    if not flattened or not trainer.num_val_batches or not trainer.num_val_batches[0]:
        return None
    return flattened[0]


def batch_limit(requested: int | None, available: int | float) -> int | None:
    """``requested`` batches capped to the ``available`` ones (Lightning's count, maybe ``inf``); None for all."""
    if available == float("inf"):
        return requested
    return int(available) if requested is None else min(requested, int(available))


@contextmanager
def training_batches(trainer: L.Trainer, limit: int | None) -> Iterator[Batches]:
    """The first ``limit`` training batches of a fresh pass over the fit's training dataloader(s)."""
    with _reread(trainer, trainer.train_dataloader, "max_size_cycle", limit, RunningStage.TRAINING) as batches:
        yield batches


@contextmanager
def validation_batches(trainer: L.Trainer, limit: int | None) -> Iterator[Batches]:
    """The first ``limit`` batches of the fit's first validation dataloader, read as validation reads them."""
    with _reread(trainer, validation_loader(trainer), "sequential", limit, RunningStage.VALIDATING) as batches:
        yield batches


@contextmanager
def _reread(trainer: L.Trainer, loaders: Any, mode: str, limit: int | None, stage: RunningStage) -> Iterator[Batches]:
    combined = CombinedLoader(loaders, mode)
    combined.flattened = [_own_iterator(loader) for loader in combined.flattened]
    generators = {id(g): g for loader in combined.flattened for g in _generators(loader)}
    states = [(g, g.get_state()) for g in generators.values()]
    previous = trainer.state.stage
    trainer.state.stage = stage
    try:
        with ExitStack() as restarts:  # samplers that resume from the run's position read a whole pass
            for loader in combined.flattened:
                if hasattr(sampler := getattr(loader, "sampler", None), "from_the_start"):
                    restarts.enter_context(sampler.from_the_start())
            yield ((index, trainer.strategy.batch_to_device(batch, dataloader_idx=loader_idx))
                   for batch, index, loader_idx in itertools.islice(combined, limit))
    finally:
        trainer.state.stage = previous
        combined.reset()  # the copies' workers shut down; the fit's own loaders hold no iterator of ours
        for generator, state in states:
            generator.set_state(state)


def _own_iterator(loader: Any) -> Any:
    """``loader``, or a shallow copy with its own workers where a new ``iter()`` would reset the fit's iterator."""
    if isinstance(loader, DataLoader) and loader.persistent_workers and loader.num_workers > 0:
        clone = copy.copy(loader)
        clone._iterator = None
        return clone
    return loader


def _generators(loader: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` objects that a new iterator of ``loader`` draws from (its own, its samplers')."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    holders = [loader, getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)]
    return [g for holder in holders if isinstance(g := getattr(holder, "generator", None), torch.Generator)]
