"""1,000 steps with every callback measuring every 50 steps: no tensor outlives its measurement.

Live tensors are counted through the garbage collector's view of the process (tensors and
the bytes of their distinct storages) after the first measurements and again near the end;
a callback that kept activations, gradients, weight snapshots or hooks per measurement
would show as growth. On a GPU machine the allocator's ``memory_allocated`` is compared too.
"""

from __future__ import annotations

import gc

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from normzoo import callbacks as diagnostics
from normzoo.models import MLPClassifier
from tests.callbacks.histories import measured_steps

CHECKPOINTS = (200, 600, 900)
"""Steps in the same phase of every cycle (an epoch's first batch, a measuring step), so the
census compares like with like: Lightning's own per-epoch bookkeeping holds a few scalars
differently at other points of an epoch."""


def live_tensors() -> tuple[int, int]:
    """How many tensors are alive, and the bytes of their distinct storages."""
    gc.collect()
    tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor) and has_data(obj)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in tensors if t.device.type != "meta"}
    return len(tensors), sum(storages.values())


def has_data(tensor: torch.Tensor) -> bool:
    """False for the FakeTensors / FunctionalTensors that torch.compile (other tests) leaves in its caches."""
    try:
        tensor.untyped_storage().data_ptr()
    except RuntimeError:
        return False
    return True


class TensorCensus(L.Callback):
    def __init__(self) -> None:
        self.counts: dict[int, tuple[int, int]] = {}
        self.allocated: dict[int, int] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step - 1  # the step that just ran
        if step in CHECKPOINTS:
            self.counts[step] = live_tensors()
            if torch.cuda.is_available():
                self.allocated[step] = torch.cuda.memory_allocated()


@pytest.mark.slow
def test_a_thousand_steps_with_every_callback_do_not_grow_memory(tmp_path, trainer_kwargs):
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(320, 8, generator=generator) * 2, torch.randint(0, 4, (320,), generator=generator)
    model = MLPClassifier(input_shape=(8,), num_classes=4, depth=3, width=32, activation="tanh", norm="noisy_bn")
    census = TensorCensus()
    callbacks = [
        diagnostics.ActivationDrift(every_n_steps=50, probe_size=16),
        diagnostics.DeadUnits(every_n_steps=50, probe_size=16),
        diagnostics.GradientFlow(every_n_steps=50),
        diagnostics.RunningStatsConvergence(every_n_steps=50, probe_size=16),
        diagnostics.GradientICS(every_n_steps=50),
        diagnostics.LossLandscape(every_n_steps=50),
        census,
    ]
    logger = TensorBoardLogger(tmp_path, name="memory", default_hp_metric=False)
    L.Trainer(**trainer_kwargs(max_steps=1000, callbacks=callbacks, logger=logger)).fit(
        model, DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True))
    for callback in callbacks[:-1]:
        assert measured_steps(callback.history) == set(range(0, 1000, 50)), type(callback).__name__
    first, *later = (census.counts[step] for step in CHECKPOINTS)
    assert all(count <= first[0] and size <= first[1] for count, size in later), census.counts
    if census.allocated:
        assert max(census.allocated.values()) <= census.allocated[CHECKPOINTS[0]], census.allocated
