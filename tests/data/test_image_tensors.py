"""The image tensor operations: one crop + flip for a batch and a single image, with the right distribution."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter

import pytest
import torch

from normzoo.data.image_tensors import ImageTensorDataset, normalize, pad_images, random_crop_flip

PADDING = 4


def every_crop(image: torch.Tensor) -> list[bytes]:
    """The (2 * PADDING + 1)^2 crops of the zero-padded image, unflipped and flipped: 162 equally likely outcomes."""
    _, height, width = image.shape
    padded = torch.nn.functional.pad(image, (PADDING,) * 4)
    crops = [padded[:, top:top + height, left:left + width] for top in range(2 * PADDING + 1)
             for left in range(2 * PADDING + 1)]
    return [key for crop in crops for key in (crop.numpy().tobytes(), crop.flip(-1).numpy().tobytes())]


@pytest.mark.parametrize("batched", [True, False], ids=["batch", "one image at a time"])
def test_crop_flip_draws_every_offset_and_flip_equally_often(batched):
    image, draws = torch.randint(1, 256, (1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)), 8000
    outcomes = every_crop(image)
    assert len(set(outcomes)) == 162  # distinct content: each crop tells its offsets and flip
    torch.manual_seed(0)
    if batched:
        crops = list(random_crop_flip(image.repeat(draws, 1, 1, 1)))
    else:
        crops = [random_crop_flip(image) for _ in range(draws)]
    seen = Counter(crop.numpy().tobytes() for crop in crops)
    assert set(seen) == set(outcomes)
    expected = draws / len(outcomes)
    chi_square = sum((seen[outcome] - expected) ** 2 / expected for outcome in outcomes)
    dof = len(outcomes) - 1
    assert chi_square < dof + 5 * math.sqrt(2 * dof)  # 5 sigma above the mean of the uniform law's statistic


def test_a_single_image_takes_the_batch_path():
    images = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    single = random_crop_flip(images[0])
    torch.manual_seed(5)
    assert torch.equal(single, random_crop_flip(images)[0])


def test_an_index_tensor_gives_the_batch_of_the_items():
    images = torch.randint(0, 256, (6, 2, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    data = ImageTensorDataset(images, torch.arange(6), mean=(0.5, 0.25), std=(0.2, 0.1), pad_to=7)
    index = torch.tensor([4, 0, 3])
    x, y = data[index]
    assert x.shape == (3, 2, 7, 7) and y.tolist() == [4, 0, 3]
    assert torch.equal(x, torch.stack([data[i][0] for i in index.tolist()]))
    padded = pad_images(images, 7)
    assert padded[:, :, 0].eq(0).all() and torch.equal(padded[:, :, 1:6, 1:6], images)
    mean, std = torch.tensor([0.5, 0.25]).view(2, 1, 1) * 255, torch.tensor([0.2, 0.1]).view(2, 1, 1) * 255
    torch.testing.assert_close(x, normalize(padded[index], mean, std), rtol=0, atol=0)
    torch.testing.assert_close(x[0, 1, 3, 3], (padded[4, 1, 3, 3].float() - 0.25 * 255) / (0.1 * 255))


def test_image_tensors_and_sources_import_without_lightning_and_the_device_loader_without_datamodules():
    code = ("import sys, normzoo.data, normzoo.data.image_tensors, normzoo.data.sources, normzoo.data.device_loader; "
            "print(sorted({'lightning', 'tensorboard', 'torchmetrics', 'normzoo.data.base'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
