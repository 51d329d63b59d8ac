"""feeding_norms and scale_invariance_error: which layers a norm makes scale-invariant, on normzoo's MLP."""

from __future__ import annotations

import pytest
import torch

from normzoo.models import MLP
from normzoo.norms.norm_fed import SCALE_INVARIANCE_TOL, feeding_norms, scale_invariance_error

INVARIANT = {"bn": True, "ln": True, "rms": True, "noisy_bn": True, "gn": True, "frozen_bn": False}
"""Norm -> whether the linear layer feeding it is scale-invariant in training mode: frozen BN normalizes
with fixed statistics, not its input's."""


@pytest.mark.parametrize("norm", sorted(INVARIANT))
def test_layers_feeding_a_norm_are_found_and_checked(norm):
    torch.manual_seed(0)
    kwargs = {"norm_kwargs": {"num_groups": 2}} if norm == "gn" else {}
    model = MLP(input_shape=(5,), num_classes=3, depth=2, width=4, norm=norm, activation="tanh", **kwargs).train()
    x = torch.randn(16, 5) * 3 + 1
    with feeding_norms(model) as fed:
        model(x)
    assert list(fed) == ["blocks.0.linear", "blocks.1.linear"]  # not the head, which feeds no norm
    assert [f.norm_name for f in fed.values()] == ["blocks.0.norm", "blocks.1.norm"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    errors = [scale_invariance_error(f).item() for f in fed.values()]
    assert all((error <= SCALE_INVARIANCE_TOL) == INVARIANT[norm] for error in errors), errors
    assert all(error > 0.1 for error in errors) or INVARIANT[norm]  # clear-cut either way
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # buffers untouched
    assert torch.equal(rng, torch.get_rng_state())


def test_an_activation_between_layer_and_norm_breaks_the_chain():
    model = MLP(input_shape=(5,), num_classes=3, depth=1, width=4, norm="bn", norm_position="after")
    with feeding_norms(model) as fed:
        model(torch.randn(8, 5))
    assert fed == {}
