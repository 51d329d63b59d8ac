"""Datamodules: embedded MNIST-5k, torchvision MNIST/Fashion-MNIST/CIFAR, and synthetic data."""

from normzoo.data.base import ImageTensorDataset, NormZooDataModule
from normzoo.data.image import ImageDataModule, stratified_split
from normzoo.data.sources import DATASETS, DatasetUnavailableError, dataset_info, load_mnist5k, load_torchvision
from normzoo.data.synthetic import SyntheticDataModule

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
