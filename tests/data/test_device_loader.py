"""DeviceImageLoader: the CPU path's order and augmentation, made per batch on the device."""

from __future__ import annotations

import copy
from collections import Counter

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from normzoo.data import ImageDataModule
from normzoo.data.base import ImageTensorDataset, random_crop_flip
from normzoo.data.device_loader import DeviceImageLoader, crop_flip_batch
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
    for device_data in (False, True):
        L.seed_everything(0)
        model = MLPClassifier(depth=1, width=16, norm="bn")
        recorder = StepRecorder()
        data = ImageDataModule("mnist5k", batch_size=64, device_data=device_data)
        L.Trainer(**trainer_kwargs(max_steps=70, limit_val_batches=0, callbacks=[recorder])).fit(model, data)
        trained[device_data] = (copy.deepcopy(model.state_dict()), recorder.loader_types)
    assert trained[True][1] == ["DeviceImageLoader", "DeviceImageLoader"]  # 70 steps: into a second epoch
    assert trained[False][1] == ["DataLoader", "DataLoader"]
    for name, value in trained[False][0].items():
        torch.testing.assert_close(trained[True][0][name], value, msg=name)
