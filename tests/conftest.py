"""Shared test settings: deterministic, quiet, CPU-only Lightning runs."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


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
