"""Datamodules: embedded MNIST-5k, torchvision MNIST/Fashion-MNIST/CIFAR, and synthetic data.

The dataset sources and the in-memory image tensors import torch only; the datamodules (and
with them Lightning) load on first use of their names (PEP 562), so ``from normzoo.data import
ImageDataModule`` and the CLI's ``class_path: normzoo.data.ImageDataModule`` work as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from normzoo.data.image_tensors import ImageTensorDataset
from normzoo.data.sources import DATASETS, DatasetUnavailableError, dataset_info, load_mnist5k, load_torchvision

if TYPE_CHECKING:
    from normzoo.data.base import NormZooDataModule
    from normzoo.data.image import ImageDataModule, stratified_split
    from normzoo.data.synthetic import SyntheticDataModule

_LIGHTNING = {
    "ImageDataModule": "normzoo.data.image",
    "NormZooDataModule": "normzoo.data.base",
    "SyntheticDataModule": "normzoo.data.synthetic",
    "stratified_split": "normzoo.data.image",
}
"""Public names whose modules need Lightning -> those modules, imported on first access."""

_DATAMODULES = ("normzoo.data.image", "normzoo.data.synthetic")
"""Imported together with the first Lightning name, so LightningCLI finds every datamodule by its
short name (``--data ImageDataModule``) among the loaded subclasses of ``NormZooDataModule``."""

__all__ = [
    "DATASETS",
    "DatasetUnavailableError",
    "ImageDataModule",
    "ImageTensorDataset",
    "NormZooDataModule",
    "SyntheticDataModule",
    "dataset_info",
    "load_mnist5k",
    "load_torchvision",
    "stratified_split",
]


def __getattr__(name: str) -> Any:
    if name not in _LIGHTNING:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module in _DATAMODULES:
        importlib.import_module(module)
    value = getattr(importlib.import_module(_LIGHTNING[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LIGHTNING))
