"""Checkpoints are what their names say: ``last.ckpt`` holds the final step, and a failed write loses nothing."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from normzoo import checkpoint as checkpoint_module
from normzoo.checkpoint import AtomicCheckpointIO, CheckpointWriteError
from normzoo.cli import main


def test_last_ckpt_is_the_final_step_even_when_the_best_came_early(tmp_path, capsys):
    # mode min on val/acc: the best checkpoint is the first validation's, as when accuracy peaks early
    main(["fit", "--config", "configs/quickstart.yaml", "--runs_dir", str(tmp_path), "--trainer.max_steps", "30",
          "--trainer.val_check_interval", "10", "--checkpoint.mode", "min", "--trainer.enable_progress_bar", "false"])
    folder = tmp_path / "quickstart" / "version_0" / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 30
    assert torch.load(folder / "epoch=0-step=10.ckpt", weights_only=False)["global_step"] == 10
    summary = capsys.readouterr().out
    assert f"best checkpoint (step 10): {folder / 'epoch=0-step=10.ckpt'}" in summary
    assert f"last checkpoint (step 30): {folder / 'last.ckpt'}" in summary
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"step": 1, "weights": torch.arange(4.0)}, path)
    mode = stat.S_IMODE(path.stat().st_mode)

    def disk_full(obj, file):  # half of the bytes get written, then the disk is full
        file.write(b"\x80\x02partial checkpoint bytes")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"last.ckpt: .*No space left on device.*previous .* intact"):
        writer.save_checkpoint({"step": 2, "weights": torch.zeros(4)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert mode == 0o666 & ~_umask()  # an ordinary file's permissions, not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
