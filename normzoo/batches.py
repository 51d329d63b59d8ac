"""What a batch holds, for code that meets batches it did not make (diagnostics, ``recalibrate_bn``).

Users' loaders yield a tensor, an ``(inputs, targets, ...)`` tuple or list, or a dict such as
``{"image": ..., "label": ...}`` in any key order. These rules find the model input and the
targets in all of them, in one place; a batch they cannot read gets one message that says
how to tell normzoo instead. Plain torch: no Lightning import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from normzoo.errors import ConfigError

INPUT_KEYS = ("image", "images", "img", "imgs", "input", "inputs", "x", "data", "features", "pixel_values")
"""Dict keys taken as the model input, in this order of preference."""

TARGET_KEYS = ("target", "targets", "label", "labels", "y", "mask", "masks", "segmentation")
"""Dict keys taken as the targets, in this order of preference."""


def batch_inputs(batch: Any, fix: str = "pass forward=(pl_module, batch) -> outputs") -> Tensor:
    """The model input of a batch: the batch itself, the first item of a tuple/list, or a dict's input key.

    A dict is read by key, never by position: an ``INPUT_KEYS`` entry, or else its only
    tensor that is not under a ``TARGET_KEYS`` key.

    Args:
        batch: the batch as the loader yields it.
        fix: what the caller's user can do instead, quoted in the error.

    Raises:
        ConfigError: no input can be told apart; the message lists the batch's keys and ``fix``.
    """
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        for key in INPUT_KEYS:
            if isinstance(batch.get(key), Tensor):
                return batch[key]
        others = [key for key, value in batch.items() if isinstance(value, Tensor) and key not in TARGET_KEYS]
        if len(others) == 1:
            return batch[others[0]]
        raise ConfigError(
            f"Cannot tell the model input among the batch's keys {list(batch)}: name it one of "
            f"{', '.join(INPUT_KEYS[:6])}, ..., or {fix}."
        )
    raise ConfigError(
        f"Cannot find the model input in a batch of type {type(batch).__name__}: expected a tensor, an "
        f"(inputs, targets, ...) tuple or a dict with an input key; or {fix}."
    )


def batch_targets(batch: Any) -> Tensor | None:
    """The targets of a batch: the second item of a tuple/list, a ``TARGET_KEYS`` dict entry, or None."""
    if isinstance(batch, (list, tuple)) and len(batch) > 1 and isinstance(batch[1], Tensor):
        return batch[1]
    if isinstance(batch, Mapping):
        for key in TARGET_KEYS:
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    return None


def batch_length(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (0 for a batch without tensors)."""
    for leaf in tree_flatten(batch)[0]:
        if isinstance(leaf, Tensor) and leaf.dim() > 0:
            return len(leaf)
    return 0


def slice_batch(batch: Any, stop: int) -> Any:
    """The first ``stop`` samples of every per-sample tensor in a batch; other leaves stay as they are."""
    length = batch_length(batch)

    def cut(leaf: Any) -> Any:
        if isinstance(leaf, Tensor) and leaf.dim() > 0 and len(leaf) == length:
            return leaf[:stop]
        return leaf

    return tree_map(cut, batch)


def concat_batches(first: Any, second: Any) -> Any:
    """Two batches of the same structure joined sample-wise; non-sample leaves come from ``first``."""
    first_leaves, spec = tree_flatten(first)
    second_leaves, second_spec = tree_flatten(second)
    if spec != second_spec:
        return first  # batches of another structure (a last, odd batch) are not mixed in
    n_first, n_second = batch_length(first), batch_length(second)
    joined = []
    for a, b in zip(first_leaves, second_leaves, strict=True):
        if isinstance(a, Tensor) and isinstance(b, Tensor) and a.dim() > 0 and len(a) == n_first \
                and len(b) == n_second and a.shape[1:] == b.shape[1:]:
            joined.append(torch.cat([a, b.to(a.device)]))
        else:
            joined.append(a)
    return tree_unflatten(joined, spec)


def batch_to(batch: Any, device: torch.device | str | None = None, detach: bool = True) -> Any:
    """The batch with every tensor detached and moved to ``device`` (None: where it is)."""

    def move(leaf: Any) -> Any:
        if not isinstance(leaf, Tensor):
            return leaf
        leaf = leaf.detach() if detach else leaf
        return leaf if device is None else leaf.to(device)

    return tree_map(move, batch)


class NonFiniteInputs:
    """Finds the first batch whose float tensors hold a NaN or an inf, with one host sync per check.

    ``add`` keeps one sum per batch on the device (a NaN or an inf anywhere makes the sum
    non-finite) with the batch's position; ``first`` reads them all at once and forgets them.
    Bad data is then named as bad data, rather than showing up as a diverged loss.
    """

    def __init__(self) -> None:
        self._sums: list[Tensor] = []
        self._positions: list[Any] = []

    def add(self, batch: Any, position: Any) -> None:
        leaves = [leaf.detach() for leaf in tree_flatten(batch)[0]
                  if isinstance(leaf, Tensor) and leaf.is_floating_point() and leaf.numel()]
        if leaves:
            self._sums.append(torch.stack([leaf.sum(dtype=torch.float32) for leaf in leaves]).sum())
            self._positions.append(position)

    def first(self) -> Any | None:
        """The position of the first batch added since the last call that held a NaN or an inf, or None."""
        if not self._sums:
            return None
        finite = torch.isfinite(torch.stack([s.to(self._sums[0].device) for s in self._sums])).tolist()
        positions, self._sums, self._positions = self._positions, [], []
        return next((where for ok, where in zip(finite, positions, strict=True) if not ok), None)
