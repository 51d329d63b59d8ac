"""Terminal output: a live bar on a terminal; redirected, one plain line per epoch and per validation.

A fit whose stdout and stderr go to a file must leave a log a person can read: no carriage
returns or escape codes, no line thousands of characters long, one line per epoch with its
metrics, and every warning on a line of its own.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from normzoo.progress import LineProgressBar, default_progress_bar, format_line, interactive, line_metrics

ROOT = Path(__file__).resolve().parents[2]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # every C0 control but \t and \n, and DEL
MAX_LINE = 200
METRIC = r"\d+\.\d{4}"
WARNING = re.compile(r"\S+\.py:\d+: ")  # how Python's warnings module starts a message


def test_a_line_shows_epoch_step_metrics_and_timing():
    line = format_line(epoch=1, step=67, metrics={"train/loss": 0.21374, "val/loss": 0.3012, "val/acc": 0.912},
                       seconds=5.3, steps=67, elapsed=65.2, max_epochs=10)
    assert line == ("epoch 1/10  step 67  train/loss 0.2137  val/loss 0.3012  val/acc 0.9120  "
                    "5.3s  12.6 steps/s  total 0:01:05")


def test_a_validation_line_says_where_it_came_and_limits_show_only_when_set():
    line = format_line(epoch=3, step=130, metrics={"val/acc": 0.5}, seconds=0.0, steps=0, elapsed=3725,
                       max_epochs=-1, max_steps=2000, where="validation at batch 30/67")
    assert line == "epoch 3  step 130/2000  validation at batch 30/67  val/acc 0.5000  0.0s  total 1:02:05"


def test_lines_show_the_key_metrics_first_and_no_stale_validation():
    trainer = SimpleNamespace(
        progress_bar_metrics={"lr": 0.1, "val/acc": 0.9, "train/loss": 0.5},
        callback_metrics={"val/loss": torch.tensor(0.25), "val/acc": torch.tensor(0.9), "hist": torch.zeros(3)},
    )
    assert line_metrics(trainer, ("train/loss", "val/loss", "val/acc"), validated=True) == {
        "train/loss": 0.5, "val/loss": 0.25, "val/acc": pytest.approx(0.9), "lr": 0.1}
    assert line_metrics(trainer, ("train/loss", "val/loss", "val/acc"), validated=False) == {
        "train/loss": 0.5, "lr": 0.1}


def test_a_terminal_gets_the_live_bar_and_anything_else_lines(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not interactive()
    assert isinstance(default_progress_bar(10), LineProgressBar)
    monkeypatch.setattr("normzoo.progress.interactive", lambda: True)
    bar = default_progress_bar(10)
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 10


def redirected_fit(tmp_path: Path, *options: str) -> str:
    """Run ``normzoo fit`` on the quickstart with stdout and stderr both going to one file; the file's text."""
    log = tmp_path / "fit.log"
    command = [sys.executable, "-m", "normzoo", "fit", "--config", "configs/quickstart.yaml", "--runs_dir",
               str(tmp_path / "runs"), "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with log.open("wb") as handle:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=400)
    text = log.read_bytes().decode()
    assert result.returncode == 0, text[-3000:]
    return text


def progress_lines(text: str) -> list[str]:
    """The log's progress lines, after checking that none is spliced into another line."""
    lines = text.splitlines()
    assert len(re.findall(r"epoch \d+/2  step", text)) == sum(line.startswith("epoch ") for line in lines)
    return [line for line in lines if line.startswith("epoch ")]


def test_a_redirected_fit_logs_one_plain_line_per_epoch_and_per_validation(tmp_path):
    text = redirected_fit(tmp_path, "--trainer.limit_train_batches", "10", "--trainer.val_check_interval", "5",
                          "--trainer.log_every_n_steps", "5")
    assert not CONTROL.findall(text), sorted(set(CONTROL.findall(text)))
    # longer lines are only Python warnings (their file path's length is the machine's) and Lightning's advert
    # for its cloud logger ("\U0001f4a1 Tip: ..."), each on a line of its own; the run's folder (a pytest
    # temporary path, longer under pytest-xdist) counts as a short one
    long = [line for line in text.replace(str(tmp_path), "TMP").splitlines() if len(line) > MAX_LINE]
    assert all(WARNING.match(line) or line.startswith("\U0001f4a1 Tip: ") for line in long), long
    assert "Validation" not in text and "Sanity" not in text
    timing = r"  \d+\.\ds  \d+\.\d steps/s  total \d+:\d\d:\d\d"
    metrics = f"  train/loss {METRIC}  val/loss {METRIC}  val/acc {METRIC}"
    expected = [(1, 5, "  validation at batch 5/10"), (1, 10, ""), (2, 15, "  validation at batch 5/10"), (2, 20, "")]
    lines = progress_lines(text)
    assert len(lines) == len(expected), lines
    for line, (epoch, step, where) in zip(lines, expected, strict=True):
        assert re.fullmatch(f"epoch {epoch}/2  step {step}{where}{metrics}{timing}", line), line
    assert text.index("epoch 2/2  step 20") < text.index("normzoo fit finished: epoch 2, step 20")


def test_the_cli_writes_lines_when_redirected_and_enable_progress_bar_false_turns_them_off(tmp_path):
    from normzoo.cli import NormZooCLI, own_arguments_only

    common = ["--config", "configs/quickstart.yaml", "--runs_dir", str(tmp_path), "--trainer.accelerator", "cpu"]
    with own_arguments_only():  # pytest captures stdout: not a terminal
        redirected = NormZooCLI(args=common, run=False)
        quiet = NormZooCLI(args=[*common, "--trainer.enable_progress_bar", "false"], run=False)
    assert [type(cb) for cb in redirected.trainer.callbacks if isinstance(cb, ProgressBar)] == [LineProgressBar]
    assert not [cb for cb in quiet.trainer.callbacks if isinstance(cb, ProgressBar)]
