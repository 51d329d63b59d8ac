"""Every norm under CPU bf16 autocast: finite outputs and gradients, float32 running statistics."""

from __future__ import annotations

import pytest
import torch

from normzoo.models import MLP, ResNet
from normzoo.norms import available_norms
from tests.fixtures import MAPS_ONLY_NORMS


@pytest.mark.parametrize("norm", available_norms())
def test_every_norm_is_finite_under_bf16_autocast_with_float32_statistics(norm):
    torch.manual_seed(0)
    model = ResNet("resnet20", input_shape=(3, 8, 8), num_classes=4, norm=norm)
    x = torch.randn(6, 3, 8, 8) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = out.float().logsumexp(dim=1).mean()
    loss.backward()
    assert torch.isfinite(out.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for name, buffer in model.named_buffers():
        if buffer.is_floating_point():
            assert buffer.dtype == torch.float32, name
            assert torch.isfinite(buffer).all(), name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model.eval()(x).float()).all()


@pytest.mark.parametrize("norm", [n for n in available_norms() if n not in MAPS_ONLY_NORMS])
def test_feature_vector_norms_under_bf16_autocast(norm):
    model = MLP(input_shape=(10,), num_classes=3, depth=2, width=16, norm=norm,
                norm_kwargs={"num_groups": 4} if norm == "gn" else None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(torch.randn(8, 10) * 5).float()).all()
