"""Read TensorBoard event files back, for assertions on what a run really logged."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util


def load_events(run_dir: Path, expected_files: int = 1) -> EventAccumulator:
    """All events of a run folder (a resumed run adds a file); asserts how many files there are."""
    files = sorted(Path(run_dir).glob("events.out.tfevents.*"))
    assert len(files) == expected_files, f"expected {expected_files} event file(s) in {run_dir}, found {files}"
    events = EventAccumulator(str(files[0] if expected_files == 1 else run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return events


def scalar_series(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def hparams_plugin(events: EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
            for tag, content in events.PluginTagToContent("hparams").items()}


def layout_proto(events: EventAccumulator) -> layout_pb2.Layout:
    """The run's newest custom-scalars layout (the one TensorBoard shows)."""
    (event, *_) = events.Tensors("custom_scalars__config__")[::-1]
    return layout_pb2.Layout.FromString(tensor_util.make_ndarray(event.tensor_proto).item())


def custom_scalars_layout(events: EventAccumulator) -> dict[str, dict[str, list[str]]]:
    """The run's custom-scalars layout: category -> chart title -> what it draws: a multiline chart's tag
    regexes, or a margin chart's exact tags (value, lower, upper of each series)."""
    return {category.title: {chart.title: chart_tags(chart) for chart in category.chart}
            for category in layout_proto(events).category}


def margin_charts(events: EventAccumulator) -> dict[str, dict[str, list[tuple[str, str, str]]]]:
    """The layout's margin charts only: category -> chart title -> (value, lower, upper) tags of each series."""
    return {category.title: {chart.title: [(s.value, s.lower, s.upper) for s in chart.margin.series]
                             for chart in category.chart if chart.HasField("margin")}
            for category in layout_proto(events).category}


def chart_tags(chart: layout_pb2.Chart) -> list[str]:
    if chart.HasField("margin"):
        return [tag for s in chart.margin.series for tag in (s.value, s.lower, s.upper)]
    return list(chart.multiline.tag)
