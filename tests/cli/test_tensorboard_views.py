"""TensorBoard's HPARAMS and CUSTOM SCALARS tabs on two real runs (BN and no norm, with the diagnostics
overlay), read through TensorBoard's own HTTP API.

TensorBoard is started on the runs folder as a person would start it, and queried with the
requests its frontend sends (POSTs of JSON to ``/data/plugin/hparams/...``, a GET of
``/data/plugin/custom_scalars/layout``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from normzoo.cli import main
from normzoo.key_hparams import TICKED

SHORT_RUN = ("--trainer.max_steps", "4", "--trainer.max_epochs", "null", "--trainer.val_check_interval", "4",
             "--trainer.check_val_every_n_epoch", "null", "--trainer.limit_val_batches", "2",
             "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "2",
             "--trainer.enable_progress_bar", "false")
"""Four steps, two training-metric points and one validation: every metric the hparams tab names."""

STATUSES = ["STATUS_FAILURE", "STATUS_RUNNING", "STATUS_SUCCESS", "STATUS_UNKNOWN"]
"""The session statuses the frontend asks for: all of them."""

URL = re.compile(r"(http://127\.0\.0\.1:\d+/)")


def fit(runs_dir: Path, norm: str) -> None:
    main(["fit", "--config", "configs/quickstart.yaml", "--config", "configs/diagnostics.yaml", "--runs_dir",
          str(runs_dir), "--run_name", norm, "--model.norm", norm, *SHORT_RUN])


@contextmanager
def tensorboard(logdir: Path, timeout: float = 60.0) -> Iterator[str]:
    """A TensorBoard server on ``logdir`` (its data loaded before it serves), as its base URL."""
    log = logdir.parent / "tensorboard.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
             "--load_fast", "false", "--reload_task", "blocking", "--reload_interval", "0"],
            stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not (found := URL.search(log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, f"no TensorBoard:\n{log.read_text()}"
            time.sleep(0.2)
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def get(url: str, route: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}data/plugin/{route}", timeout=30) as response:
        return json.load(response)


def post(url: str, route: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}data/plugin/hparams/{route}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_hparams_show_key_hyperparameters_first_and_only_logged_metrics_and_bands_are_margin_charts(tmp_path):
    runs = tmp_path / "runs"
    for norm in ("bn", "none"):
        fit(runs, norm)
    with tensorboard(runs) as url:
        experiment = post(url, "experiment", {"experimentName": "", "hparamsLimit": 1000})  # as the frontend asks
        groups = post(url, "session_groups", {"experimentName": "", "startIndex": 0, "sliceSize": 100,
                                              "allowedStatuses": STATUSES})
        layout = get(url, "custom_scalars/layout")

    infos = experiment["hparamInfos"]
    # the frontend lists these first and ticks the first TICKED of them: the ones that tell runs apart
    assert {info["name"] for info in infos[:TICKED]} == {"norm", "model", "lr", "data/batch_size", "precision"}
    assert [bool(info.get("differs")) for info in infos] == [True] * TICKED + [False] * (len(infos) - TICKED)
    assert {"seed", "world_size", "activation"} <= {info["name"] for info in infos[TICKED:]}  # listed, not ticked

    metrics = [metric["name"]["tag"] for metric in experiment["metricInfos"]]
    assert metrics == ["val/acc", "val/loss", "train/loss"]  # no test/acc: a fit does not test

    sessions = [session for group in groups["sessionGroups"] for session in group["sessions"]]
    assert len(sessions) == 2
    for session in sessions:  # every declared metric has a value in each run: the plots draw both
        assert {value["name"]["tag"] for value in session["metricValues"]} >= set(metrics), session["name"]
    norms = {group["hparams"]["norm"] for group in groups["sessionGroups"]}
    assert norms == {"bn", "none"}
    assert {group["hparams"]["model"] for group in groups["sessionGroups"]} == {"MLPClassifier"}

    categories = [category["title"] for category in layout["category"]]
    assert categories[:2] == ["zoo/activation_drift bands", "zoo/activation_drift"]
    bands = layout["category"][0]["chart"]
    assert [chart["title"] for chart in bands] == [f"backbone.blocks.{i}: p50 in p15-p85" for i in (2, 1, 0)]
    (series,) = bands[-1]["margin"]["series"]  # TensorBoard draws these last first: block 0 on top
    prefix = "zoo/activation_drift/backbone.blocks.0/"
    assert series == {"value": prefix + "p50", "lower": prefix + "p15", "upper": prefix + "p85"}
