"""The de_smith study: BN, no norm and SkipInit ResNet-56s as planned and built, and its signal table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from normzoo.callbacks import SignalPropagation
from normzoo.models import BasicBlock
from normzoo.studies import STUDIES, plan_runs
from normzoo.studies.catalog import de_smith
from normzoo.studies.estimate import build

ROOT = Path(__file__).resolve().parents[2]
STUDY = STUDIES["de_smith"]


def test_bn_none_and_skipinit_once_per_seed_and_the_signal_claims_read_step_0(tmp_path):
    names = ["bn", "none", "skipinit"]
    assert [run.name for run in STUDY.runs] == names
    planned = plan_runs(STUDY, "quick", tmp_path)
    assert [run.name for run in planned[:3]] == [f"{name}_seed0" for name in names] and len(planned) == 3 * 3
    args = {run.name: " ".join(run.fit_args) for run in planned}
    assert "--model.norm none --model.residual_scale 0.0 --seed_everything 1" in args["skipinit_seed1"]
    blocks = {f"backbone.stages.{stage}.{block}" for stage in range(3) for block in range(9)}
    for claim in STUDY.parsed_claims:  # a ResNet-56 block's statistic at initialization, or the divergence record
        if claim.metric.tag == "zoo/run/diverged":
            continue
        block = claim.metric.tag.removeprefix(f"{de_smith.SIGNAL}/").rsplit("/", 1)[0]
        assert block in blocks and claim.metric.step == 0


@pytest.mark.parametrize(("mode", "dataset", "width", "batch", "steps"),
                         [("quick", "mnist5k", 4, 64, 63), ("full", "cifar10", 16, 128, None)])
def test_a_resnet56_at_the_resnet_papers_lr_measured_at_init(mode, dataset, width, batch, steps, tmp_path):
    planned = {run.name: run for run in plan_runs(STUDY, mode, tmp_path)}
    model, data, trainer = build(planned["skipinit_seed0"])
    assert (data.dataset, data.batch_size) == (dataset, batch)
    assert (trainer.max_epochs, trainer.max_steps) == ((1, -1) if mode == "quick" else (60, -1))
    if steps is not None:  # one epoch of the 4,000 training digits
        data.setup("fit")
        assert len(data.train_dataloader()) == steps
    hparams = model.hparams
    assert (hparams.arch, hparams.norm, hparams.residual_scale) == ("resnet56", "none", 0.0)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 27 and {b.residual_scale.item() for b in blocks} == {0.0}
    assert model.backbone.stem[0].conv.out_channels == width
    assert [type(cb) for cb in trainer.callbacks].count(SignalPropagation) == 1
    optimizer = model.configure_optimizers()["optimizer"]
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD) and (group["lr"], group["momentum"]) == (0.1, 0.9)


def signal_table(monkeypatch: pytest.MonkeyPatch):
    """``scripts/signal_table.py`` as a module (registered while the test runs)."""
    spec = importlib.util.spec_from_file_location("signal_table", ROOT / "scripts" / "signal_table.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def write_run(folder: Path, skip_vars: list[float], ratios: list[float], diverged: bool = False) -> None:
    prefix = "zoo/signal_propagation"
    with SummaryWriter(str(folder)) as writer:
        for index, (skip, ratio) in enumerate(zip(skip_vars, ratios, strict=True)):
            writer.add_scalar(f"{prefix}/stages.{index}.act2/channel_var", skip, 0)
            writer.add_scalar(f"{prefix}/stages.{index}/skip_var", skip, 0)
            writer.add_scalar(f"{prefix}/stages.{index}/branch_skip_ratio", ratio, 0)
        writer.add_scalar("train/loss", float("nan") if diverged else 1.0, 5)


def test_the_table_gives_each_blocks_statistic_at_init_per_cell(tmp_path, capsys, monkeypatch):
    module = signal_table(monkeypatch)
    write_run(tmp_path / "bn_seed0", [1.0, 2.0, 3.0], [1.0, 0.5, 0.25])
    write_run(tmp_path / "bn_seed1", [1.0, 2.0, 5.0], [1.0, 0.5, 0.25])
    write_run(tmp_path / "none_seed0", [1.0, 100.0, 1e4], [1.0, 1.0, 1.0], diverged=True)  # counts: values at init
    write_run(tmp_path / "none_seed1", [10.0, 1e3, 1e6], [1.0, 1.0, 1.0], diverged=True)
    module.main([str(tmp_path), "--stats", "skip_var", "channel_var", "--every", "2", "--log10",
                 "--cells", "none", "bn", "--figure", str(tmp_path / "spp.png")])
    out = capsys.readouterr().out
    assert (tmp_path / "spp.png").stat().st_size > 0
    skip = out.split("skip_var (log10):")[1].split("\n\n")[1].splitlines()
    assert skip[0] == "| block | none | bn |"
    assert [row.split(" | ")[0] for row in skip[2:]] == ["| stages.0", "| stages.2"]  # every 2nd, and the last
    assert skip[2].split(" | ")[1].startswith("0.5000 ± 6.35") and skip[3].split(" | ")[1].startswith("5.0000")
    module.main([str(tmp_path), "--stats", "branch_skip_ratio", "--layers", "stages.2"])
    rows = capsys.readouterr().out.split("\n\n")[2].splitlines()
    assert rows[2].split(" | ")[1:] == ["0.2500 ± 0.0000", "1.0000 ± 0.0000 |"]
