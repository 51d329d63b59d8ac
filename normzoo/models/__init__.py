"""Backbones (plain ``nn.Module``s taking ``norm=``) and the LightningModules that train them.

The backbones import torch and ``normzoo.norms`` only; the LightningModules (and with them
Lightning and torchmetrics) load on first use of their names (PEP 562), so
``from normzoo.models import ResNet`` stays light while ``from normzoo.models import
CNNClassifier`` and the CLI's ``class_path: normzoo.models.CNNClassifier`` work as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from normzoo.models.archs import CNN_ARCHS, build_cnn
from normzoo.models.convnet import ConvNet
from normzoo.models.layers import ACTIVATIONS, INIT_SCHEMES, init_weights
from normzoo.models.mlp import MLP, DenseBlock
from normzoo.models.resnet import RESNET_VARIANTS, BasicBlock, ResNet
from normzoo.models.vgg import VGG, VGG_VARIANTS
from normzoo.models.vit import VIT_VARIANTS, ViT

if TYPE_CHECKING:
    from normzoo.models.classifier import CNNClassifier, MLPClassifier, NormClassifier, ViTClassifier

_LIGHTNING = {name: "normzoo.models.classifier"
              for name in ("CNNClassifier", "MLPClassifier", "NormClassifier", "ViTClassifier")}
"""Public names that need Lightning -> the module that defines them, imported on first access."""

__all__ = [
    "ACTIVATIONS",
    "CNN_ARCHS",
    "INIT_SCHEMES",
    "MLP",
    "RESNET_VARIANTS",
    "VGG",
    "VGG_VARIANTS",
    "VIT_VARIANTS",
    "BasicBlock",
    "CNNClassifier",
    "ConvNet",
    "DenseBlock",
    "MLPClassifier",
    "NormClassifier",
    "ResNet",
    "ViT",
    "ViTClassifier",
    "build_cnn",
    "init_weights",
]


def __getattr__(name: str) -> Any:
    if name not in _LIGHTNING:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LIGHTNING[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LIGHTNING))
