"""The ``normzoo`` commands and their one-line descriptions, as ``normzoo --help`` lists them.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI's subcommands; ``report``,
``study`` and ``sweep`` are normzoo's own, dispatched by ``normzoo.cli.main`` before any LightningCLI is
built. Listing all seven in one place lets the top-level help show every command.
"""

from __future__ import annotations

DESCRIPTION = "normzoo: train, evaluate and compare normalization layers. Add --help after a command for its options."
"""The top-level help's description."""

COMMANDS = {
    "fit": "Train a model; --ckpt_path last resumes a run",
    "validate": "Evaluate a checkpoint on the validation set",
    "test": "Evaluate a checkpoint on the test set",
    "predict": "Predict with a checkpoint on the test set",
    "report": "Compare runs: a Markdown table and PNG figures",
    "study": "Reproduce a paper's claim: its runs, then a report",
    "sweep": "Train a grid of overrides of any config, times seeds",
}
"""Every command, in the order ``normzoo --help`` lists them; each description fits one help line."""

OWN_COMMANDS = ("report", "study", "sweep")
"""The commands that are normzoo's own rather than LightningCLI's."""
