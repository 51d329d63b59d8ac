"""``normzoo report``'s figures of two real short runs (bn, none): legible, banded, one colour per run."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure
from PIL import Image

from normzoo.cli import main as normzoo_main
from normzoo.report import build_parser
from normzoo.report.figures import (
    MAX_PANELS,
    TENSORBOARD_PALETTE,
    all_band_prefixes,
    diagnostic_groups,
    draw_bands,
    draw_curves,
    draw_diagnostic,
    spread,
)
from normzoo.report.runs import load_runs

MIN_WIDTH_PX = 640
LAYER = "zoo/activation_drift/backbone.blocks.2"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """configs/diagnostics.yaml over the quickstart, bn then none, 5 steps each (step 0 measured, one validation)."""
    root = tmp_path_factory.mktemp("runs")
    for norm in ("bn", "none"):
        normzoo_main(["fit", "--config", "configs/quickstart.yaml", "--config", "configs/diagnostics.yaml",
                      "--runs_dir", str(root), "--run_name", norm, "--model.norm", norm, "--trainer.max_steps", "5",
                      "--trainer.val_check_interval", "5", "--trainer.limit_val_batches", "1",
                      "--trainer.enable_progress_bar", "false"])
    return root


def line_colors(figure: Figure) -> dict[str, str]:
    """Legend label -> colour of every line drawn in ``figure``."""
    return {line.get_label(): line.get_color() for axis in figure.axes for line in axis.lines
            if not line.get_label().startswith("_")}


def test_the_report_draws_every_band_by_default_and_no_png_is_narrow(runs_dir, tmp_path, capsys):
    normzoo_main(["report", str(runs_dir), "--out", str(tmp_path / "out")])
    assert "normzoo report: 2 runs" in capsys.readouterr().out
    bands = sorted(p.name for p in (tmp_path / "out" / "bands").iterdir())
    assert bands == [f"zoo_activation_drift_backbone.blocks.{i}.png" for i in range(3)]
    assert "## Percentile bands" in (tmp_path / "out" / "report.md").read_text()
    pngs = sorted((tmp_path / "out").rglob("*.png"))
    assert len(pngs) > 20 and (tmp_path / "out" / "curves" / "val_loss.png") in pngs
    narrow = {p.name: Image.open(p).size for p in pngs if Image.open(p).size[0] < MIN_WIDTH_PX}
    assert narrow == {}


def test_an_unknown_band_prefix_is_a_one_line_error_listing_the_valid_ones(runs_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        normzoo_main(["report", str(runs_dir), "--out", str(tmp_path / "out"),
                      "--bands", "zoo/activation_drift/blocks.2"])  # the layer without its backbone.
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "--bands zoo/activation_drift/blocks.2:" in error
    assert f"valid prefixes: {LAYER.replace('2', '0')}, " in error
    assert f"{LAYER} (or zoo/activation_drift/* for every layer)" in error
    assert not (tmp_path / "out" / "report.md").exists()


def test_the_help_example_of_bands_is_a_prefix_that_runs_log(runs_dir):
    runs = load_runs([runs_dir])
    assert LAYER in all_band_prefixes(runs)
    assert LAYER in " ".join(build_parser().format_help().split())


def test_a_run_has_the_same_colour_in_every_figure_as_in_tensorboard(runs_dir):
    runs = load_runs([runs_dir])
    tensorboard = {"bn": TENSORBOARD_PALETTE[0], "none": TENSORBOARD_PALETTE[1]}  # in the order the runs started
    assert line_colors(draw_curves(runs, "val/loss")) == tensorboard
    groups = diagnostic_groups(runs)
    diagnostic = draw_diagnostic(runs, "gradient_flow", "grad_norm", groups[("gradient_flow", "grad_norm")])
    assert line_colors(diagnostic) == tensorboard
    panels = [axis for axis in diagnostic.axes if axis.get_visible()]
    assert len({axis.get_ylim() for axis in panels}) == 1  # one y scale across the panels
    assert panels[0].get_xlabel() == "step" and panels[0].get_ylabel() == "gradient L2 norm"
    bands = draw_bands(runs, LAYER)
    titled = {axis.get_title(): axis for axis in bands.axes}
    assert set(titled) == {"bn", "none"}
    assert {name: {line.get_color() for line in axis.lines} for name, axis in titled.items()} == {
        name: {color} for name, color in tensorboard.items()}
    assert titled["bn"].get_ylim() == titled["none"].get_ylim()
    assert titled["bn"].get_ylabel().startswith("input value")


def test_the_default_bands_are_spread_over_the_network():
    layers = [f"layer{i}" for i in range(20)]
    assert spread(layers, MAX_PANELS) == [f"layer{i}" for i in (0, 3, 5, 8, 11, 14, 16, 19)]
    assert spread(layers[:3], MAX_PANELS) == layers[:3]
