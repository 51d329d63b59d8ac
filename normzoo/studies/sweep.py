"""Sweeps: a grid of overrides of any ``normzoo fit`` config, times seeds, run as a study without claims.

    normzoo sweep my_sweep --config configs/quickstart.yaml --grid model.norm=bn,gn,ln \\
        --grid optimizer.init_args.lr=0.01,0.1 --seeds 3 --dry-run

Each ``--grid KEY=V1,V2,...`` is one axis: ``KEY`` a ``normzoo fit`` option without its dashes
(``model.norm``, ``optimizer.init_args.lr``, ``data.init_args.batch_size``), the values
separated by commas (a value that holds a comma, such as ``{num_groups: 8}``, takes
``--grid 'model.norm_kwargs={num_groups: 8};{num_groups: 16}'``: semicolons separate the values
when there is one). The grid is every combination of the axes; each point is one run, named
after what it varies, ``<axis>-<value>`` joined by ``_`` (``norm-bn_lr-0.01``), trained once per
seed into ``<runs_dir>/<sweep>/<run>_seed<k>``. The axis's name is the last part of its key
(``lr``), or more of it where two axes would share one.

A sweep is a ``Study`` (``normzoo.studies.spec``) with one mode and no claims, carried out by the
same runner: plan, estimate, executors, locks, resume, index, report. The catalog's grid studies
(``lr_sensitivity``, ``init_sensitivity``) are sweeps too: their runs are ``grid_runs`` of their axes,
named as the catalog names them, with claims added.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from normzoo.errors import ConfigError
from normzoo.studies.spec import Study, StudyRun

UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")
"""Characters a run's folder name does not keep from a value (``{num_groups: 8}`` -> ``num-groups-8``): ``_``
separates the axes."""


@dataclass(frozen=True)
class Axis:
    """One swept option: its ``normzoo fit`` key and its values, in order."""

    key: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Axis:
        """``KEY=V1,V2`` (or ``KEY=V1;V2`` when a value holds a comma) as an ``Axis``.

        Raises:
            ConfigError: no ``=``, an empty key or value, a repeated value, or a key that is the seed.
        """
        key, sep, values = text.partition("=")
        key = key.strip().lstrip("-")
        parts = [value.strip() for value in values.split(";" if ";" in values else ",")]
        if not sep or not key or not all(parts):
            raise ConfigError(f"--grid {text!r}: write KEY=V1,V2,... (a normzoo fit option without its dashes and "
                              "its values), e.g. --grid model.norm=bn,gn,ln.")
        if key in ("seed_everything", "seed"):
            raise ConfigError(f"--grid {text!r}: the sweep sets the seed of every run; give --seeds N instead.")
        repeated = sorted({value for value in parts if parts.count(value) > 1})
        if repeated:
            raise ConfigError(f"--grid {text!r} repeats {', '.join(repeated)}: each value once.")
        return cls(key, tuple(parts))


def axis_labels(axes: Sequence[Axis]) -> list[str]:
    """Each axis's short name: the last part of its key, more parts where two axes would share one."""
    for depth in range(1, max(len(axis.key.split(".")) for axis in axes) + 1):
        labels = [".".join(axis.key.split(".")[-depth:]) for axis in axes]
        if len(set(labels)) == len(labels):
            return labels
    raise ConfigError(f"--grid: the axes {', '.join(axis.key for axis in axes)} repeat a key; sweep each key once.")


def value_label(value: str) -> str:
    """A value as it appears in a run's name: the characters a folder name keeps, others as ``-``."""
    return UNSAFE.sub("-", value).strip("-") or "empty"


def grid_runs(axes: Sequence[Axis], name: Callable[[tuple[str, ...]], str] | None = None,
              fixed: tuple[str, ...] = ()) -> tuple[StudyRun, ...]:
    """Every combination of the axes' values, in order (the last axis varies fastest), as named runs.

    Args:
        axes: the axes.
        name: a point's values -> its run's name; default ``<axis>-<value>`` joined by ``_``
            (a catalog study keeps its own names, such as ``bn_lr0.1``).
        fixed: overrides every run has, before the point's.

    Raises:
        ConfigError: no axis, or two points whose names would be the same folder.
    """
    if not axes:
        raise ConfigError("A sweep needs at least one --grid KEY=V1,V2,... axis.")
    labels = axis_labels(axes)
    runs = []
    for point in itertools.product(*(axis.values for axis in axes)):
        title = name(point) if name is not None else "_".join(
            f"{label}-{value_label(value)}" for label, value in zip(labels, point, strict=True))
        args = tuple(arg for axis, value in zip(axes, point, strict=True) for arg in (f"--{axis.key}", value))
        runs.append(StudyRun(title, (*fixed, *args)))
    names = [run.name for run in runs]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ConfigError(f"--grid: different values give the same run name {', '.join(clashes)} (names keep only "
                          "letters, digits and . + -); make the values differ in those characters.")
    return tuple(runs)


def make_sweep(name: str, configs: Sequence[str | Path], axes: Sequence[Axis]) -> Study:
    """The sweep ``name`` over ``configs`` (config files, in order) as a ``Study`` the runner carries out.

    Raises:
        ConfigError: a name that is not one folder name, no config, an axis problem (``grid_runs``).
    """
    if not name or re.search(r"[^A-Za-z0-9._+-]", name) or name.startswith("."):
        raise ConfigError(f"Sweep name {name!r}: use letters, digits and . _ + - only (it names the sweep's folder).")
    if not configs:
        raise ConfigError("A sweep needs at least one --config FILE: the setup every run starts from.")
    paths = tuple(str(Path(config).resolve()) for config in configs)
    grid = " x ".join(f"{axis.key} in {{{', '.join(axis.values)}}}" for axis in axes)
    runs = grid_runs(axes)
    return Study(
        name=name,
        title=f"Sweep {name}: {grid}",
        claim=f"**Grid**: {grid} ({len(runs)} points), over {', '.join(paths)}.",
        configs=paths,
        quick_configs=(),
        runs=runs,
        report_args=("--no-diagnostics",),
        root=Path("/"),
        seeds={"full": 1},  # a sweep's own --seeds N asks for more
        sweep_axes=tuple(axes),
        flat=True,
    )


def build_parser() -> argparse.ArgumentParser:
    """``normzoo sweep``'s options: the sweep's name, configs and axes, then the runner's (``add_run_options``)."""
    from normzoo.studies.runner import add_run_options

    parser = argparse.ArgumentParser(
        prog="normzoo sweep", description="Train every combination of --grid values over the configs, each at every "
        "seed, as its own `normzoo fit` run; then index the runs and tabulate them by the swept axes.",
        epilog="Arguments after -- go to every `normzoo fit`. Runs go to <runs-dir>/<name>/<run>_seed<k>; "
               "<runs-dir>/<name>/index.csv lists them, sweep.md groups them by the axes.")
    parser.add_argument("name", help="the sweep's name: its folder under --runs-dir")
    parser.add_argument("--config", action="append", default=[], metavar="FILE", required=True,
                        help="a normzoo fit config (repeatable, in order)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", required=True,
                        help="an axis: a normzoo fit option without its dashes and its values (repeatable)")
    parser.add_argument("--figures", action="store_true",
                        help="also write normzoo report's figures over every run (slow for hundreds of runs)")
    add_run_options(parser, "runs/sweeps", "1")
    parser.set_defaults(mode="full")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``normzoo sweep ARGS``: run the sweep, return the exit status (2 for bad input)."""
    from normzoo.studies.runner import carry_out, split_fit_arguments

    own, extra = split_fit_arguments(argv)
    args = build_parser().parse_args(own)
    try:
        sweep = make_sweep(args.name, args.config, [Axis.parse(text) for text in args.grid])
    except ConfigError as error:
        print(f"normzoo sweep: error: {error}", file=sys.stderr)
        return 2
    return carry_out(sweep, args, extra, figures=args.figures)
