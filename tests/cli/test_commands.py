"""The command line as a whole: ``normzoo --help`` lists every command, and Lightning's
``--trainer.default_root_dir`` sets where runs go, as ``--runs_dir`` does."""

from __future__ import annotations

import re

import pytest

from normzoo.cli import main
from normzoo.commands import COMMANDS


def exit_status(*args: str) -> int | str | None:
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    return stop.value.code


def test_help_lists_every_command_with_its_description(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal's width
    assert exit_status("--help") == 0
    out = capsys.readouterr().out
    assert set(COMMANDS) == {"fit", "validate", "test", "predict", "report", "study", "sweep"}
    assert "{fit,validate,test,predict,report,study,sweep}" in out
    for name, description in COMMANDS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(description)}$", out, re.MULTILINE), name


@pytest.mark.parametrize(("command", "usage"), [("report", "usage: normzoo report"), ("study", "normzoo study"),
                                                    ("sweep", "usage: normzoo sweep")])
def test_normzoos_own_commands_keep_their_help(command, usage, capsys):
    status = 0
    try:
        main([command, "--help"])
    except SystemExit as stop:
        status = stop.code or 0
    assert status == 0
    assert usage in capsys.readouterr().out


def test_default_root_dir_sets_where_runs_go(tmp_path, capsys):
    main(["fit", "--config", "configs/quickstart.yaml", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    run = tmp_path / "quickstart" / "version_0"
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert f"logs: {run}" in capsys.readouterr().out


def test_default_root_dir_and_another_runs_dir_are_refused(tmp_path, capsys):
    status = exit_status("fit", "--config", "configs/quickstart.yaml", "--trainer.default_root_dir",
                         str(tmp_path / "a"), "--runs_dir", str(tmp_path / "b"), "--trainer.max_steps", "2")
    assert status == 2
    err = capsys.readouterr().err
    assert "normzoo: error: --trainer.default_root_dir" in err and "Give one of them" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
