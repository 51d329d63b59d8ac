"""forward_order: modules in the order a forward pass first calls them, not the order they were registered."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from normzoo.norms.forward_order import forward_order


class Backwards(nn.Module):
    """Registers ``late`` before ``early`` and calls ``early`` twice, ``unused`` never."""

    def __init__(self) -> None:
        super().__init__()
        self.late, self.early, self.unused = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.late(self.early(self.early(x)))


def test_records_first_calls_in_forward_order_and_removes_its_hooks():
    model = Backwards()
    with forward_order(dict(model.named_children())) as order:
        model(torch.randn(2, 3))
    assert order == ["early", "late"]
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_a_shared_module_is_recorded_once_under_its_first_name_and_hooks_go_on_errors():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(RuntimeError), forward_order({"a": shared, "b": shared, "relu": model[1]}) as order:
        model(torch.randn(2, 3))
        raise RuntimeError("interrupted")
    assert order == ["a", "relu"]
    assert all(not m._forward_pre_hooks for m in model.modules())
