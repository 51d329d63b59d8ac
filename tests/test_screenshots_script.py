"""scripts/tensorboard_screenshots.py: a clear exit without Chromium, and one PNG per dashboard with it."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tensorboard_screenshots.py"
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)


def test_without_chromium_it_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--chromium", "no-such-browser-here", "--logdir", str(tmp_path),
         "--out", str(tmp_path / "shots")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "apt-get install chromium" in result.stderr
    assert not (tmp_path / "shots").exists()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_screenshots_every_dashboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "runs" / "bn")) as writer:
        for step in range(3):
            writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        writer.add_hparams({"norm": "bn", "lr": 0.1}, {"hparam/loss": 0.3}, run_name=".")
    width, height = 800, 600
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--logdir", str(tmp_path / "runs"), "--out", str(tmp_path / "shots"),
         "--chromium", CHROMIUM, "--width", str(width), "--height", str(height), "--max-height", "0",
         "--settle", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    printed = [Path(line) for line in result.stdout.splitlines() if line.endswith(".png")]
    assert [path.stem for path in printed] == ["timeseries", "scalars", "custom_scalars", "hparams_table",
                                               "hparams_parallel_coordinates", "hparams_scatter_matrix", "images"]
    for path in printed:
        head = path.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", head[16:24]) == (width, height)
