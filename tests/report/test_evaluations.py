"""normzoo report on evaluation folders (``evaluation.yaml`` beside the event file): a table of their own,
attached to their fit run, never a row or a curve of the runs."""

from __future__ import annotations

from normzoo.evaluation import Evaluation, write_evaluation
from normzoo.report import load_runs, write_report
from normzoo.report.runs import split_evaluations
from tests.report.test_report import make_run

FIT = {"val/acc": [(99, 0.8), (199, 0.9)], "train/loss": [(10, 2.0), (200, 0.3)], "zoo/run/completed": [(200, 1.0)]}


def test_an_evaluation_is_listed_with_its_fit_run_and_step(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs / "mlp" / "version_0", {"norm": "bn"}, FIT)
    evaluation_dir = make_run(runs / "mlp" / "version_1", {"norm": "bn"}, {"test/acc": [(199, 0.88)]})
    write_evaluation(evaluation_dir, Evaluation("test", "runs/mlp/version_0/checkpoints/epoch=1-step=200.ckpt",
                                                200, 1, "../version_0"))

    loaded = load_runs([runs])
    fits, evaluations = split_evaluations(loaded)
    assert [run.label for run in fits] == ["mlp/version_0"]
    assert evaluations[0].fit_run_dir == (runs / "mlp" / "version_0").resolve()

    report = write_report(loaded, tmp_path / "out").read_text()
    table, listed = report.split("## Evaluations of checkpoints")
    assert "mlp/version_1" not in table and "incomplete" not in table.split("Status:")[0]
    assert "| mlp/version_0 | test | epoch=1-step=200.ckpt | 200 | 0.8800 | mlp/version_1 |" in listed


def test_an_evaluation_of_a_run_not_in_the_report_names_its_folder(tmp_path):
    evaluation_dir = make_run(tmp_path / "eval" / "version_0", {}, {"val/acc": [(5, 0.7)]})
    write_evaluation(evaluation_dir, Evaluation("validate", "/elsewhere/last.ckpt", 6, 0, None))
    report = write_report(load_runs([evaluation_dir]), tmp_path / "out").read_text()
    assert "| – | validate | last.ckpt | 6 | 0.7000 | eval |" in report


def test_an_unreadable_record_marks_the_folder_broken(tmp_path):
    folder = make_run(tmp_path / "runs" / "x" / "version_0", {}, {"val/acc": [(5, 0.7)]})
    (folder / "evaluation.yaml").write_text("step: [unclosed")
    (run,) = load_runs([folder])
    assert run.status == "broken" and "evaluation.yaml" in run.broken
