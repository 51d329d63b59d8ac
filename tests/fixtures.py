"""Data shared by the tests: small seeded Gaussian classification sets, one definition.

Every draw comes from its own ``torch.Generator`` (seed 0 unless given), so a test's data
does not depend on what ran before it.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

MAPS_ONLY_NORMS = ("in", "evonorm_b0", "frn")
"""Registry keys that refuse feature vectors (dims=1) with a ConfigError: their statistics run over H, W."""


def gaussian_data(
    n: int,
    shape: tuple[int, ...] | int,
    num_classes: int,
    *,
    scale: float = 1.0,
    shift: float = 0.0,
    labels: Callable[[Tensor], Tensor] | None = None,
    seed: int = 0,
) -> TensorDataset:
    """``n`` inputs ``x = scale * N(0, 1) + shift`` of ``shape``, with random labels (or ``labels(x)``)."""
    shape = (shape,) if isinstance(shape, int) else shape
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=generator) * scale + shift
    y = labels(x) if labels is not None else torch.randint(0, num_classes, (n,), generator=generator)
    return TensorDataset(x, y)


def gaussian_loader(
    n: int,
    shape: tuple[int, ...] | int,
    num_classes: int,
    *,
    batch_size: int = 16,
    shuffle: bool = False,
    **data_options,
) -> DataLoader:
    """A ``DataLoader`` over ``gaussian_data(n, shape, num_classes, **data_options)``."""
    return DataLoader(gaussian_data(n, shape, num_classes, **data_options), batch_size=batch_size, shuffle=shuffle)


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str, monkeypatch) -> ModuleType:
    """``scripts/<name>.py`` as a module, registered in ``sys.modules`` while the test runs (dataclasses need it)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module
