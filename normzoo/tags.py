"""Where normzoo's own TensorBoard tags live: every tag normzoo adds to a run starts with ``zoo/``.

TensorBoard's SCALARS and TIME SERIES dashboards group tags by their first path component, sort
the groups in ASCII order and open only the first two. A run's training metrics carry the names
Lightning users give them (``epoch``, ``train/loss``, ``val/acc``, ``val_loss``, ``lr-SGD``); a
prefix that sorts after all of them keeps those on top and open, and puts normzoo's diagnostics
and run records (dozens of cards) below, in one group. ``zoo`` is that prefix (after ``val``,
``train``, ``test``, ``loss`` and ``epoch`` in both dashboards' orderings).

Layout of the tags:

- ``zoo/<callback>/<layer>/<statistic>``: a diagnostic's statistic of one layer
  (``zoo/activation_drift/backbone.blocks.0/p15``), or ``zoo/<callback>/<statistic>`` for one
  of the whole model (``zoo/loss_landscape/loss_variation``);
- ``zoo/run/diverged``, ``zoo/run/completed``: what became of the run;
- ``zoo/bn/batch_size_per_rank``, ``zoo/bn/effective_batch_size``: the batch BN normalizes over.
"""

from __future__ import annotations

ROOT = "zoo"
"""The first component of every tag normzoo writes."""


def tag(*parts: str) -> str:
    """``zoo/<part>/<part>...``, leaving out empty parts."""
    return "/".join((ROOT, *(part for part in parts if part)))


RECORDS = ("run", "bn")
"""The groups under ``zoo/`` that hold records of the run, not a diagnostics callback's statistics."""


def diagnostic_callback(name: str) -> str | None:
    """The diagnostics callback a tag belongs to (``zoo/dead_units/...`` -> ``dead_units``), or None."""
    parts = name.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == ROOT and parts[1] not in RECORDS else None


DIVERGED = tag("run", "diverged")
COMPLETED = tag("run", "completed")
BN_BATCH_SIZE_PER_RANK = tag("bn", "batch_size_per_rank")
BN_EFFECTIVE_BATCH_SIZE = tag("bn", "effective_batch_size")
