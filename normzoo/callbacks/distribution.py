"""Distribution statistics that reduce on device and work for any tensor size.

``torch.quantile`` refuses inputs over 16M elements, so large activations are first
thinned to a fixed, evenly strided subset (the same positions at every measurement, so
snapshots stay comparable), then sorted once; percentiles and the 1-Wasserstein distance
are read off the sorted values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def channel_moments(x: Tensor) -> Tensor:
    """Per-channel (dim 1) count, sum and sum of squares in float64, stacked as a (3, C) tensor.

    Sums, not means, so that moments from DDP ranks add up to those of the union of the shards.
    """
    x = x.detach().to(torch.float64)
    dims = [d for d in range(x.dim()) if d != 1]
    count = torch.full((x.shape[1],), x.numel() / x.shape[1], dtype=torch.float64, device=x.device)
    return torch.stack([count, x.sum(dims), (x * x).sum(dims)])


def sorted_sample(x: Tensor, max_elements: int) -> Tensor:
    """``x`` flattened, thinned to at most ``max_elements`` by a fixed stride, sorted, as float32."""
    flat = x.detach().flatten().float()
    if flat.numel() > max_elements:
        step = -(-flat.numel() // max_elements)  # ceil division
        flat = flat[::step]
    return flat.sort().values


def percentiles(sorted_values: Tensor, qs: Sequence[float]) -> Tensor:
    """Percentiles (0..100) of sorted values, linearly interpolated as numpy's default."""
    n = sorted_values.numel()
    positions = torch.tensor([q / 100 * (n - 1) for q in qs], device=sorted_values.device)
    low = positions.floor().long()
    high = positions.ceil().long()
    weight = positions - low
    return sorted_values[low] * (1 - weight) + sorted_values[high] * weight


def wasserstein1(sorted_a: Tensor, sorted_b: Tensor) -> Tensor:
    """1-Wasserstein distance between two empirical distributions of the same size (sorted)."""
    if sorted_a.numel() != sorted_b.numel():
        raise ValueError("wasserstein1 compares samples of the same size.")
    return (sorted_a - sorted_b).abs().mean()
