"""Reading the steps a diagnostics callback has measured out of its history."""

from __future__ import annotations


def measured_steps(history: list[dict[str, float]]) -> set[int]:
    """Steps in a callback's ``history``: one record per measurement."""
    return {int(record["step"]) for record in history}
