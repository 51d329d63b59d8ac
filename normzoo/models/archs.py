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
"""Every architecture name ``build_cnn`` accepts: vgg11, vgg13, vgg16, resnet8, resnet20, resnet56, resnet110,
resnet18."""

FAMILY_OPTIONS: dict[str, tuple[type[ConvNet], Any]] = {"residual_scale": (ResNet, None), "fixup": (ResNet, False)}
"""Options only one family takes -> (that family, the value that leaves it off). ``CNNClassifier`` passes
each of them to every arch, so ``build_cnn`` drops one that is off for the other families."""


def build_cnn(arch: str, **options: Any) -> ConvNet:
    """The VGG or ResNet backbone named ``arch`` (see ``CNN_ARCHS``); ``options`` are ``ConvNet``'s, and
    ``residual_scale`` and ``fixup`` for a ResNet (``FAMILY_OPTIONS``).

    Raises:
        ConfigError: ``arch`` is not one of ``CNN_ARCHS``, an option of another family is set (not off),
            or an option cannot work.
    """
    if arch not in CNN_FAMILIES:
        raise ConfigError(f"Unknown CNN arch {arch!r}. Choose one of: {', '.join(CNN_ARCHS)}.")
    family = CNN_FAMILIES[arch]
    for option, (owner, off) in FAMILY_OPTIONS.items():
        if option in options and not issubclass(family, owner):
            if options.pop(option) != off:
                raise ConfigError(f"{option} is an option of the {owner.family} archs "
                                  f"({', '.join(owner.variants)}), not of {arch}; leave it unset ({off}).")
    return family(arch, **options)
