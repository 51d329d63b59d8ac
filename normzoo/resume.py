"""``--ckpt_path last``: find the newest checkpoint of a run, so a resumed fit continues it in place.

A run lives in ``<runs_dir>/<run_name>/version_N``, with ``checkpoints/last.ckpt`` written
by the CLI's NormZooCheckpoint at every validation and at the end of fit. Resuming the newest version that has one
into the same ``version_N`` (same TensorBoard folder, same checkpoints) makes the curves
join: the resumed process logs from the checkpoint's step on.
"""

from __future__ import annotations

import re
from pathlib import Path

from normzoo.errors import ConfigError

LAST = "last"
"""The ``--ckpt_path`` value that means "the newest last.ckpt of this run"."""


def last_checkpoint(runs_dir: str | Path, run_name: str) -> tuple[Path, int]:
    """The newest ``version_N/checkpoints/last.ckpt`` of a run, and its version ``N``.

    Raises:
        ConfigError: the run has no version with a ``last.ckpt``.
    """
    run = Path(runs_dir) / run_name
    versions = sorted(
        (int(match.group(1)), path)
        for path in (run.iterdir() if run.is_dir() else [])
        if (match := re.fullmatch(r"version_(\d+)", path.name)) and (path / "checkpoints" / "last.ckpt").is_file()
    )
    if not versions:
        raise ConfigError(
            f"--ckpt_path last: no checkpoint to resume under {run}/version_*/checkpoints/last.ckpt. Start the run "
            "without --ckpt_path, pass --run_name/--runs_dir of an existing run, or give a checkpoint's path."
        )
    version, path = versions[-1]
    return path / "checkpoints" / "last.ckpt", version
