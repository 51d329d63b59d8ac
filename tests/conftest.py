"""Shared test settings: deterministic, quiet, CPU-only Lightning runs."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
# One intra-op thread, here and in every subprocess a test starts (a fit launched by the CLI, a DDP rank): the
# tests' tensors are tiny, so a second thread only adds synchronization (the suite ran ~20% faster), and a test
# comparing an in-process fit with a subprocess one needs both to sum floats in the same order.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def quiet_trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    """Trainer arguments for a short, silent CPU run without files."""
    kwargs: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def trainer_kwargs():
    return quiet_trainer_kwargs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.gpu`` tests on machines without CUDA (run them on the device)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
