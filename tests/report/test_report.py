"""normzoo report on hand-made event files: the table's values, statuses, pivots and figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from normzoo.cli import main as normzoo_main
from normzoo.report import ReportOptions, load_runs, write_report
from normzoo.report.figures import BAND_ALPHA, TENSORBOARD_PALETTE, draw_curves
from normzoo.report.runs import run_labels
from normzoo.report.tables import Metric, pivot

ACC_BN = [(100, 0.50), (200, 0.90), (300, 0.85)]
ACC_NONE = [(100, 0.30), (200, 0.60), (300, 0.70)]


def make_run(folder: Path, hparams: dict, scalars: dict[str, list[tuple[int, float]]]) -> Path:
    """A run folder as normzoo writes it: one event file and hparams.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    with SummaryWriter(str(folder)) as writer:
        for tag, points in scalars.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
    (folder / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    return folder


@pytest.fixture
def two_runs(tmp_path):
    make_run(tmp_path / "runs" / "bn" / "version_0", {"norm": "bn", "lr": 0.1, "data": {"batch_size": 32}},
             {"val/acc": ACC_BN, "train/loss": [(10, 2.0), (300, 0.2)], "zoo/run/diverged": [(300, 0.0)],
              "zoo/run/completed": [(300, 1.0)]})
    make_run(tmp_path / "runs" / "none" / "version_0", {"norm": "none", "lr": 0.1, "data": {"batch_size": 32}},
             {"val/acc": ACC_NONE, "train/loss": [(10, 2.2), (300, 0.9)]})
    return tmp_path / "runs"


def test_table_holds_the_final_and_best_values_of_each_run(two_runs, tmp_path):
    runs = load_runs([two_runs])
    assert [run.label for run in runs] == ["bn", "none"]
    report = write_report(runs, tmp_path / "out", ReportOptions(error=True))
    rows = {line.split(" | ")[0].strip("| "): line for line in report.read_text().splitlines()
            if line.startswith("| bn ") or line.startswith("| none ")}
    bn = [cell.strip() for cell in rows["bn"].strip("|").split("|")]
    none = [cell.strip() for cell in rows["none"].strip("|").split("|")]
    header = [c.strip() for c in report.read_text().split("## Runs")[1].splitlines()[2].strip("|").split("|")]
    assert header == ["run", "status", "steps", "norm", "lr", "data.batch_size", "val/acc", "best val/acc",
                      "val/acc error %", "train/loss"]
    assert bn == ["bn", "completed", "300", "bn", "0.1", "32", "0.8500", "0.9000", "15.00", "0.2000"]
    assert none == ["none", "incomplete", "300", "none", "0.1", "32", "0.7000", "0.7000", "30.00", "0.9000"]
    assert "## Cells" not in report.read_text()  # one run per setup: the runs table says it all


def test_curves_name_every_run_and_skip_tags_nobody_logged(two_runs, tmp_path):
    runs = load_runs([two_runs])
    write_report(runs, tmp_path / "out", ReportOptions(curves=("val/acc", "train/loss", "test/acc")))
    figures = sorted(p.name for p in (tmp_path / "out" / "curves").iterdir())
    assert figures == ["train_loss.png", "val_acc.png"]
    legend = Image.open(tmp_path / "out" / "curves" / "val_acc.png").text["Legend"]
    assert legend.split("; ") == ["bn", "none", "val/acc"]


def test_a_nan_loss_marks_a_run_diverged_without_the_callback(tmp_path):
    make_run(tmp_path / "runs" / "big_lr" / "version_0", {"norm": "none", "lr": 10.0},
             {"train/loss": [(10, 3.0), (20, math.nan), (30, math.nan)], "val/acc": [(30, 0.1)]})
    make_run(tmp_path / "runs" / "small_lr" / "version_0", {"norm": "none", "lr": 0.01},
             {"train/loss": [(10, 3.0), (30, 1.0)], "val/acc": [(30, 0.8)], "zoo/run/completed": [(30, 1.0)]})
    runs = load_runs([tmp_path / "runs"])
    assert [(r.status, r.diverged_at) for r in runs] == [("diverged", 20), ("completed", None)]
    report = write_report(runs, tmp_path / "out", ReportOptions(heatmap=("norm", "lr"))).read_text()
    assert "| big_lr | **diverged** at step 20 |" in report
    assert "| none | 0.8000 | diverged |" in report  # the pivot: lr 0.01, lr 10
    assert (tmp_path / "out" / "heatmap.png").is_file()


def test_versus_pivots_the_final_metric_over_a_hyperparameter(tmp_path):
    for norm, errors in (("bn", {2: 0.6, 32: 0.9}), ("gn", {2: 0.85, 32: 0.86})):
        for batch, acc in errors.items():
            hparams = {"norm": norm, "data": {"batch_size": batch}}
            make_run(tmp_path / "runs" / f"{norm}_b{batch}" / "version_0", hparams,
                     {"val/acc": [(5, acc)], "zoo/run/completed": [(5, 1.0)]})
    runs = load_runs([tmp_path / "runs"])
    table = pivot(runs, "norm", "data.batch_size", Metric("val/acc", error=True))
    assert table.rows == ("bn", "gn") and table.columns == (2, 32)
    assert table.value("bn", 2) == pytest.approx(40.0) and table.value("gn", 32) == pytest.approx(14.0)
    report = write_report(runs, tmp_path / "out", ReportOptions(versus=("data.batch_size", "norm"), error=True))
    text = report.read_text()
    assert "| norm \\ data.batch_size | 2 | 32 |" in text and "| bn | 40.00 | 10.00 |" in text
    assert Image.open(tmp_path / "out" / "versus.png").text["Legend"].split("; ") == ["bn", "gn"]


def test_a_resumed_run_reads_both_event_files_and_the_newer_value_wins(tmp_path):
    folder = tmp_path / "runs" / "resumed" / "version_0"
    make_run(folder, {"norm": "bn"}, {"val/acc": [(100, 0.5), (200, 0.6)]})
    make_run(folder, {"norm": "bn"}, {"val/acc": [(200, 0.65), (300, 0.7)], "zoo/run/completed": [(300, 1.0)]})
    (run,) = load_runs([folder])
    assert run.scalars["val/acc"].steps == (100, 200, 300)
    assert run.scalars["val/acc"].values == pytest.approx((0.5, 0.65, 0.7))
    assert run.status == "completed"


def test_labels_show_the_version_only_when_a_name_repeats():
    dirs = [Path("runs/a/version_0"), Path("runs/a/version_1"), Path("runs/b/version_0")]
    assert run_labels(dirs) == ["a/version_0", "a/version_1", "b"]


def test_bands_and_diagnostics_figures(tmp_path):
    layer = "zoo/activation_drift/backbone.blocks.2"
    for name, spread in (("bn", 1.0), ("none", 3.0)):
        make_run(tmp_path / "runs" / name / "version_0", {"norm": name}, {
            f"{layer}/p15": [(0, -spread), (10, -spread)], f"{layer}/p50": [(0, 0.0), (10, 0.1)],
            f"{layer}/p85": [(0, spread), (10, spread)],
            "zoo/loss_landscape/beta_smoothness": [(0, spread), (10, spread / 2)],
        })
    runs = load_runs([tmp_path / "runs"])
    report = write_report(runs, tmp_path / "out", ReportOptions(bands=(layer,))).read_text()
    assert "![bands/zoo_activation_drift_backbone.blocks.2.png]" in report
    assert "### loss_landscape: beta_smoothness" in report
    bands = Image.open(tmp_path / "out" / "bands" / "zoo_activation_drift_backbone.blocks.2.png")
    assert {"bn", "none"} <= set(bands.text["Legend"].split("; "))
    drawn = sorted(f.name for f in (tmp_path / "out" / "diagnostics").iterdir())
    assert drawn == ["loss_landscape_beta_smoothness.png"]  # percentiles are drawn as bands, not one by one


def test_the_command_writes_the_report_and_bad_paths_are_clear(two_runs, tmp_path, capsys):
    notes = tmp_path / "claim.md"
    notes.write_text("**The paper says** BN wins.")
    normzoo_main(["report", str(two_runs / "bn"), str(two_runs / "none" / "version_0"), "--out",
                  str(tmp_path / "out"), "--title", "BN or not", "--notes", str(notes)])
    assert "normzoo report: 2 runs (0 diverged)" in capsys.readouterr().out
    text = (tmp_path / "out" / "report.md").read_text()
    assert text.startswith("# BN or not\n\n**The paper says** BN wins.")
    with pytest.raises(SystemExit) as exit_:
        normzoo_main(["report", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert "No such run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        normzoo_main(["report", str(notes.parent / "out")])  # a folder without event files
    assert "holds no normzoo runs" in capsys.readouterr().err


def test_a_run_with_a_broken_record_is_listed_as_broken_and_the_rest_reported(two_runs, tmp_path):
    (two_runs / "none" / "version_0" / "hparams.yaml").write_text("norm: [unclosed\n")
    runs = load_runs([two_runs])
    assert [run.status for run in runs] == ["completed", "broken"]
    report = write_report(runs, tmp_path / "out", ReportOptions()).read_text()
    assert "| none | **broken**: unreadable hparams.yaml (" in report
    assert "| bn | completed |" in report


SEED_ACC = {"bn": (0.90, 0.92, 0.94), "none": (0.70, 0.72, 0.74)}
"""Final val/acc of three seeds (s = 0.02): bn 0.9200 ± 0.0497 = [0.8703, 0.9697], none 0.7200 ± 0.0497."""


def tint(color: str, alpha: float) -> tuple[int, ...]:
    """``color`` at ``alpha`` over white, as RGB."""
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return tuple(round(alpha * c + (1 - alpha) * 255) for c in rgb)


def test_a_report_over_seeds_shows_means_and_95_intervals_and_judges_claims(tmp_path, capsys):
    for norm, finals in SEED_ACC.items():
        for seed, final in enumerate(finals):
            make_run(tmp_path / "runs" / f"{norm}_seed{seed}" / "version_0", {"norm": norm, "lr": 0.1, "seed": seed},
                     {"val/acc": [(100, final - 0.2), (200, final)], "zoo/run/completed": [(200, 1.0)]})
    normzoo_main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--curves", "val/acc",
                  "--heatmap", "norm", "lr", "--claim", "BN is more accurate: bn > none on val/acc",
                  "--claim", "none > bn on val/acc@100", "--claim", "bn > none on val/loss"])
    assert "6 runs (0 diverged) in 2 cells; claims: 1 agree, 1 unclear, 1 disagree" in capsys.readouterr().out
    text = (tmp_path / "out" / "report.md").read_text()
    claims = text.split("## Claims")[1].split("## Cells")[0]
    assert ("| BN is more accurate | `bn > none on val/acc` | bn: 0.9200 ± 0.0497 (n=3) | none: 0.7200 ± 0.0497 (n=3) "
            "| **agrees**: the intervals do not overlap, in the claimed order |") in claims
    assert ("| `none > bn on val/acc@100` | none: 0.5200 ± 0.0497 (n=3) | bn: 0.7200 ± 0.0497 (n=3) "
            "| **disagrees**") in claims
    assert "| `bn > none on val/loss` | bn: – (n=0) | none: – (n=0) | **unclear**: a cell has 0 runs" in claims
    assert "**agrees** when the 95% intervals of A and B over their seeds do not overlap" in claims
    cells = text.split("## Cells")[1].split("## Runs")[0]
    assert "| cell | runs | seeds | status | norm | lr | val/acc | best val/acc |" in cells
    assert "| bn | 3 | 0, 1, 2 | 3 completed | bn | 0.1 | 0.9200 ± 0.0497 | 0.9200 ± 0.0497 |" in cells
    assert "| none | 3 | 0, 1, 2 | 3 completed | none | 0.1 | 0.7200 ± 0.0497 | 0.7200 ± 0.0497 |" in cells
    assert "| bn_seed2 | completed | 200 |" in text.split("## Runs")[1]
    assert "| bn | 0.9200 ± 0.0497 |" in text.split("by norm and lr")[1]  # the heat map's table

    png = Image.open(tmp_path / "out" / "curves" / "val_acc.png")
    assert png.text["Legend"].split("; ") == ["bn", "none", "val/acc"] and png.size[0] >= 640
    pixels = np.asarray(png.convert("RGB"), dtype=int)
    bn_band = np.array(tint(TENSORBOARD_PALETTE[0], BAND_ALPHA))  # where bn's band does not overlap none's
    assert (np.abs(pixels - bn_band).max(axis=-1) <= 3).sum() > 1000

    axis = draw_curves(load_runs([tmp_path / "runs"]), "val/acc").axes[0]
    lines = {line.get_label(): line for line in axis.lines}
    assert list(lines["bn"].get_ydata()) == pytest.approx([0.72, 0.92])  # the mean over the seeds at each step
    bands = {tuple(band.get_facecolor()[0][:3]): band.get_paths()[0].vertices[:, 1] for band in axis.collections}
    assert len(bands) == 2  # one band per cell, in its line's colour
    bn_edges = bands[tuple(int(TENSORBOARD_PALETTE[0][i:i + 2], 16) / 255 for i in (1, 3, 5))]
    assert (bn_edges.min(), bn_edges.max()) == pytest.approx((0.72 - 0.0496828, 0.92 + 0.0496828), abs=1e-6)
