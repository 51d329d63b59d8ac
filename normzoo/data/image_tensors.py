"""Images as uint8 tensors in memory, and the operations that turn them into model inputs.

Padding, random crop + horizontal flip and normalization are written once, as operations on
a batch ``(N, C, H, W)``; a single image ``(C, H, W)`` goes through the same code as a batch
of one. ``ImageTensorDataset`` applies them per sample (for a ``DataLoader``), and
``DeviceImageLoader`` per batch on the device, so both paths make the same inputs from the
same images. Torch only: no Lightning here.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from normzoo.errors import ConfigError, DataError

CROP_PADDING = 4
"""Zero padding of the random crop, in pixels: torchvision's ``RandomCrop(32, padding=4)`` for CIFAR."""


def pad_images(images: Tensor, size: int) -> Tensor:
    """Zero-pad ``(..., H, W)`` images symmetrically to ``size x size``."""
    height, width = images.shape[-2:]
    if size < max(height, width):
        raise ConfigError(f"pad_to={size} is smaller than the images ({height}x{width}).")
    top, left = (size - height) // 2, (size - width) // 2
    return F.pad(images, (left, size - width - left, top, size - height - top))


def random_crop_flip(images: Tensor, padding: int = CROP_PADDING) -> Tensor:
    """torchvision's ``RandomCrop(padding)`` + ``RandomHorizontalFlip`` for ``(N, C, H, W)`` or ``(C, H, W)``.

    Each image gets its own offsets, uniform in ``[0, 2 * padding]``, into the zero-padded
    image, and is flipped left-right with probability 1/2; the draws are made on the
    images' device, from its default generator.
    """
    if images.dim() == 3:
        return random_crop_flip(images.unsqueeze(0), padding)[0]
    count, _, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (count, 1, 1), device=device)
    left = torch.randint(0, 2 * padding + 1, (count, 1, 1), device=device)
    rows = top + torch.arange(height, device=device).view(1, height, 1)
    columns = left + torch.arange(width, device=device).view(1, 1, width)
    flip = torch.rand(count, 1, 1, device=device) < 0.5
    columns = torch.where(flip, 2 * left + width - 1 - columns, columns)  # mirror within the crop
    batch = torch.arange(count, device=device).view(count, 1, 1)
    return padded[batch, :, rows, columns].permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)


def pixel_scale(values: tuple[float, ...]) -> Tensor:
    """Per-channel constants in [0, 1] units as a ``(C, 1, 1)`` float tensor in uint8 pixel units."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1) * 255


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 ``(..., C, H, W)`` images as floats ``(x - mean) / std``, with ``pixel_scale``'s constants."""
    return (images.float() - mean) / std


class ImageTensorDataset(Dataset):
    """Images held in memory as one uint8 tensor ``(N, C, H, W)``, normalized on access.

    Keeping uint8 costs a quarter of the memory of floats and makes each item a cheap
    slice; augmentation (random crop with zero padding, horizontal flip) runs on tensors.

    Args:
        images: uint8 tensor ``(N, C, H, W)``.
        labels: int64 tensor ``(N,)``.
        mean, std: per-channel normalization constants in [0, 1] pixel units.
        augment: random crop (padding 4) and horizontal flip, for training sets.
        pad_to: zero-pad images symmetrically to this height and width (e.g. 28 -> 32).

    Raises:
        DataError: ``images`` is not a uint8 tensor ``(N, C, H, W)``.
        ConfigError: ``pad_to`` is smaller than the images.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: bool = False,
        pad_to: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}.")
        if pad_to is not None:
            images = pad_images(images, pad_to)
        self.images = images
        self.labels = labels.long()
        self.mean = pixel_scale(mean)
        self.std = pixel_scale(std)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | Tensor) -> tuple[Tensor, Tensor]:
        """One sample, or with a 1-D index tensor (on this set's device) a whole batch at once."""
        return self.inputs(self.images[index]), self.labels[index]

    def inputs(self, images: Tensor) -> Tensor:
        """This set's uint8 images, one or a batch, as model inputs: cropped and flipped if ``augment``, normalized."""
        if self.augment:
            images = random_crop_flip(images)
        return normalize(images, self.mean, self.std)

    def to(self, device: torch.device | str) -> ImageTensorDataset:
        """This dataset with its tensors on ``device`` (the same object if they are there already)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        moved = copy.copy(self)
        moved.images, moved.labels = self.images.to(device), self.labels.to(device)
        moved.mean, moved.std = self.mean.to(device), self.std.to(device)
        return moved
