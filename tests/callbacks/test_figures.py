"""The TensorBoard IMAGES of the diagnostics: legible figures with axes, units, run names and colour bars."""

from __future__ import annotations

import io

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from PIL import Image

from normzoo.callbacks import ActivationDrift, DeadUnits
from normzoo.callbacks.dead_units import draw_saturation_map
from normzoo.callbacks.figures import FIGURE_SIZE, draw_percentile_bands, run_name
from tests.callbacks.test_dead_units import ConstructedNet, data
from tests.tb_events import load_events


def test_band_figures_and_saturation_maps_are_640_px_wide_figures(tmp_path, trainer_kwargs):
    callbacks = [ActivationDrift(every_n_steps=2, probe_size=16, figure_ylim=(-12, 12)),
                 DeadUnits(every_n_steps=2, probe_size=16)]
    logger = TensorBoardLogger(tmp_path, name="figures", default_hp_metric=False)
    L.Trainer(**trainer_kwargs(max_steps=4, callbacks=callbacks, logger=logger)).fit(ConstructedNet(), data())
    events = load_events(tmp_path / "figures" / "version_0")
    images = {tag: events.Images(tag)[-1] for tag in events.Tags()["images"]}
    assert {"zoo/activation_drift/fc2/bands", "zoo/dead_units/fc2/saturation"} <= set(images)
    for tag, image in images.items():
        width, height = Image.open(io.BytesIO(image.encoded_image_string)).size
        assert (width, height) == (640, 400), tag  # not the bare 100 x 128 map of probe samples x units
    assert run_name(logger) == "figures/version_0"  # TensorBoard's name of the run, put in every title
    assert FIGURE_SIZE == (6.4, 4.0)


def test_a_saturation_map_has_axes_and_a_colour_bar():
    figure = Figure(figsize=FIGURE_SIZE)
    axis = figure.subplots()
    draw_saturation_map(axis, np.eye(4, 6), threshold=0.97)
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("unit index", "probe sample")
    bar = [other for other in figure.axes if other is not axis]
    assert len(bar) == 1 and "saturated fraction" in bar[0].get_ylabel()
    assert axis.images[0].get_clim() == (0.0, 1.0)  # white is saturated whatever the map holds


def test_bands_are_one_colour_with_a_line_per_percentile():
    figure = Figure()
    axis = figure.subplots()
    draw_percentile_bands(axis, [0, 10], {85.0: [1, 2], 15.0: [-1, -2], 50.0: [0, 0]}, color="#ff7043")
    assert [line.get_label() for line in axis.lines] == ["p15", "p50", "p85"]
    assert {line.get_color() for line in axis.lines} == {"#ff7043"}
    assert [line.get_linestyle() for line in axis.lines] == ["--", "-", "-."]
    assert axis.get_xlabel() == "step"
