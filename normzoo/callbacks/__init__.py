"""Diagnostics callbacks (distribution drift, dead units, running statistics, landscape)."""

__all__: list[str] = []
