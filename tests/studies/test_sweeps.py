"""``normzoo sweep``: the grid and its names, an index per sweep, each executor for real (local processes, a
local Ray cluster), preempted runs requeued and resumed, and two sweeps at once on one folder."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from normzoo.errors import ConfigError
from normzoo.report.runs import load_run
from normzoo.studies import plan_runs
from normzoo.studies.index import read_index, summarize
from normzoo.studies.sweep import Axis, axis_labels, grid_runs, main, make_sweep

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "quickstart.yaml")
STEPS = ["--trainer.max_epochs", "null", "--trainer.limit_val_batches", "2", "--trainer.check_val_every_n_epoch",
         "null", "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "1"]


def short(steps: int) -> list[str]:
    """``normzoo fit`` arguments of a short run: ``steps`` steps, validation at the end on 2 batches."""
    return ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps), *STEPS]


def test_axes_parse_and_name_every_point_of_the_grid():
    axes = [Axis.parse("model.norm=bn,gn"), Axis.parse("--optimizer.init_args.lr=0.01,0.1"),
            Axis.parse("model.norm_kwargs={num_groups: 4};{num_groups: 8}")]
    assert axes[1] == Axis("optimizer.init_args.lr", ("0.01", "0.1"))
    assert axis_labels(axes) == ["norm", "lr", "norm_kwargs"]
    runs = grid_runs(axes)
    assert len(runs) == 8 and runs[0].name == "norm-bn_lr-0.01_norm_kwargs-num-groups-4"
    assert runs[-1].args == ("--model.norm", "gn", "--optimizer.init_args.lr", "0.1", "--model.norm_kwargs",
                             "{num_groups: 8}")
    assert axis_labels([Axis("model.init_args.lr", ("1",)), Axis("optimizer.init_args.lr", ("1",))]) == [
        "model.init_args.lr", "optimizer.init_args.lr"]


@pytest.mark.parametrize(("text", "message"), [
    ("model.norm", "write KEY=V1,V2"),
    ("model.norm=bn,,ln", "write KEY=V1,V2"),
    ("model.norm=bn,bn", "repeats bn"),
    ("seed_everything=1,2", "give --seeds N instead"),
])
def test_a_bad_axis_is_one_clear_message(text, message):
    with pytest.raises(ConfigError, match=message):
        Axis.parse(text)


def test_values_that_name_the_same_folder_or_a_bad_sweep_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="give the same run name norm-a-b"):
        grid_runs([Axis("model.norm", ("a b", "a/b"))])
    with pytest.raises(ConfigError, match="Sweep name 'a/b'"):
        make_sweep("a/b", [CONFIG], [Axis("model.norm", ("bn",))])
    with pytest.raises(ConfigError, match="needs config files that are not there"):
        plan_runs(make_sweep("s", [tmp_path / "nope.yaml"], [Axis("model.norm", ("bn",))]), "full", tmp_path)


def index_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "index.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_grid_sweep_in_process_ends_with_every_run_finished_and_one_index(tmp_path, capsys):
    args = ["demo", "--config", CONFIG, "--grid", "model.norm=bn,ln", "--seeds", "2", "--runs-dir", str(tmp_path),
            "--no-estimate", "--in-process", "--", *short(2)]
    assert main(args) == 0
    folder = tmp_path / "demo"
    rows = index_rows(folder)
    assert [(r["run"], r["cell"], r["seed"], r["model.norm"], r["status"], r["last_step"]) for r in rows] == [
        ("norm-bn_seed0", "norm-bn", "0", "bn", "completed", "2"), ("norm-ln_seed0", "norm-ln", "0", "ln", "completed",
                                                                    "2"),
        ("norm-bn_seed1", "norm-bn", "1", "bn", "completed", "2"), ("norm-ln_seed1", "norm-ln", "1", "ln", "completed",
                                                                    "2")]
    logged = load_run(folder / "norm-bn_seed1" / "version_0")
    assert float(rows[2]["val/acc"]) == pytest.approx(logged.final("val/acc"))
    table = (folder / "sweep.md").read_text()
    assert "| norm-bn | bn | 2 | 2 completed | " in table and " ± " in table  # seeds aggregated per point
    assert not (folder / "report").exists()  # figures only with --figures
    # a second call runs nothing and rewrites the index from the rows it has
    assert main(args) == 0
    assert "4 already finished, 0 to run" in capsys.readouterr().out and index_rows(folder) == rows


def test_the_summary_groups_the_index_by_its_axes_and_leaves_unfinished_runs_out():
    rows = [{"cell": "a", "seed": str(k), "lr": "0.1", "status": s, "val/acc": v}
            for k, (s, v) in enumerate([("completed", "0.5"), ("completed", "0.7"), ("unfinished", "0.1")])]
    table = summarize(rows, ["lr"], ["val/acc"])
    assert table.splitlines()[-1] == "| a | 0.1 | 3 | 2 completed, 1 unfinished | 0.6000 ± 1.2706 |"


def normzoo(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "normzoo", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def preempting(marker: Path, at_step: int) -> list[str]:
    """Fit arguments adding ``tests.studies.preemption.PreemptOnce``: SIGTERM once after ``at_step``."""
    return ["--trainer.callbacks+=tests.studies.preemption.PreemptOnce", f"--trainer.callbacks.at_step={at_step}",
            f"--trainer.callbacks.marker={marker}"]


@pytest.mark.slow
def test_a_preempted_run_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    """The local executor: the run's process gets SIGTERM at step 4 (it saves last.ckpt, exits 143), the sweep starts
    it again, and it resumes there and finishes its 8 steps in the same run folder."""
    marker = tmp_path / "preempted"
    sweep = normzoo("sweep", "pre", "--config", CONFIG, "--grid", "model.norm=bn", "--runs-dir", str(tmp_path),
                    "--no-estimate", "--jobs", "1", "--", *short(8), *preempting(marker, 4))
    out, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, out
    assert marker.exists() and "ended by a signal (status 143); started again (1/2), from its last checkpoint" in out
    log = (tmp_path / "pre" / "logs" / "norm-bn_seed0.log").read_text()
    assert "Restoring states from the checkpoint path" in log
    (row,) = read_index(tmp_path / "pre" / "index.csv")
    assert (row["status"], row["last_step"]) == ("completed", "8")
    run = load_run(tmp_path / "pre" / "norm-bn_seed0" / "version_0")
    assert list(run.scalars["train/loss"].steps) == list(range(8))  # every step logged once, over both processes
    assert sorted(p.name for p in (tmp_path / "pre" / "norm-bn_seed0").iterdir()) == ["version_0"]


@pytest.mark.slow
def test_two_sweeps_at_once_on_one_folder_never_share_a_run(tmp_path):
    args = ["sweep", "twice", "--config", CONFIG, "--grid", "model.norm=bn,ln", "--runs-dir", str(tmp_path),
            "--no-estimate", "--jobs", "1", "--", *short(6)]
    first, second = normzoo(*args), normzoo(*args)
    outputs = [process.communicate(timeout=300)[0] for process in (first, second)]
    folder = tmp_path / "twice"
    for name in ("norm-bn_seed0", "norm-ln_seed0"):
        trained = [out for out in outputs if f"{name}: completed at step 6" in out]
        assert len(trained) == 1, outputs  # one process trained it; the other left it or found it finished
        assert sorted(p.name for p in (folder / name).iterdir()) == ["version_0"]
    assert [row["status"] for row in read_index(folder / "index.csv")] == ["completed", "completed"]


ray_missing = importlib.util.find_spec("ray") is None


@pytest.mark.slow
@pytest.mark.skipif(ray_missing, reason="Ray is not installed (pip install 'normzoo[ray]')")
def test_a_sweep_on_a_local_ray_cluster_finishes_every_run_and_requeues_a_preempted_one(tmp_path):
    """A real Ray cluster, started for the sweep: two runs as Ray tasks, one preempted once (Ray retries the task,
    which resumes from last.ckpt), one index."""
    marker = tmp_path / "preempted"
    sweep = normzoo("sweep", "onray", "--config", CONFIG, "--grid", "model.norm=bn,ln", "--runs-dir", str(tmp_path),
                    "--no-estimate", "--executor", "ray", "--jobs", "2", "--",
                    *short(6), *preempting(marker, 3))
    out, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, out
    assert "Submitting 2 runs to Ray (a local cluster)" in out and marker.exists()
    rows = read_index(tmp_path / "onray" / "index.csv")
    assert [(r["run"], r["status"], r["last_step"]) for r in rows] == [
        ("norm-bn_seed0", "completed", "6"), ("norm-ln_seed0", "completed", "6")]
    logs = "".join(path.read_text() for path in (tmp_path / "onray" / "logs").glob("*.log"))
    assert logs.count("normzoo fit --config") == 3 and "--ckpt_path last" in logs  # 2 runs, 1 of them twice
    assert "Restoring states from the checkpoint path" in logs


def test_bad_runner_options_and_a_missing_ray_are_one_clear_message(tmp_path, capsys, monkeypatch):
    base = ["demo", "--config", CONFIG, "--grid", "model.norm=bn", "--runs-dir", str(tmp_path), "--no-estimate"]
    assert main([*base, "--runs-per-gpu", "0"]) == 2
    assert "--runs-per-gpu 0 / --retries 2: give at least 1 run per GPU" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as on a machine without Ray: importing it fails
    assert main([*base, "--executor", "ray", "--", *short(2)]) == 2
    assert "--executor ray needs Ray: pip install 'normzoo[ray]'" in capsys.readouterr().err


def test_the_catalogs_grid_studies_are_sweeps_with_their_own_run_names(tmp_path):
    from normzoo.studies import STUDIES
    from normzoo.studies.index import columns

    study = STUDIES["lr_sensitivity"]
    assert [axis.key for axis in study.sweep_axes] == ["model.norm", "optimizer.init_args.lr"]
    assert study.runs == grid_runs(study.sweep_axes, name=lambda point: f"{point[0]}_lr{point[1]}")
    assert study.runs[0].name == "bn_lr0.001" and len(study.runs) == 14
    assert columns(study)[3:5] == ["model.norm", "optimizer.init_args.lr"]  # the index's axis columns
    assert plan_runs(study, "quick", tmp_path)[0].folder == tmp_path / "lr_sensitivity" / "quick" / "bn_lr0.001_seed0"
    assert not study.flat and make_sweep("s", [CONFIG], [Axis("model.norm", ("bn",))]).flat
