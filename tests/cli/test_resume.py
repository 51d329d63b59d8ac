"""``normzoo fit --ckpt_path last``: an interrupted run, resumed, equals the uninterrupted one."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from normzoo.cli import main
from tests.tb_events import load_events, scalar_series


class StopAtEpoch(L.Callback):
    """Simulates a crash at the start of an epoch, after the previous epoch's checkpoint."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"interrupted at epoch {self.epoch}")


def fit(runs_dir, *extra: str) -> None:
    main(["fit", "--config", "configs/quickstart.yaml", "--runs_dir", str(runs_dir), "--trainer.max_epochs", "3",
          "--trainer.limit_train_batches", "10", "--trainer.log_every_n_steps", "1",
          "--trainer.enable_progress_bar", "false", *extra])


def run_outcome(version_dir, files: int) -> tuple[dict[str, list[tuple[int, float]]], dict[str, torch.Tensor]]:
    events = load_events(version_dir, expected_files=files)  # every event file of the folder, in order
    curves = {tag: scalar_series(events, tag) for tag in ("train/loss", "val/acc", "val/loss")}
    weights = torch.load(version_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    return curves, weights


def test_resume_from_last_continues_the_run_in_place(tmp_path):
    fit(tmp_path / "whole")
    stop = json.dumps([{"class_path": "tests.cli.test_resume.StopAtEpoch", "init_args": {"epoch": 2}}])
    with pytest.raises(RuntimeError, match="interrupted at epoch 2"):
        fit(tmp_path / "split", f"--trainer.callbacks={stop}")
    fit(tmp_path / "split", "--ckpt_path", "last")

    run = tmp_path / "split" / "quickstart"
    assert [p.name for p in run.iterdir()] == ["version_0"]  # the same logger version, continued
    whole_curves, whole_weights = run_outcome(tmp_path / "whole" / "quickstart" / "version_0", files=1)
    split_curves, split_weights = run_outcome(run / "version_0", files=2)  # one per process
    for tag, series in whole_curves.items():
        steps = [step for step, _ in split_curves[tag]]
        assert steps == sorted(set(steps)), f"{tag}: a gap or a duplicate"
        assert steps == [step for step, _ in series], tag
        assert [v for _, v in split_curves[tag]] == pytest.approx([v for _, v in series], rel=1e-6), tag
    for key, value in whole_weights.items():
        torch.testing.assert_close(split_weights[key], value, rtol=1e-6, atol=1e-7, msg=key)


def test_resume_from_last_without_a_run_names_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit):
        fit(tmp_path, "--ckpt_path", "last")
    assert "no checkpoint to resume under" in capsys.readouterr().err
