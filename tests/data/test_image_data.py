"""Image datamodules: the embedded MNIST-5k split, tensors, augmentation, loaders."""

from __future__ import annotations

import pytest
import torch

from normzoo.data import ImageDataModule, ImageTensorDataset, SyntheticDataModule, load_mnist5k, stratified_split


@pytest.fixture(scope="module")
def mnist5k():
    data = ImageDataModule("mnist5k", batch_size=60)
    data.setup("fit")
    return data


def test_mnist5k_is_the_real_embedded_digits():
    images, labels = load_mnist5k()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [500] * 10
    assert 0.10 < images.float().mean() / 255 < 0.16  # MNIST's mean intensity is 0.13


def test_mnist5k_split_is_stratified_disjoint_and_fixed(mnist5k):
    assert (len(mnist5k.train_set), len(mnist5k.val_set), len(mnist5k.test_set)) == (4000, 500, 500)
    for split in (mnist5k.val_set, mnist5k.test_set):
        assert torch.bincount(split.labels).tolist() == [50] * 10
    seen = torch.cat([s.images.flatten(1) for s in (mnist5k.train_set, mnist5k.val_set, mnist5k.test_set)])
    assert len(torch.unique(seen, dim=0)) == len(torch.unique(load_mnist5k()[0].flatten(1), dim=0))
    again = ImageDataModule("mnist5k")
    again.setup("fit")
    assert torch.equal(again.val_set.images, mnist5k.val_set.images)


def test_stratified_split_partitions_the_indices():
    labels = torch.arange(100) % 4
    keep, held = stratified_split(labels, 20)
    assert torch.equal(torch.sort(torch.cat([keep, held])).values, torch.arange(100))
    assert torch.bincount(labels[held]).tolist() == [5] * 4
    with pytest.raises(ValueError, match="multiple of 4"):
        stratified_split(labels, 10)


def test_held_out_batches_sample_every_class_of_data_sorted_by_class(mnist5k):
    """MNIST-5k is sorted by class; its validation and test loaders must not be, for batch-dependent evaluation."""
    assert torch.equal(load_mnist5k()[1], torch.arange(10).repeat_interleave(500))  # sorted by class
    for loader in (mnist5k.val_dataloader(), mnist5k.test_dataloader()):
        for _, labels in loader:
            if len(labels) >= 100:
                assert len(labels.unique()) == 10
    keep, _ = stratified_split(torch.arange(100) % 4, 20)
    assert torch.equal(keep, keep.sort().values)  # the training part keeps the data's order (loaders shuffle it)


def test_items_are_normalized_floats(mnist5k):
    x, y = mnist5k.train_set[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    batch = torch.stack([mnist5k.train_set[i][0] for i in range(500)])
    assert abs(batch.mean()) < 0.1 and abs(batch.std() - 1) < 0.1


def test_pad_to_gives_cifar_shaped_mnist():
    data = ImageDataModule("mnist5k", pad_to=32)
    assert data.input_shape == (1, 32, 32)
    data.setup("fit")
    x, _ = data.train_set[0]
    assert x.shape == (1, 32, 32)
    background = (0 - 0.1307) / 0.3081
    torch.testing.assert_close(x[:, :2, :], torch.full((1, 2, 32), background))


def test_augmentation_crops_and_flips():
    images = torch.arange(2 * 16, dtype=torch.uint8).view(2, 1, 4, 4).repeat(1, 3, 2, 2) * 3
    dataset = ImageTensorDataset(images, torch.tensor([0, 1]), (0.0,) * 3, (1 / 255,) * 3, augment=True)
    torch.manual_seed(0)
    crops = {tuple(dataset[0][0].flatten().tolist()) for _ in range(30)}
    assert len(crops) > 5
    assert all(dataset[0][0].shape == (3, 8, 8) for _ in range(5))


def test_training_loader_never_hands_batchnorm_one_sample():
    # 80 training samples (of 100) with batch 79: the last batch would hold 1 sample
    data = SyntheticDataModule(num_samples=100, input_shape=(3,), batch_size=79)
    data.setup("fit")
    assert [len(y) for _, y in data.train_dataloader()] == [79]
    assert sum(len(y) for _, y in data.val_dataloader()) == 10  # eval keeps every sample
    keeps = SyntheticDataModule(num_samples=100, input_shape=(3,), batch_size=30)
    keeps.setup("fit")
    assert [len(y) for _, y in keeps.train_dataloader()] == [30, 30, 20]


def test_synthetic_task_is_seeded_and_learnable_shape():
    first, second = SyntheticDataModule(), SyntheticDataModule()
    first.setup(), second.setup()
    assert first.input_shape == (500,) and first.num_classes == 2
    assert len(first.train_set) == 8000 and len(first.val_set) == len(first.test_set) == 1000
    assert torch.equal(first.train_set.tensors[0], second.train_set.tensors[0])
    assert set(first.train_set.tensors[1].tolist()) == {0, 1}
    images = SyntheticDataModule(num_samples=20, input_shape=(3, 8, 8), num_classes=5)
    images.setup()
    assert images.train_set[0][0].shape == (3, 8, 8)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ImageDataModule("imagenet"), "Unknown dataset 'imagenet'.*mnist5k.*cifar10"),
        (lambda: ImageDataModule(batch_size=0), "batch_size must be >= 1"),
        (lambda: SyntheticDataModule(num_classes=1), "num_classes must be >= 2"),
        (lambda: ImageTensorDataset(torch.zeros(2, 4, 4), torch.zeros(2), (0,), (1,)), "uint8 tensor"),
    ],
)
def test_bad_data_arguments_are_clear(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()
