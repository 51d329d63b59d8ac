"""Diagnostics on a compiled model measure what they measure on the eager one.

A compiled module ignores forward hooks added after compilation, so each measurement runs
the model eagerly (``probe.eager_calls``); without that, the hooks saw nothing.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from normzoo.callbacks import (
    ActivationDrift,
    DeadUnits,
    GradientFlow,
    GradientICS,
    LossLandscape,
    RunningStatsConvergence,
)
from normzoo.models import MLPClassifier
from normzoo.speed import SpeedUp, compile_unavailable
from normzoo.tags import diagnostic_callback


class MemoryLogger(Logger):
    """Keeps every logged metric, by step."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[tuple[str, int], float] = {}

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.update({(name, int(step or 0)): float(value) for name, value in metrics.items()})


def diagnostics() -> list[L.Callback]:
    return [ActivationDrift(every_n_steps=2, percentiles=(15, 50, 85)), DeadUnits(every_n_steps=2),
            RunningStatsConvergence(every_n_steps=2), GradientFlow(every_n_steps=2),
            GradientICS(every_n_steps=2), LossLandscape(every_n_steps=2, num_points=3)]


def measured(compile_: bool, trainer_kwargs) -> dict[tuple[str, int], float]:
    L.seed_everything(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=generator) * 2 + 1
    data = DataLoader(TensorDataset(x, (x[:, 0] > 1).long()), batch_size=16)
    model = MLPClassifier(input_shape=(6,), num_classes=2, depth=2, width=12, norm="bn", activation="sigmoid")
    logger = MemoryLogger()
    callbacks = [*diagnostics(), SpeedUp(compile=compile_)]
    trainer = L.Trainer(**trainer_kwargs(max_steps=6, logger=logger, log_every_n_steps=2, callbacks=callbacks))
    trainer.fit(model, data)
    assert (getattr(model, "_compiled_call_impl", None) is not None) == compile_
    return {key: value for key, value in logger.metrics.items() if diagnostic_callback(key[0])}


@pytest.mark.skipif(compile_unavailable(torch.device("cpu")) is not None, reason="torch.compile unavailable")
def test_every_diagnostic_measures_the_same_on_a_compiled_model(trainer_kwargs):
    eager = measured(False, trainer_kwargs)
    compiled = measured(True, trainer_kwargs)
    families = {diagnostic_callback(name) for name, _ in eager}
    assert families == {"activation_drift", "dead_units", "running_stats", "gradient_flow", "gradient_ics",
                        "loss_landscape"}
    assert compiled.keys() == eager.keys()
    for key, value in eager.items():
        assert compiled[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key
