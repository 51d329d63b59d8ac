"""scripts/bench.py runs end to end and prints its table (a smoke test: timings are never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_prints_a_row_per_norm_and_precision():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--model", "mlp", "--norms", "bn", "gn",
         "--steps", "3", "--warmup", "1", "--repeats", "1", "--accelerator", "cpu"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| bn ") or line.startswith("| gn ")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == "32-true" and cells[4].endswith("x")
        assert float(cells[2].replace(",", "")) > 0 and float(cells[3].replace(",", "")) > 0
