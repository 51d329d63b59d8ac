"""CNN backbones by architecture name: the table the classifier and the CLI's ``--model.arch`` read."""

from __future__ import annotations

from typing import Any

from normzoo.errors import ConfigError
from normzoo.models.convnet import ConvNet
from normzoo.models.resnet import ResNet
from normzoo.models.vgg import VGG

CNN_FAMILIES: dict[str, type[ConvNet]] = {arch: family for family in (VGG, ResNet) for arch in family.variants}
"""Architecture name -> the ``ConvNet`` family that builds it."""

CNN_ARCHS = tuple(CNN_FAMILIES)
"""Every architecture name ``build_cnn`` accepts: vgg11, vgg13, vgg16, resnet8, resnet20, resnet18."""


def build_cnn(arch: str, **options: Any) -> ConvNet:
    """The VGG or ResNet backbone named ``arch`` (see ``CNN_ARCHS``); ``options`` are ``ConvNet``'s.

    Raises:
        ConfigError: ``arch`` is not one of ``CNN_ARCHS``, or an option cannot work.
    """
    if arch not in CNN_FAMILIES:
        raise ConfigError(f"Unknown CNN arch {arch!r}. Choose one of: {', '.join(CNN_ARCHS)}.")
    return CNN_FAMILIES[arch](arch, **options)
