"""The CUSTOM SCALARS layout read back from a real event file: Ioffe's band as a margin chart per layer,
and one chart per (layer, statistic family), so no chart puts incompatible scales together."""

from __future__ import annotations

import re

import lightning as L
import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from normzoo.callbacks import ActivationDrift, GradientFlow, GradientICS
from normzoo.callbacks.activation_drift import percentile_band
from normzoo.callbacks.layout import Margin
from tests.callbacks.test_user_module import UserCNN, loader
from tests.tb_events import custom_scalars_layout, load_events, margin_charts

FAMILIES = [{"p15", "p50", "p85"}, {"mean", "std"}, {"w1_prev", "w1_first"}, {"l2_diff"}, {"relative_l2_diff"},
            {"cosine"}, {"grad_norm"}, {"update_ratio_log10", "lr_grad_ratio_log10"}, {"entropy"}]
"""Statistics that share a scale, as a researcher would chart them (written out here, not taken from the code)."""


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A short fit with three diagnostics: (layout, margin charts, scalar tags)."""
    root = tmp_path_factory.mktemp("layout")
    callbacks = [ActivationDrift(every_n_steps=4, probe_size=16), GradientICS(every_n_steps=4),
                 GradientFlow(every_n_steps=4)]
    logger = TensorBoardLogger(root, name="run", default_hp_metric=False)
    L.seed_everything(0)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=5, callbacks=callbacks, logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(UserCNN(), loader())
    events = load_events(root / "run" / "version_0")
    return custom_scalars_layout(events), margin_charts(events), set(events.Tags()["scalars"])


def drawn(tags: list[str], scalars: set[str], margin: bool) -> set[str]:
    """The logged tags a chart draws: a margin chart's exact tags, a multiline chart's regex matches."""
    if margin:
        return set(tags) & scalars
    return {tag for tag in scalars if any(re.search(regex, tag) for regex in tags)}


def test_the_percentile_band_is_a_margin_chart_per_layer(logged):
    layout, margins, scalars = logged
    prefix = "zoo/activation_drift"
    layers = sorted({tag[len(prefix) + 1:].rsplit("/", 1)[0] for tag in scalars if tag.startswith(prefix + "/")})
    assert layers == ["features.0", "features.3"]  # the ReLUs features.2 and .5, named after the convs they follow
    bands = f"{prefix} bands"  # a category of their own, first: TensorBoard draws margin charts after the others
    assert list(layout)[:2] == [bands, prefix] and not margins[prefix]
    assert margins[bands] == {f"{layer}: p50 in p15-p85": [(f"{prefix}/{layer}/p50", f"{prefix}/{layer}/p15",
                                                             f"{prefix}/{layer}/p85")] for layer in layers}
    for series in margins[bands].values():
        assert set(series[0]) <= scalars  # each band draws tags that the run logged
    assert not margins["zoo/gradient_ics"] and not margins["zoo/gradient_flow"]
    # TensorBoard draws a category's margin charts last first: written in reverse, they show layer by layer
    assert list(layout[bands]) == [f"{layer}: p50 in p15-p85" for layer in reversed(layers)]


def test_no_chart_mixes_statistic_families_or_layers(logged):
    layout, margins, scalars = logged
    assert set(layout) == {f"zoo/{name}" for name in ("activation_drift", "gradient_ics", "gradient_flow")} | {
        "zoo/activation_drift bands"}
    covered: set[str] = set()
    for title_of_category, charts in layout.items():
        category = title_of_category.removesuffix(" bands")
        for title, tags in charts.items():
            lines = drawn(tags, scalars, title in margins[title_of_category])
            assert lines, (title, tags)
            assert all(tag.startswith(category + "/") for tag in lines), (title, lines)
            stats = {tag.rsplit("/", 1)[1] for tag in lines}
            assert any(stats <= family for family in FAMILIES), (title, stats)
            (layer,) = {tag[len(category) + 1:].rsplit("/", 1)[0] for tag in lines}  # one layer per chart
            assert title.startswith(f"{layer}: "), (title, layer)
            covered |= lines
    assert covered == {tag for tag in scalars if tag.startswith("zoo/")}  # every statistic is charted
    for tags in layout["zoo/gradient_ics"].values():
        assert not {"cosine", "l2_diff"} <= {tag.rsplit("/", 1)[1] for tag in drawn(tags, scalars, False)}


def test_other_percentiles_band_the_outermost_pair_around_the_median():
    assert percentile_band((15, 50, 85)) == (50, 15, 85)
    assert percentile_band((5, 25, 50, 75, 95)) == (50, 5, 95)
    assert percentile_band((25, 75)) is None and percentile_band((50, 75)) is None

    callback = ActivationDrift(percentiles=(5, 25, 50, 75, 95))
    callback.groups = ["blocks.0.act"]
    charts = callback.layout_charts(None)
    prefix = "zoo/activation_drift/blocks.0.act"
    assert charts["blocks.0.act: p50 in p5-p95"] == Margin(f"{prefix}/p50", f"{prefix}/p5", f"{prefix}/p95")
    assert all(re.search(charts["blocks.0.act: percentiles"][0], f"{prefix}/p{q}") for q in (5, 25, 50, 75, 95))

    callback = ActivationDrift(percentiles=(25, 75))
    callback.groups = ["blocks.0.act"]
    charts = callback.layout_charts(None)
    assert not any(isinstance(chart, Margin) for chart in charts.values())
    assert list(charts) == ["blocks.0.act: percentiles", "blocks.0.act: mean, std", "blocks.0.act: w1 distance"]
