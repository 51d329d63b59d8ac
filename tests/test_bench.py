"""scripts/bench.py runs end to end and prints its table (a smoke test: timings are never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from normzoo.norms import available_norms
from tests.fixtures import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_bench_prints_a_row_per_norm_and_precision_and_names_the_norms_the_model_refuses():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--model", "mlp", "--norms", "bn", "in", "gn",
         "--steps", "3", "--warmup", "1", "--repeats", "1", "--accelerator", "cpu"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| bn ") or line.startswith("| gn ")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1:3] == ["32-true", "eager"] and cells[5].endswith("x") and cells[6].endswith("x")
        assert float(cells[3].replace(",", "")) > 0 and float(cells[4].replace(",", "")) > 0
    assert rows[0].split("|")[7].strip() == "1.00x"  # bn against itself
    assert "not timed: in (mlp refuses it: Norm 'in' (InstanceNorm) normalizes each channel" in result.stdout


def test_all_is_every_registered_norm_with_bn_first(monkeypatch):
    bench = load_script("bench", monkeypatch)
    assert bench.norms_to_bench(["all"]) == ["bn", *(name for name in available_norms() if name != "bn")]
    assert bench.norms_to_bench(["gn", "bn"]) == ["gn", "bn"]


def test_bench_times_the_quickstart_against_a_plain_loop():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quickstart", "--repeats", "1", "--accelerator", "cpu",
         "--trainer.max_epochs", "1"],
        capture_output=True, text=True, timeout=300, check=True, cwd=ROOT,
    )
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    fit_s, plain_s, ratio, fit_accuracy, plain_accuracy = (cell.strip() for cell in row.strip("|").split("|"))
    assert float(fit_s) > 0 and float(plain_s) > 0 and ratio.endswith("x")
    assert abs(float(fit_accuracy) - float(plain_accuracy)) < 0.02  # the same training, twice
