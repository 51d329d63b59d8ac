"""The daneshmand study: deep linear and ReLU MLPs with and without BN as planned and built, and its rank table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from normzoo.callbacks import SignalPropagation
from normzoo.models.mlp import MLP
from normzoo.studies import STUDIES, plan_runs
from normzoo.studies.catalog import daneshmand
from normzoo.studies.estimate import build
from tests.fixtures import load_script

ROOT = Path(__file__).resolve().parents[2]
STUDY = STUDIES["daneshmand"]


def test_no_norm_and_bn_as_linear_and_relu_nets_once_per_seed(tmp_path):
    names = ["none_linear", "bn_linear", "none_relu", "bn_relu"]
    assert [run.name for run in STUDY.runs] == names
    planned = plan_runs(STUDY, "quick", tmp_path)
    assert [run.name for run in planned[:4]] == [f"{name}_seed0" for name in names] and len(planned) == 4 * 3
    args = " ".join(next(run for run in planned if run.name == "none_linear_seed2").fit_args)
    assert "--model.norm none --model.activation identity --seed_everything 2" in args
    measured = set(daneshmand.measured_layers())
    assert len(measured) == 2 * daneshmand.DEPTH
    for claim in STUDY.parsed_claims:  # each claim's tag is a layer the callback measures, or a training metric
        layer = claim.metric.tag.removeprefix("zoo/signal_propagation/").rsplit("/", 1)[0]
        assert layer in measured or claim.metric.tag in ("train/loss", "val/acc")


@pytest.mark.parametrize(("mode", "dataset", "steps"), [("quick", "mnist5k", 375), ("full", "mnist", 10000)])
def test_a_deep_lecun_mlp_trained_by_plain_sgd_measured_at_every_depth(mode, dataset, steps, tmp_path):
    model, data, trainer = build(next(run for run in plan_runs(STUDY, mode, tmp_path) if run.name == "bn_relu_seed0"))
    assert (data.dataset, data.batch_size, data.val_size, data.augment) == (dataset, 60, 0, False)
    assert trainer.max_steps == steps
    hparams = model.hparams
    assert (hparams.norm, hparams.depth, hparams.width, hparams.activation, hparams.init, hparams.init_gain) == (
        "bn", daneshmand.DEPTH, 128, "relu", "lecun", 1.0)
    hidden = model.backbone.blocks[5].linear.weight
    assert hidden.std().item() == pytest.approx(1 / math.sqrt(128), rel=0.05)  # variance 1 / width
    (signal,) = [cb for cb in trainer.callbacks if isinstance(cb, SignalPropagation)]
    assert signal.layers == daneshmand.measured_layers() and not signal.log_figure
    modules = dict(model.named_modules())
    assert all(name in modules for name in signal.layers)
    assert isinstance(modules["backbone.blocks.31.norm"], nn.BatchNorm1d)
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD) and model.hparams.get("lr_scheduler") is None
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.0, 0.0)


def test_the_identity_activation_makes_a_deep_linear_net():
    """No norm, identity activation, zero biases (lecun): the MLP is a linear map, the product of its weights."""
    torch.manual_seed(0)
    mlp = MLP(input_shape=(16,), num_classes=4, depth=6, width=8, activation="identity", norm="none", init="lecun")
    x, y = torch.randn(5, 16, dtype=torch.float64), torch.randn(5, 16, dtype=torch.float64)
    mlp = mlp.double()
    assert torch.allclose(mlp(2 * x - 3 * y), 2 * mlp(x) - 3 * mlp(y))
    product = mlp.head.weight
    for block in reversed(mlp.blocks):
        product = product @ block.linear.weight
    assert torch.allclose(mlp(x), x @ product.T)


def write_run(folder: Path, ranks: list[float], cosines: list[float]) -> None:
    """What SignalPropagation logs at step 0 for each block's pre-activation, and a head it does not tabulate."""
    with SummaryWriter(str(folder)) as writer:
        for k, (rank, cosine) in enumerate(zip(ranks, cosines, strict=True)):
            writer.add_scalar(f"zoo/signal_propagation/backbone.blocks.{k}.norm/stable_rank", rank, 0)
            writer.add_scalar(f"zoo/signal_propagation/backbone.blocks.{k}.norm/cosine", cosine, 0)
            writer.add_scalar(f"zoo/signal_propagation/backbone.blocks.{k}.norm/channel_var", 1.0, 0)
        writer.add_scalar("zoo/signal_propagation/head/stable_rank", 9.0, 0)
        writer.add_scalar("train/loss", 2.3, 0)


def rows(table: str) -> dict[str, list[str]]:
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]
    return {row[0]: row[1:] for row in cells}


def test_the_table_gives_each_statistic_against_depth_over_seeds(tmp_path, capsys, monkeypatch):
    module = load_script("rank_table", monkeypatch)
    write_run(tmp_path / "none_seed0", [3.0, 2.0, 1.5, 1.2, 1.0], [0.3, 0.5, 0.7, 0.9, 0.99])
    write_run(tmp_path / "none_seed1", [3.0, 2.2, 1.7, 1.4, 1.2], [0.3, 0.5, 0.7, 0.9, 0.97])
    write_run(tmp_path / "bn_seed0", [6.0, 7.0, 7.0, 6.0, 6.0], [0.0, 0.0, 0.0, 0.0, 0.0])
    module.main([str(tmp_path), "--every", "2", "--figure", str(tmp_path / "rank.png")])
    out = capsys.readouterr().out
    assert (tmp_path / "rank.png").stat().st_size > 0
    assert "(3 runs, 2 cells)" in out and "head" not in out and "channel" not in out
    rank, cosine = (out.split("at backbone.blocks.*.norm:\n\n")[i].split("\n\n")[0] for i in (1, 2))
    assert rank.splitlines()[0] == "| cell | layer 1 | layer 2 | layer 4 | layer 5 |"  # first, every 2nd, last
    assert rows(rank)["none"] == ["3.0000 ± 0.0000", "2.1000 ± 1.2706", "1.3000 ± 1.2706", "1.1000 ± 1.2706"]
    assert rows(rank)["bn"] == ["6.0000", "7.0000", "6.0000", "6.0000"]  # one seed: no interval
    assert rows(cosine)["none"][-1] == "0.9800 ± 0.1271"
    assert module.Layer.of("backbone.blocks.3.norm") == module.Layer("backbone.blocks.*.norm", 4)
    assert module.Layer.of("layer1.0.relu#2") == module.Layer("layer1.*.relu#2", 1) and module.Layer.of("head") is None
    assert module.shown_depths([1, 2, 3, 4, 5, 6, 7], 4) == [1, 4, 7]
