"""Checks shared by the tests of the norm tools: layers by type, BN buffers, leftover hooks, one thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def layers_of(model: nn.Module, kind: type | tuple[type, ...]) -> dict[str, nn.Module]:
    """The submodules of ``model`` that are instances of ``kind``, by path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, kind)}


def bn_buffers(model: nn.Module) -> dict[str, Tensor]:
    """Copies of every BatchNorm running_mean / running_var / num_batches_tracked."""
    return {
        f"{name}.{buffer}": getattr(m, buffer).clone()
        for name, m in layers_of(model, _BatchNorm).items()
        for buffer in ("running_mean", "running_var", "num_batches_tracked")
    }


def no_hooks_anywhere(model: nn.Module) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread, for tests of many tiny tensors: more threads only add overhead (and spin when busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
