"""``*`` in ``--bands`` and ``--curves``: the layer a callback resolved from a rule, found among a run's tags."""

from __future__ import annotations

from pathlib import Path

from normzoo.report.figures import band_prefixes
from normzoo.report.runs import Run, Series, matching_tags

DRIFT = "zoo/activation_drift/backbone.features.19"


def run(*tags: str) -> Run:
    return Run(Path("r"), "r", {}, {tag: Series((0, 10), (1.0, 2.0)) for tag in tags})


def test_a_star_stands_for_one_part_of_a_tag():
    runs = [run("train/loss", f"{DRIFT}/p15", f"{DRIFT}/p85", f"{DRIFT}/mean",
                "zoo/dead_units/backbone.blocks.0.act/saturated_fraction")]
    assert matching_tags(runs, "zoo/dead_units/*/saturated_fraction") == [
        "zoo/dead_units/backbone.blocks.0.act/saturated_fraction"]
    assert matching_tags(runs, "zoo/*") == []  # one part only: no match across a "/"
    assert matching_tags(runs, "val/acc") == ["val/acc"]  # a plain tag is taken as it is
    assert band_prefixes(runs, "zoo/activation_drift/*") == [DRIFT]  # the layer with percentiles
    assert band_prefixes(runs, "zoo/gradient_ics/*") == ["zoo/gradient_ics/*"]  # nothing logged
    assert band_prefixes(runs, DRIFT) == [DRIFT]
