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


def custom_scalars_layout(events: EventAccumulator) -> dict[str, dict[str, list[str]]]:
    """The run's custom-scalars layout: category -> chart title -> tag regexes."""
    (event, *_) = events.Tensors("custom_scalars__config__")[::-1]  # the newest layout counts
    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(event.tensor_proto).item())
    return {category.title: {chart.title: list(chart.multiline.tag) for chart in category.chart}
            for category in layout.category}
