"""``normzoo study``: list the catalog's studies, or run one of them.

    normzoo study --list                               # the studies: name, runs, claim
    normzoo study santurkar --quick                    # MNIST-5k, minutes on a CPU
    normzoo study santurkar --quick --dry-run          # the plan, the estimate and every command
    normzoo study santurkar --quick --seeds 5          # 5 seeds per run instead of quick mode's 3
    normzoo study wu_he --quick --jobs 2 -- --trainer.max_epochs 2   # after --: to every normzoo fit

The options after the study's name are those of ``normzoo.studies.runner``
(``normzoo study <name> --help``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from normzoo.errors import ConfigError
from normzoo.studies.catalog import STUDIES, find_study
from normzoo.studies.runner import main as run_main

USAGE = """usage: normzoo study --list
       normzoo study NAME [--quick | --tiny] [--seeds N] [--dry-run] [--only RUN ...] [--jobs N] [--report-only]
                          [-- FIT_ARGS]

Run a study: its `normzoo fit` runs side by side, each over seeds, then `normzoo report` with the verdict on
each of its claims. NAME --help lists the options.
"""


def listing() -> str:
    """One line per study of the catalog: its name, its number of runs and its claim."""
    width = max(len(name) for name in STUDIES)
    return "\n".join(f"{name:<{width}}  {len(study.runs):>2} runs  {study.title}" for name, study in STUDIES.items())


def main(argv: Sequence[str]) -> int:
    """``normzoo study ARGS``: returns the exit status (2 for an unknown study or bad options)."""
    argv = list(argv)
    if argv[:1] == ["--list"]:
        print(listing())
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\nStudies:\n" + listing())
        return 0 if argv else 2
    try:
        study = find_study(argv[0])
    except ConfigError as error:
        print(f"normzoo study: error: {error}", file=sys.stderr)
        return 2
    return run_main(study, argv[1:], prog=f"normzoo study {study.name}")
