"""DeviceImageLoader: the DataLoader path's order and augmentation, made per batch on the device."""

from __future__ import annotations

import copy
from collections import Counter
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler

from normzoo.data import ImageDataModule
from normzoo.data.device_loader import DeviceImageLoader
from normzoo.data.image_tensors import ImageTensorDataset, random_crop_flip
from normzoo.data.image_tensors import random_crop_flip as crop_flip_batch
from normzoo.models import MLPClassifier


def dataset(count: int = 50, augment: bool = False) -> ImageTensorDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8, generator=generator)
    return ImageTensorDataset(images, torch.arange(count), mean=(0.5,), std=(0.25,), augment=augment)


def sampler(data, replicas: int = 1, rank: int = 0) -> DistributedSampler:
    return DistributedSampler(data, num_replicas=replicas, rank=rank, shuffle=True, seed=3)


def test_batches_equal_the_cpu_dataloaders_epoch_after_epoch():
    data = dataset()
    device_sampler, cpu_sampler = sampler(data), sampler(data)
    device_loader = DeviceImageLoader(data, 16, device_sampler, "cpu")
    cpu_loader = DataLoader(data, batch_size=16, sampler=cpu_sampler)
    assert len(device_loader) == len(cpu_loader) == 4
    for epoch in (0, 1):
        device_sampler.set_epoch(epoch)
        cpu_sampler.set_epoch(epoch)
        for (x, y), (cx, cy) in zip(device_loader, cpu_loader, strict=True):
            torch.testing.assert_close(x, cx, rtol=0, atol=0)
            assert torch.equal(y, cy)
    epoch_orders = []
    for epoch in (0, 1):
        device_sampler.set_epoch(epoch)
        epoch_orders.append(torch.cat([y for _, y in device_loader]))
    assert not torch.equal(*epoch_orders)  # reshuffled


def test_two_ranks_cover_every_sample_once_per_epoch():
    data = dataset(count=48)
    seen = torch.cat([y for rank in (0, 1) for _, y in DeviceImageLoader(data, 5, sampler(data, 2, rank), "cpu")])
    assert sorted(seen.tolist()) == list(range(48))
    dropped = DeviceImageLoader(data, 5, sampler(data, 2, 0), "cpu", drop_last=True)
    assert len(dropped) == 4 and all(len(y) == 5 for _, y in dropped)


def test_each_augmented_image_is_one_of_the_cpu_paths_crops():
    image = dataset(count=1).images
    padded = torch.nn.functional.pad(image[0], (4,) * 4)
    candidates = [crop for top in range(9) for left in range(9)
                  for crop in (padded[:, top:top + 8, left:left + 8], padded[:, top:top + 8, left:left + 8].flip(-1))]
    torch.manual_seed(0)
    for crop in crop_flip_batch(image.repeat(64, 1, 1, 1)):
        assert any(torch.equal(crop, candidate) for candidate in candidates)


def test_augmentation_matches_the_cpu_paths_distribution():
    """Where one marked pixel lands: the same 9 x 9 offsets x flip, each about equally often."""
    image = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    image[0, 0, 1, 2] = 255
    draws = 8000
    torch.manual_seed(0)
    device_positions = Counter(_marker(crop) for crop in crop_flip_batch(image.repeat(draws, 1, 1, 1)))
    cpu_positions = Counter(_marker(random_crop_flip(image[0])) for _ in range(draws))
    assert set(device_positions) == set(cpu_positions)
    for position in cpu_positions:
        assert abs(device_positions[position] - cpu_positions[position]) / draws < 0.02, position


def _marker(crop: torch.Tensor) -> tuple[int, int] | None:
    found = (crop[0] == 255).nonzero()
    return tuple(found[0].tolist()) if len(found) else None


class StepRecorder(L.Callback):
    def __init__(self) -> None:
        self.loader_types: list[str] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.loader_types.append(type(trainer.train_dataloader).__name__)


def test_training_on_device_data_equals_the_cpu_dataloader(trainer_kwargs):
    trained = {}
    for device_data in (False, None):
        L.seed_everything(0)
        model = MLPClassifier(depth=1, width=16, norm="bn")
        recorder = StepRecorder()
        data = ImageDataModule("mnist5k", batch_size=64, device_data=device_data)
        L.Trainer(**trainer_kwargs(max_steps=70, limit_val_batches=0, callbacks=[recorder])).fit(model, data)
        trained[device_data] = (copy.deepcopy(model.state_dict()), recorder.loader_types)
    assert trained[None][1] == ["DeviceImageLoader", "DeviceImageLoader"]  # 70 steps: into a second epoch
    assert trained[False][1] == ["ResumableDataLoader", "ResumableDataLoader"]  # a DataLoader that resumes mid-epoch
    for name, value in trained[False][0].items():
        torch.testing.assert_close(trained[None][0][name], value, msg=name)



def loader_types(data: ImageDataModule) -> list[str]:
    return [type(make()).__name__ for make in (data.train_dataloader, data.val_dataloader,
                                               data.test_dataloader, data.predict_dataloader)]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, ["DeviceImageLoader"] * 4),  # the default for in-memory data on the CPU
        ({"device_data": True, "num_workers": 1}, ["DeviceImageLoader"] * 4),
        ({"num_workers": 1}, ["ResumableDataLoader"] + ["DataLoader"] * 3),  # workers asked for: per-sample path
        ({"device_data": False}, ["ResumableDataLoader"] + ["DataLoader"] * 3),
    ],
)
def test_cpu_default_is_the_tensor_loader_unless_workers_or_false(trainer_kwargs, settings, expected):
    data = ImageDataModule("mnist5k", **settings)
    data.trainer = L.Trainer(**trainer_kwargs())
    data.setup("fit")
    assert loader_types(data) == expected


@pytest.fixture(scope="module")
def mnist5k() -> ImageDataModule:
    data = ImageDataModule("mnist5k", batch_size=64, eval_batch_size=128)
    data.setup("fit")
    return data


def assert_same_batches(device_loader, cpu_loader) -> None:
    assert len(device_loader) == len(cpu_loader)
    for (x, y), (cx, cy) in zip(device_loader, cpu_loader, strict=True):
        assert torch.equal(x, cx) and torch.equal(y, cy)


@pytest.mark.parametrize("split", ["val", "test", "predict"])
def test_one_process_eval_batches_equal_the_dataloaders_and_cover_each_sample_once(mnist5k, split):
    mnist5k.device_data = None
    device_loader = getattr(mnist5k, f"{split}_dataloader")()
    mnist5k.device_data = False
    cpu_loader = getattr(mnist5k, f"{split}_dataloader")()
    assert isinstance(device_loader, DeviceImageLoader) and isinstance(cpu_loader, DataLoader)
    assert [len(y) for _, y in device_loader] == [128, 128, 128, 116]  # no drop_last
    assert_same_batches(device_loader, cpu_loader)
    dataset = mnist5k.val_set if split == "val" else mnist5k.test_set
    assert list(device_loader.sampler) == list(range(500))
    images = torch.cat([x for x, _ in device_loader])
    torch.testing.assert_close(images, (dataset.images.float() - dataset.mean) / dataset.std, rtol=0, atol=0)


def fake_rank(data: ImageDataModule, world_size: int, rank: int) -> None:
    """Attach the parts of a DDP trainer that the datamodule reads: world size, rank, device."""
    strategy = SimpleNamespace(root_device=torch.device("cpu"))
    data.trainer = SimpleNamespace(world_size=world_size, global_rank=rank, strategy=strategy)


@pytest.mark.parametrize("world_size", [2, 3])  # 500 samples: 3 ranks pad with one repeat
def test_ddp_eval_shards_are_the_ones_lightning_injects(mnist5k, world_size):
    mnist5k.device_data = None
    seen = []
    try:
        for rank in range(world_size):
            fake_rank(mnist5k, world_size, rank)
            for split, dataset in (("val", mnist5k.val_set), ("test", mnist5k.test_set)):
                expected = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
                loader = getattr(mnist5k, f"{split}_dataloader")()
                assert isinstance(loader, DeviceImageLoader) and list(loader.sampler) == list(expected)
                assert_same_batches(loader, DataLoader(dataset, batch_size=128, sampler=expected))
            unpadded = UnrepeatedDistributedSampler(mnist5k.test_set, num_replicas=world_size, rank=rank, shuffle=False)
            assert list(mnist5k.predict_dataloader().sampler) == list(unpadded)
            seen += list(mnist5k.val_dataloader().sampler)
    finally:
        mnist5k.trainer = None
    assert sorted(set(seen)) == list(range(500)) and len(seen) == 500 + (-500) % world_size


def test_fit_validate_test_metrics_are_the_same_on_both_paths(trainer_kwargs):
    metrics = {}
    for device_data in (None, False):
        L.seed_everything(0)
        model = MLPClassifier(depth=1, width=16, norm="bn")
        data = ImageDataModule("mnist5k", batch_size=64, eval_batch_size=100, device_data=device_data)
        trainer = L.Trainer(**trainer_kwargs(max_epochs=1, limit_train_batches=10, limit_val_batches=0.5))
        trainer.fit(model, data)
        expected_type = DataLoader if device_data is False else DeviceImageLoader
        assert isinstance(trainer.val_dataloaders, expected_type)
        assert trainer.num_val_batches == [2]  # a fraction of the 5 batches: Lightning reads len()
        trainer.limit_val_batches = 1.0
        (validated,) = trainer.validate(model, data, verbose=False)
        (tested,) = trainer.test(model, data, verbose=False)
        predictions = torch.cat(trainer.predict(model, data))
        assert predictions.shape == (500, 10)
        metrics[device_data] = (validated, tested, predictions)
    assert metrics[None][0] == metrics[False][0] and metrics[None][1] == metrics[False][1]
    assert torch.equal(metrics[None][2], metrics[False][2])
