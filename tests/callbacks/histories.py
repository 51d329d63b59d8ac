"""Reading the steps a diagnostics callback has measured out of its history (either layout)."""

from __future__ import annotations

from typing import Any


def measured_steps(history: list[dict[str, float]] | dict[str, list[dict[str, float]]]) -> set[int]:
    """Steps in a callback's ``history``: a list of records, or per-layer lists of records."""
    records: list[Any] = [r for rs in history.values() for r in rs] if isinstance(history, dict) else history
    return {int(record["step"]) for record in records}
