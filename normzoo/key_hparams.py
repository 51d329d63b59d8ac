"""The hyperparameters that tell runs apart, which TensorBoard's HPARAMS tab shows first and ticked.

A normzoo run's hparams session holds ~36 hyperparameters (every model, data and optimizer
argument). TensorBoard's HPARAMS tab sorts the experiment's hyperparameters with ``differs``
set first, then by name, and ticks the first ``TICKED`` of them; the others stay listed but
hidden. The key hyperparameters of a run are those its command line overrides (what a study
varies: ``--model.norm gn``, ``--optimizer.init_args.lr 0.5``), then ``CORE_HPARAMS``;
the first ``TICKED`` of them are the ones marked ``differs``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

CORE_HPARAMS = ("norm", "model", "lr", "data/batch_size", "precision", "seed", "world_size")
"""Hyperparameters that tell most runs apart, in order of importance."""

TICKED = 5
"""How many hyperparameters TensorBoard's HPARAMS tab ticks (shows as columns) by default."""

ALIASES = {"optimizer/lr": "lr", "seed_everything": "seed"}
"""Command-line paths (``init_args`` left out) whose hyperparameter has another name in the session."""

NOT_OVERRIDES = ("config", "print_config")
"""Command-line options that name files or actions, not values of the run."""


def command_line_paths(argv: Iterable[str]) -> list[str]:
    """The dotted paths a command line sets, in order (``--model.norm=bn`` and ``--model.norm bn``: ``model.norm``)."""
    paths = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            path = token[2:].split("=", 1)[0]
            if path not in NOT_OVERRIDES:
                paths.append(path)
    return paths


def hparams_of_path(path: str, names: Sequence[str]) -> list[str]:
    """The session hyperparameters among ``names`` that the command-line ``path`` sets.

    ``model.norm`` sets ``norm`` (the model's arguments are top-level), ``data.init_args.batch_size``
    sets ``data/batch_size``, ``trainer.precision`` sets ``precision``, ``optimizer.init_args.lr``
    sets ``lr``; a whole group (``--optimizer torch.optim.Adam``) sets its class, and a mapping
    (``--model.norm_kwargs '{num_groups: 8}'``) the keys under it. Trainer options that are not
    hyperparameters (``trainer.max_steps``, ``trainer.callbacks+``) set none.
    """
    segments = [segment for segment in path.split(".") if segment != "init_args"]
    if len(segments) > 1 and segments[0] in ("model", "trainer"):
        segments = segments[1:]
    wanted = "/".join(segments)
    wanted = ALIASES.get(wanted, wanted)
    by_short_name = {name.replace("/init_args/", "/"): name for name in names}
    for candidate in (wanted, f"{wanted}/class_path", f"{wanted}/class"):
        if candidate in by_short_name:
            return [by_short_name[candidate]]
    return [name for short, name in by_short_name.items() if short.startswith(f"{wanted}/")]


def key_hparams(names: Sequence[str], overridden_paths: Iterable[str]) -> list[str]:
    """The key hyperparameters among ``names``: those the command line overrides, then ``CORE_HPARAMS``."""
    found: list[str] = []
    for path in overridden_paths:
        found += hparams_of_path(path, names)
    found += [name for name in CORE_HPARAMS if name in names]
    return list(dict.fromkeys(found))
