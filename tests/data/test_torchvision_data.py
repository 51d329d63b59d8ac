"""torchvision datasets: real reading code on files in torchvision's layout, clear offline errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
import torchvision.datasets

from normzoo.data import DatasetUnavailableError, ImageDataModule, load_torchvision
from normzoo.errors import ConfigError

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: refused at once, no network needed


def write_idx_mnist(raw_dir, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    (raw_dir / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, rows, cols) + images.tobytes())
    (raw_dir / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def test_mnist_files_in_torchvision_layout_are_read(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = (np.arange(20) % 10).astype(np.uint8)
    write_idx_mnist(tmp_path / "MNIST" / "raw", "train", images, labels)
    write_idx_mnist(tmp_path / "MNIST" / "raw", "t10k", images[:10], labels[:10])
    loaded, targets = load_torchvision("mnist", tmp_path, train=True, download=False)
    assert loaded.shape == (20, 1, 28, 28) and loaded.dtype == torch.uint8
    assert torch.equal(loaded[:, 0], torch.from_numpy(images)) and targets.tolist() == labels.tolist()

    data = ImageDataModule("mnist", data_dir=str(tmp_path), download=False, val_size=10, batch_size=4)
    data.prepare_data()
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (10, 10, 10)


def test_cifar_images_become_channels_first(monkeypatch, tmp_path):
    class FakeCIFAR10:
        def __init__(self, root, train, download):
            self.data = np.zeros((4, 32, 32, 3), dtype=np.uint8)
            self.data[..., 2] = 7
            self.targets = [0, 1, 2, 3]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    images, labels = load_torchvision("cifar10", tmp_path, train=True, download=False)
    assert images.shape == (4, 3, 32, 32) and torch.all(images[:, 2] == 7) and torch.all(images[:, :2] == 0)


def test_missing_dataset_without_download_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetUnavailableError) as error:
        ImageDataModule("mnist", data_dir=str(tmp_path), download=False).prepare_data()
    message = str(error.value)
    assert "download is off" in message and str(tmp_path / "MNIST") in message
    assert "--data.dataset mnist5k" in message and "data.data_dir" in message


@pytest.mark.parametrize(
    ("name", "dataset_class", "attribute", "value"),
    [
        ("mnist", "MNIST", "mirrors", [UNREACHABLE]),
        ("fashion_mnist", "FashionMNIST", "mirrors", [UNREACHABLE]),
        ("cifar10", "CIFAR10", "url", UNREACHABLE + "cifar-10-python.tar.gz"),
        ("cifar100", "CIFAR100", "url", UNREACHABLE + "cifar-100-python.tar.gz"),
    ],
)
def test_offline_download_failure_is_one_clear_message(monkeypatch, tmp_path, name, dataset_class, attribute, value):
    """torchvision's real download code runs; only its server address points nowhere."""
    monkeypatch.setattr(getattr(torchvision.datasets, dataset_class), attribute, value)
    with pytest.raises(DatasetUnavailableError, match=rf"Dataset '{name}' is not in .* downloading failed") as error:
        ImageDataModule(name, data_dir=str(tmp_path), download=True).prepare_data()
    assert "--data.dataset mnist5k" in str(error.value)


def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path):
    not_a_folder = tmp_path / "cifar"
    not_a_folder.write_text("")
    with pytest.raises(ConfigError, match=r"data_dir '.*cifar' is a file, not a folder"):
        load_torchvision("cifar10", not_a_folder, train=True, download=False)
