"""An evaluation of a checkpoint says what it evaluated: its summary names the checkpoint and step, its metrics are
logged at that step, and ``normzoo report`` shows it as an evaluation of its fit run, not as a run of its own."""

from __future__ import annotations

import pytest
from PIL import Image

from normzoo.cli import main
from normzoo.evaluation import read_evaluation
from tests.tb_events import load_events, scalar_series

COMMON = ["--config", "configs/quickstart.yaml", "--trainer.enable_progress_bar", "false",
          "--trainer.limit_val_batches", "2"]


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory):
    """A 12-step quickstart fit validated every 5 steps: checkpoints at steps 10 (best) and 12 (last)."""
    runs = tmp_path_factory.mktemp("evaluated")
    main(["fit", *COMMON, "--runs_dir", str(runs), "--trainer.max_steps", "12", "--trainer.val_check_interval", "5"])
    return runs / "quickstart" / "version_0"


def test_validate_names_the_checkpoint_and_logs_at_its_step(fit_run, capsys):
    checkpoint = fit_run / "checkpoints" / "epoch=0-step=10.ckpt"
    capsys.readouterr()
    main(["validate", *COMMON, "--runs_dir", str(fit_run.parent.parent), "--ckpt_path", str(checkpoint)])
    out = capsys.readouterr().out
    assert f"normzoo validate finished: checkpoint {checkpoint} (epoch 0, step 10)" in out

    evaluation_dir = fit_run.parent / "version_1"
    evaluation = read_evaluation(evaluation_dir)
    assert evaluation is not None
    assert (evaluation.command, evaluation.checkpoint, evaluation.step, evaluation.epoch) == \
        ("validate", str(checkpoint), 10, 0)
    assert evaluation.fit_run_dir(evaluation_dir) == fit_run.resolve()
    # the same weights on the same data: the fit's own validation of step 10, at the same point of the curve
    fit_acc = scalar_series(load_events(fit_run), "val/acc")
    (evaluated,) = scalar_series(load_events(evaluation_dir), "val/acc")
    assert evaluated[0] > 0 and evaluated in fit_acc


def test_test_and_predict_name_the_checkpoint_and_the_report_attaches_them_to_the_fit_run(fit_run, tmp_path,
                                                                                          capsys):
    runs = fit_run.parent.parent
    last = fit_run / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    main(["test", *COMMON, "--runs_dir", str(runs), "--ckpt_path", str(last)])
    main(["predict", *COMMON, "--runs_dir", str(runs), "--ckpt_path", str(last)])
    out = capsys.readouterr().out
    assert f"normzoo test finished: checkpoint {last} (epoch 1, step 12)" in out
    assert f"normzoo predict finished: checkpoint {last} (epoch 1, step 12)\n  500 predictions" in out
    tested = [folder for folder in fit_run.parent.iterdir() if (evaluation := read_evaluation(folder)) and
              evaluation.command == "test"]
    assert [step for step, _ in scalar_series(load_events(tested[0]), "test/acc")] == [12]

    main(["report", str(runs), "--out", str(tmp_path / "report")])
    assert "normzoo report: 1 runs (0 diverged), " in capsys.readouterr().out
    report = (tmp_path / "report" / "report.md").read_text()
    runs_table, evaluations = report.split("## Evaluations of checkpoints")
    assert "incomplete |" not in runs_table
    assert [line.split(" | ")[:2] for line in runs_table.splitlines() if line.startswith("| quickstart")] == \
        [["| quickstart/version_0", "completed"]]
    rows = [line.split(" | ") for line in evaluations.splitlines() if line.startswith("| quickstart/version_0 |")]
    assert {("predict", "last.ckpt", "12"), ("test", "last.ckpt", "12")} <= {tuple(row[1:4]) for row in rows}
    legend = Image.open(tmp_path / "report" / "curves" / "val_acc.png").text["Legend"]
    assert "quickstart" in legend.split("; ") and "version_1" not in legend  # the fit's cell; no evaluation curve
    assert not [name for name in ("version_1", "version_2", "version_3") if name in legend]  # no curves of their own
