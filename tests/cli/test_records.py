"""A run's record is true: last.ckpt is the final step, a failed write loses nothing, a checkpoint or setting that
cannot be right is refused with one line before anything is written."""

from __future__ import annotations

import errno
import os
import re
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short quickstart run: its folder and its last.ckpt."""
    runs = tmp_path_factory.mktemp("trained")
    main(["fit", "--config", "configs/quickstart.yaml", "--runs_dir", str(runs), "--trainer.max_steps", "5",
          "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    return runs / "quickstart" / "version_0"


def refused(capsys, *args: str) -> str:
    """The one error line of a CLI call that must exit with status 2."""
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("normzoo: error: "), err
    return err[0]


def test_a_checkpoint_of_another_model_is_refused_before_anything_is_written(trained, tmp_path, capsys):
    ckpt = str(trained / "checkpoints" / "last.ckpt")
    line = refused(capsys, "test", "--config", "configs/quickstart.yaml", "--model.norm", "ln", "--runs_dir",
                   str(tmp_path), "--ckpt_path", ckpt)
    assert "holds another model: norm: 'bn' in the checkpoint, 'ln' now" in line
    line = refused(capsys, "test", "--config", "configs/cifar10/mlp.yaml", "--model.norm", "gn", "--data.dataset",
                   "mnist5k", "--runs_dir", str(tmp_path), "--ckpt_path", ckpt)
    assert "norm: 'bn' in the checkpoint, 'gn' now" in line and "width: 100 in the checkpoint, 512 now" in line
    assert not list(tmp_path.iterdir())  # no run folder, no config.yaml


def test_a_resume_with_changed_settings_is_refused_and_the_record_is_untouched(trained, capsys):
    config = (trained / "config.yaml").read_text()
    line = refused(capsys, "fit", "--config", "configs/quickstart.yaml", "--runs_dir", str(trained.parent.parent),
                   "--ckpt_path", "last", "--optimizer.init_args.lr", "0.01")
    assert "cannot resume this run: optimizer.init_args.lr: 0.1 in the checkpoint, 0.01 now" in line
    assert (trained / "config.yaml").read_text() == config


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "text"])
def test_an_unreadable_checkpoint_is_one_clear_error(damage, trained, tmp_path, capsys):
    path = tmp_path / "bad.ckpt"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        whole = (trained / "checkpoints" / "last.ckpt").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif damage == "text":
        path.write_text("model: not a checkpoint\n")
    runs = tmp_path / "runs"
    line = refused(capsys, "test", "--config", "configs/quickstart.yaml", "--runs_dir", str(runs), "--ckpt_path",
                   str(path))
    expected = "no such checkpoint file" if damage == "missing" else "not a readable checkpoint"
    assert expected in line and "weights_only" not in line
    assert not runs.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--trainer.max_steps", "-2"], "`max_steps` must be a non-negative integer"),
    (["--optimizer.init_args.lr", "-0.1"], "--optimizer (torch.optim.SGD): Invalid learning rate: -0.1."),
])
def test_bad_training_settings_are_one_line_before_any_folder(args, message, tmp_path, capsys):
    line = refused(capsys, "fit", "--config", "configs/quickstart.yaml", "--runs_dir", str(tmp_path), *args)
    assert message in line
    assert not list(tmp_path.iterdir())


def test_a_diverged_run_is_not_resumed(tmp_path, capsys):
    blowup = ["fit", "--config", "configs/quickstart.yaml", "--runs_dir", str(tmp_path), "--model.norm", "none",
              "--optimizer.init_args.lr", "1e9", "--trainer.max_steps", "40", "--divergence.check_every_n_steps", "2",
              "--trainer.enable_progress_bar", "false"]
    main(blowup)
    assert "DIVERGED" in capsys.readouterr().out
    line = refused(capsys, *blowup, "--ckpt_path", "last")
    assert re.search(r"this run diverged at step \d+ .* is not resumed", line), line


def test_folders_that_cannot_be_written_are_one_line(trained, tmp_path, capsys):
    unwritable = "/proc/normzoo-runs"  # /proc takes no new folders, even for root
    line = refused(capsys, "fit", "--config", "configs/quickstart.yaml", "--runs_dir", unwritable)
    assert f"--runs_dir {unwritable} cannot be written into" in line
    line = refused(capsys, "report", str(trained), "--out", unwritable)
    assert f"--out {unwritable} cannot be written into" in line
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    line = refused(capsys, "report", str(trained), "--out", str(not_a_folder))
    assert "is a file, not a folder" in line
