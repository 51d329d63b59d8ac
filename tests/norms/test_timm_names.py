"""The README's map from timm's norm names to normzoo's keys: each pair computes the same function.

Outputs and input gradients, with the same non-trivial gains (and biases) in both.
"""

from __future__ import annotations

import pytest
import torch

from normzoo.norms import create_norm_layer

timm_layers = pytest.importorskip("timm.layers")

PAIRS = {  # timm name -> (timm layer, normzoo key, dims, input shape)
    "batchnorm2d": (lambda: timm_layers.get_norm_layer("batchnorm2d")(6), "bn", 2, (4, 6, 3, 3)),
    "groupnorm": (lambda: timm_layers.GroupNorm(6, num_groups=3), "gn", 2, (4, 6, 3, 3)),  # timm: channels first
    "groupnorm1": (lambda: timm_layers.GroupNorm1(6), "ln", 2, (4, 6, 3, 3)),
    "layernorm": (lambda: timm_layers.LayerNorm(6, eps=1e-5), "ln", 1, (4, 6)),
    "layernorm2d": (lambda: timm_layers.LayerNorm2d(6, eps=1e-5), "ln_channel", 2, (4, 6, 3, 3)),
    "rmsnorm": (lambda: timm_layers.RmsNorm(6, eps=1e-6), "rms", 1, (4, 6)),
    "rmsnorm2d": (lambda: timm_layers.RmsNorm2d(6), "rms_channel", 2, (4, 6, 3, 3)),
    "simplenorm": (lambda: timm_layers.SimpleNorm(6), "simple", 1, (4, 6)),
    "simplenorm2d": (lambda: timm_layers.SimpleNorm2d(6), "simple_channel", 2, (4, 6, 3, 3)),
    "frozenbatchnorm2d": (lambda: timm_layers.get_norm_layer("frozenbatchnorm2d")(6), "frozen_bn", 2, (4, 6, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_timms_name_and_normzoos_key_compute_the_same(name):
    make_timm, key, dims, shape = PAIRS[name]
    theirs = make_timm()
    options = {"num_groups": 3} if key == "gn" else {}
    ours = create_norm_layer(key, 6, dims, **options)
    torch.manual_seed(0)
    with torch.no_grad():  # the same non-trivial affine in both (a frozen BN's are buffers)
        for source in (theirs, ours):
            for pname, tensor in [*source.named_parameters(), *source.named_buffers()]:
                if pname in ("weight", "bias"):
                    tensor.copy_(torch.linspace(0.5, 1.5, 6) if pname == "weight" else torch.linspace(-0.3, 0.3, 6))
    x = torch.randn(*shape) * 2 + 1
    outputs, gradients = [], []
    for layer in (ours, theirs):
        inputs = x.clone().requires_grad_(True)
        output = layer(inputs)
        (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum().backward()
        outputs.append(output.detach())
        gradients.append(inputs.grad)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-5, atol=1e-5)
