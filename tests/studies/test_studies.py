"""The catalog's studies: each runs end to end in tiny mode; divergence, restarts, estimates and slots."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from normzoo.report.cells import seeded_name
from normzoo.report.runs import load_run, load_runs
from normzoo.studies import STUDIES, Study, StudyRun, main, plan_runs, run_study
from normzoo.studies.estimate import estimate_runs, format_duration, planned_steps, schedule_seconds
from normzoo.studies.runner import make_slots
from normzoo.studies.spec import is_finished, resume_args

ROOT = Path(__file__).resolve().parents[2]
QUICK_OVERLAY = "normzoo/studies/catalog/mlp_sweep.quick.yaml"


def legend(png: Path) -> set[str]:
    return set(Image.open(png).text["Legend"].split("; "))


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def distinct_runs(study: Study) -> list[StudyRun]:
    """The first run of each kind: runs whose overrides differ only in numbers (an LR, a batch size) share code."""
    seen, chosen = set(), []
    for run in study.runs:
        kind = tuple("#" if is_number(arg) else arg for arg in run.args_for("tiny"))
        if kind not in seen:
            seen.add(kind)
            chosen.append(run)
    return chosen


def test_distinct_runs_keep_every_norm_and_option_and_drop_numeric_variants():
    assert [run.name for run in distinct_runs(STUDIES["cohen_eos"])] == ["none_lr0.05", "bn_lr0.05", "ln_lr0.05",
                                                                          "gn_lr0.05"]
    assert len(distinct_runs(STUDIES["placement"])) == len(STUDIES["placement"].runs)  # relu/sigmoid, before/after


@pytest.mark.parametrize("name", STUDIES)
def test_each_study_runs_in_tiny_mode_and_reports_every_run(name, tmp_path):
    """Every kind of run of every study at one seed (the cheapest check of its machinery); the tutorial at 2 seeds.

    Runs that differ from one of these only in numbers go through the same code; the claims naming them
    are still listed (without values).
    """
    study = STUDIES[name]
    seeds = 2 if name == "tutorial" else 1
    runs = distinct_runs(study)
    assert run_study(study, "tiny", tmp_path, estimate=False, in_process=True, seeds=seeds,
                     only=[run.name for run in runs]) == 0
    report_dir = tmp_path / name / "tiny" / "report"
    report = (report_dir / "report.md").read_text()
    table = report.split("## Runs")[1]
    drawn = legend(report_dir / "curves" / "train_loss.png")
    for run in runs:
        for seed in range(seeds):
            assert f"| {seeded_name(run.name, seed)} |" in table
        assert run.name in drawn or f"{run.name} (diverged)" in drawn  # one line per cell
    assert study.claim.strip().splitlines()[0] in report
    claims = report.split("## Claims")[1].split("\n## ")[0]
    assert [line.split(" | ")[1] for line in claims.splitlines() if line.startswith("| ") and "`" in line] == [
        f"`{claim.expression}`" for claim in study.parsed_claims]
    extra_figures = {"ioffe_mnist": "bands", "santurkar": "heatmap.png", "wu_he": "versus.png",
                     "lr_sensitivity": "heatmap.png", "init_sensitivity": "heatmap.png"}
    if name in extra_figures:
        assert (report_dir / extra_figures[name]).exists()
    if seeds > 1:  # each seed is real and recorded, and the seeds of a run are one cell
        runs = {run.label: run for run in load_runs([tmp_path / name / "tiny"])}
        assert {label: run.hparams["seed"] for label, run in runs.items()} == {
            "bn_seed0": 0, "bn_seed1": 1, "none_seed0": 0, "none_seed1": 1}
        assert runs["bn_seed0"].scalars["train/loss"].values != runs["bn_seed1"].scalars["train/loss"].values
        assert "| bn | 2 | 0, 1 | 2 completed |" in report.split("## Cells")[1]


def tiny_study(*runs: StudyRun) -> Study:
    return Study(name="probe", title="A study of the machinery", claim="Nothing to claim.",
                 configs=("configs/quickstart.yaml",), quick_configs=(QUICK_OVERLAY,),
                 runs=runs, report_args=("--heatmap", "norm", "lr"), root=ROOT)


def test_a_diverging_run_is_marked_and_the_study_finishes_and_restarts_skip_it(tmp_path, capsys):
    study = tiny_study(StudyRun("calm", ("--model.norm", "bn", "--optimizer.init_args.lr", "0.1")),
                       StudyRun("blowup", ("--model.norm", "none", "--optimizer.init_args.lr", "1e9")))
    args = ["--tiny", "--seeds", "1", "--no-estimate", "--runs-dir", str(tmp_path)]
    assert main(study, [*args, "--jobs", "2"]) == 0  # 2 processes
    out = capsys.readouterr().out
    assert "blowup_seed0: diverged at step" in out and "calm_seed0: completed at step 3" in out
    root = tmp_path / "probe" / "tiny"
    report = (root / "report" / "report.md").read_text()
    assert "| blowup_seed0 | **diverged** at step" in report and "| calm_seed0 | completed | 3 |" in report
    assert "| none | – | diverged |" in report  # the heat map's table: lr 0.1 and 1e9
    assert load_run(root / "blowup_seed0" / "version_0").status == "diverged"
    assert "DIVERGED: the training loss became NaN/inf by step" in (root / "logs" / "blowup_seed0.log").read_text()

    assert main(study, [*args, "--in-process"]) == 0
    assert "2 already finished, 0 to run" in capsys.readouterr().out
    assert sorted(p.name for p in (root / "calm_seed0").iterdir()) == ["version_0"]


def test_an_interrupted_run_without_checkpoint_restarts_from_scratch(tmp_path, capsys):
    study = tiny_study(StudyRun("late", ("--model.norm", "bn")))
    partial = tmp_path / "probe" / "tiny" / "late_seed0" / "version_0"
    with SummaryWriter(str(partial)) as writer:  # what a killed run leaves: events, no zoo/run/completed
        writer.add_scalar("train/loss", 2.0, 1)
    assert not is_finished(partial.parent)
    assert resume_args(partial.parent) == () and not partial.parent.exists()
    partial.mkdir(parents=True)
    (partial / "checkpoints").mkdir()
    (partial / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resume_args(partial.parent) == ("--ckpt_path", "last")
    (partial / "checkpoints" / "last.ckpt").unlink()
    assert run_study(study, "tiny", tmp_path, estimate=False, in_process=True, seeds=1) == 0
    assert "0 already finished, 1 to run" in capsys.readouterr().out
    assert load_run(partial).status == "completed"


def test_the_estimate_counts_the_trainers_steps_and_times_them(tmp_path):
    study = tiny_study(StudyRun("a", ("--model.norm", "bn")), StudyRun("b", ("--model.norm", "bn")),
                       StudyRun("c", ("--model.norm", "none", "--data.batch_size", "30")))
    quick = estimate_runs(plan_runs(study, "quick", tmp_path), torch.device("cpu"))  # 3 seeds each
    steps = {"a": 335, "b": 335, "c": 670}  # 5 x ceil(4,000 / B)
    assert {name: e.steps for name, e in quick.items()} == {f"{n}_seed{k}": steps[n] for n in steps for k in range(3)}
    assert quick["a_seed0"].step_seconds == quick["b_seed2"].step_seconds > 0  # one timing per distinct setup
    tiny = estimate_runs(plan_runs(study, "tiny", tmp_path), torch.device("cpu"))
    assert {e.steps for e in tiny.values()} == {3}
    assert not any(tmp_path.iterdir())  # estimating writes nothing


def test_estimate_arithmetic():
    assert planned_steps(-1, 5, 75) == 375 and planned_steps(100, 5, 75) == 100 and planned_steps(50, None, 9) == 50
    assert planned_steps(-1, None, 10) == 10_000
    assert schedule_seconds([3, 2, 2, 1], 2) == 4 and schedule_seconds([3, 2, 2, 1], 1) == 8
    assert [format_duration(s) for s in (12, 600, 7200)] == ["12 s", "10 min", "2.0 h"]


def test_slots_are_one_per_gpu_or_a_share_of_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = make_slots(None)
    assert [slot.env["CUDA_VISIBLE_DEVICES"] for slot in gpus] == ["0", "1"]
    assert all("--trainer.devices" in slot.args and "gpu" in slot.args for slot in gpus)
    shared = make_slots(None, runs_per_gpu=3)  # small runs side by side on each GPU
    assert [slot.env["CUDA_VISIBLE_DEVICES"] for slot in shared] == ["0", "0", "0", "1", "1", "1"]
    assert shared[1].label == "GPU 0 share 1"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    cpus = make_slots(2)
    assert len(cpus) == 2 and cpus[0].env["OMP_NUM_THREADS"] == "4"
    per_core = make_slots(None)  # the default: a run per core, one thread each
    assert len(per_core) == 8 and per_core[0].env["OMP_NUM_THREADS"] == "1"


def test_dry_run_prints_every_command_and_bad_input_is_clear(tmp_path, capsys):
    study = tiny_study(StudyRun("a", ("--model.norm", "ln")))
    assert main(study, ["--quick", "--dry-run", "--no-estimate", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "normzoo fit --config" in out and "--model.norm ln" in out and "--run_name a" in out
    assert not (tmp_path / "probe").exists()
    assert main(study, ["--tiny", "--only", "b", "--runs-dir", str(tmp_path)]) == 2
    assert "--only b: no such run in probe. Its runs: a." in capsys.readouterr().err
    broken = Study(name="broken", title="", claim="", configs=("configs/nope.yaml",), quick_configs=(),
                   runs=(StudyRun("a"),), root=ROOT)
    assert main(broken, ["--dry-run"]) == 2
    assert "needs config files that are not there" in capsys.readouterr().err
    with pytest.raises(ValueError, match="names several runs"):
        tiny_study(StudyRun("a"), StudyRun("a"))


def test_a_run_finished_by_another_process_after_planning_is_skipped_once_claimed(tmp_path, capsys):
    """The race of two studies on one folder: this one planned the run, the other finished it before the claim."""
    from normzoo.report.runs import COMPLETED_TAG
    from normzoo.studies.runner import Slot, execute

    study = tiny_study(StudyRun("late", ("--model.norm", "bn")))
    (planned,) = plan_runs(study, "tiny", tmp_path, seeds=1)
    with SummaryWriter(str(planned.folder / "version_0")) as writer:  # what the other process left
        writer.add_scalar(COMPLETED_TAG, 1.0, 3)
    outcomes = execute([planned], [Slot("in process", {}, ())], tmp_path / "logs", in_process=True)
    assert outcomes == [] and "late_seed0: finished by another process meanwhile" in capsys.readouterr().out
    assert sorted(p.name for p in planned.folder.iterdir()) == ["version_0"]  # nothing trained again
