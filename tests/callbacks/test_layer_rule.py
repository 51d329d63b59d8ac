"""``layers=["last"]``: the forward's last activation site, resolved by the callback whatever the model's table."""

from __future__ import annotations

import lightning as L
import pytest

from normzoo.callbacks import ActivationDrift, DeadUnits
from normzoo.callbacks.capture import LAST_SITE, resolve_layers
from normzoo.models import CNNClassifier, MLPClassifier
from tests.fixtures import gaussian_loader


def test_last_is_the_last_activation_site_in_call_order():
    kinds = {"stem.relu": "relu", "head": None, "blocks.1.act": "sigmoid", "blocks.1.act#2": "sigmoid", "fc": None}
    assert resolve_layers([LAST_SITE, "head"], kinds) == ["blocks.1.act#2", "head"]
    assert resolve_layers([LAST_SITE], {"fc": None}) == [LAST_SITE]  # left to be reported as computing nothing


@pytest.mark.parametrize(("model_class", "options", "shape", "site", "layer"), [
    (MLPClassifier, {"depth": 3, "width": 12, "activation": "sigmoid"}, (8,), "backbone.blocks.2.act",
     "backbone.blocks.2"),
    (CNNClassifier, {"arch": "vgg11", "width_factor": 0.125}, (1, 16, 16), "backbone.features.19",  # last conv's ReLU
     "backbone.features.18"),  # tagged with its layer: the conv-norm module it follows
], ids=["mlp", "vgg11"])
@pytest.mark.parametrize("callback_class", [ActivationDrift, DeadUnits])
def test_the_callback_watches_and_logs_the_resolved_site(model_class, options, shape, site, layer, callback_class,
                                                         trainer_kwargs):
    model = model_class(input_shape=shape, num_classes=3, **options)
    callback = callback_class(every_n_steps=2, layers=[LAST_SITE], probe_size=8)
    L.Trainer(**trainer_kwargs(max_steps=2, callbacks=[callback])).fit(model, gaussian_loader(16, shape, 3,
                                                                                             batch_size=8))
    assert callback.sites == [site]
    assert {key.split("/")[0] for record in callback.history for key in record if "/" in key} == {layer}
