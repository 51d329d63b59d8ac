"""The studies ``normzoo study`` runs: one module per paper claim, each defining ``STUDY``.

A study names its config files relative to the ``normzoo`` package: the base configs in
``configs/`` (the repository's top-level ``configs/``, which the package links to and a
wheel copies) and its own overlays here, ``studies/catalog/<study>.yaml`` and the quick
mode's ``<study>.quick.yaml``. So an installed wheel carries every file a study needs.
"""

from __future__ import annotations

from normzoo.errors import ConfigError
from normzoo.studies.catalog import (
    batch_independent,
    cohen_eos,
    daneshmand,
    de_smith,
    init_sensitivity,
    ioffe_mnist,
    li_arora,
    lr_sensitivity,
    placement,
    santurkar,
    tutorial,
    wu_he,
    wu_johnson,
    zhu_dyt_resnet,
    zhu_dyt_vit,
)
from normzoo.studies.spec import Study

STUDIES: dict[str, Study] = {
    module.STUDY.name: module.STUDY
    for module in (ioffe_mnist, santurkar, wu_he, tutorial, lr_sensitivity, init_sensitivity, placement, cohen_eos,
                   li_arora, daneshmand, wu_johnson, de_smith, zhu_dyt_vit, zhu_dyt_resnet, batch_independent)
}
"""Every study of the catalog by name, in the order ``normzoo study --list`` shows them."""


def find_study(name: str) -> Study:
    """The catalog's study called ``name``.

    Raises:
        ConfigError: no study has that name (the message lists the studies).
    """
    if name not in STUDIES:
        raise ConfigError(f"No study named {name!r}. Studies: {', '.join(STUDIES)} (normzoo study --list).")
    return STUDIES[name]


__all__ = ["STUDIES", "find_study"]
