"""Adaptive Gradient Clipping (``normzoo.models.agc``) against Brock et al. 2021's Eq. 3 and timm."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from normzoo.errors import ConfigError
from normzoo.models import MLP
from normzoo.models.agc import adaptive_clip_grad_, agc_parameters, unitwise_norm
from normzoo.models.weight_norms import apply_weight_norm
from tests.norms.norm_checks import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; restored after each test, never set globally

LAMBDA = 0.05
EPS = 1e-3


def eq3_oracle(weight: Tensor, grad: Tensor, clipping: float, eps: float) -> tuple[Tensor, int]:
    """Eq. 3 unit by unit in float64: rows of ``dim() >= 2`` tensors, the whole of a 1-D or 0-d one."""
    weight, grad = weight.double(), grad.double()
    units = list(zip(weight, grad, strict=True)) if weight.dim() >= 2 else [(weight, grad)]
    out, clipped = [], 0
    for w, g in units:
        w_norm = max(torch.sqrt((w**2).sum()).item(), eps)
        g_norm = torch.sqrt((g**2).sum()).item()
        if g_norm / w_norm > clipping:
            out.append(clipping * w_norm / g_norm * g)
            clipped += 1
        else:
            out.append(g)
    return (torch.stack(out) if weight.dim() >= 2 else out[0]), clipped


def parameters_with_grads() -> list[nn.Parameter]:
    """A conv kernel, a linear weight, a zero (SkipInit-like) linear weight, a bias and a scalar, each with
    gradients whose units sit on both sides of the threshold ``LAMBDA``."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 3, 3, 3), (5, 6), (3, 4), (5,), ()]
    params = []
    for index, shape in enumerate(shapes):
        weight = torch.randn(shape, generator=generator) if index != 2 else torch.zeros(shape)
        param = nn.Parameter(weight)
        grad = torch.randn(shape, generator=generator)
        if grad.dim() >= 2:  # unit i's ratio ||G_i|| / ||W_i|| spread over 0.11x ... 11x the threshold
            ratios = torch.logspace(-1, 1, shape[0]) * 1.1 * LAMBDA  # none exactly at the threshold
            w_norm = unitwise_norm(weight).clamp(min=EPS)
            grad = grad / unitwise_norm(grad) * w_norm * ratios.view(-1, *[1] * (len(shape) - 1))
        else:
            grad = grad * (0.01 if index == 3 else 10.0)
        param.grad = grad
        params.append(param)
    return params


def test_agc_is_eq3_unit_by_unit_and_reports_the_clipped_fraction():
    params = parameters_with_grads()
    expected = [eq3_oracle(p.detach(), p.grad, LAMBDA, EPS) for p in params]
    total_clipped = sum(count for _, count in expected)
    total_units = 4 + 5 + 3 + 1 + 1
    assert 0 < total_clipped < total_units  # units on both sides of the threshold
    fraction = adaptive_clip_grad_(params, LAMBDA, EPS)
    assert fraction.item() == pytest.approx(total_clipped / total_units)
    for param, (grad, _) in zip(params, expected, strict=True):
        torch.testing.assert_close(param.grad.double(), grad, rtol=1e-6, atol=1e-9)


def test_a_clipped_unit_ends_at_lambda_times_its_weight_norm_floored_at_eps():
    params = parameters_with_grads()
    adaptive_clip_grad_(params, LAMBDA, EPS)
    conv, _, zero = params[:3]
    ratio = unitwise_norm(conv.grad) / unitwise_norm(conv.detach())
    assert torch.all(ratio <= LAMBDA * (1 + 1e-5)) and ratio.max() == pytest.approx(LAMBDA, rel=1e-5)
    # ||W_i|| = 0: the bound is LAMBDA * eps, not 0 (a zero-initialized unit keeps learning)
    torch.testing.assert_close(unitwise_norm(zero.grad).max(), torch.tensor(LAMBDA * EPS), rtol=1e-5, atol=0)


def test_missing_and_zero_gradients_are_left_alone_and_bad_settings_are_config_errors():
    no_grad, zero_grad = nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(3, 2))
    zero_grad.grad = torch.zeros(3, 2)
    assert adaptive_clip_grad_([no_grad, zero_grad], LAMBDA).item() == 0.0
    assert no_grad.grad is None and torch.equal(zero_grad.grad, torch.zeros(3, 2))
    assert adaptive_clip_grad_([no_grad], LAMBDA).item() == 0.0
    single = nn.Parameter(torch.ones(2, 2))
    single.grad = torch.full((2, 2), 10.0)
    assert adaptive_clip_grad_(single, LAMBDA).item() == 1.0  # a tensor alone, like clip_grad_norm_
    with pytest.raises(ConfigError, match="clipping > 0, got 0"):
        adaptive_clip_grad_([zero_grad], 0)
    with pytest.raises(ConfigError, match="eps > 0, got -1"):
        adaptive_clip_grad_([zero_grad], LAMBDA, eps=-1)


def test_agc_equals_timms_adaptive_clip_grad():
    timm_agc = pytest.importorskip("timm.utils").adaptive_clip_grad
    ours, theirs = parameters_with_grads(), parameters_with_grads()
    before = [p.grad.clone() for p in ours]
    adaptive_clip_grad_(ours, LAMBDA, EPS)
    timm_agc(theirs, clip_factor=LAMBDA, eps=EPS)
    changed = 0
    for mine, timms, original in zip(ours, theirs, before, strict=True):
        torch.testing.assert_close(mine.grad, timms.grad, rtol=1e-6, atol=1e-9)
        changed += int(not torch.equal(mine.grad, original))
    assert 0 < changed < len(ours)


def test_agc_parameters_leave_out_the_head_and_include_weight_normed_layers_raw_weights_and_gains():
    model = MLP(input_shape=(4,), num_classes=2, depth=2, width=8, norm="gn", norm_kwargs={"num_groups": 2})
    apply_weight_norm(model, "sws", exclude=["head"])
    chosen = {id(p) for p in agc_parameters(model, exclude=["head"])}
    names = {name for name, p in model.named_parameters() if id(p) in chosen}
    assert names == {name for name, _ in model.named_parameters() if not name.startswith("head.")}
    assert "blocks.0.linear.parametrizations.weight.original" in names
    assert "blocks.0.linear.parametrizations.weight.0.gain" in names
    assert len(agc_parameters(model, exclude=[model.head])) == len(chosen)
    assert len(agc_parameters(model)) == len(list(model.parameters()))
