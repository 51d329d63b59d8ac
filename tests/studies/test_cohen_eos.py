"""The cohen_eos study: full-batch gradient descent as planned and built, and its edge-of-stability table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from normzoo.callbacks import Sharpness
from normzoo.studies import STUDIES, plan_runs
from normzoo.studies.estimate import build
from tests.fixtures import load_script

ROOT = Path(__file__).resolve().parents[2]
STUDY = STUDIES["cohen_eos"]


def test_every_norm_runs_at_every_step_size_once_per_seed(tmp_path):
    names = [f"{norm}_lr{lr}" for norm in ("none", "bn", "ln", "gn") for lr in ("0.05", "0.1", "0.2")]
    assert [run.name for run in STUDY.runs] == names
    planned = plan_runs(STUDY, "quick", tmp_path)
    assert [run.name for run in planned[:12]] == [f"{name}_seed0" for name in names] and len(planned) == 12 * 3
    gn = next(run for run in planned if run.name == "gn_lr0.2_seed1")
    args = " ".join(gn.fit_args)
    assert "--model.norm gn --optimizer.init_args.lr 0.2 --model.norm_kwargs {num_groups: 8}" in args
    assert "--seed_everything 1" in args and "--trainer.callbacks+=normzoo.callbacks.Sharpness" in args
    assert {claim.metric.tag for claim in STUDY.parsed_claims} == {"zoo/sharpness/top_eigenvalue"}


@pytest.mark.parametrize(("mode", "examples", "steps"), [("quick", 1000, 300), ("full", 4500, 1000)])
def test_each_step_is_one_gradient_descent_step_on_the_whole_training_set(mode, examples, steps, tmp_path):
    """One batch per epoch holding every training sample, plain SGD at a constant LR, sharpness on that batch."""
    model, data, trainer = build(next(run for run in plan_runs(STUDY, mode, tmp_path) if run.name == "bn_lr0.1_seed0"))
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert len(data.train_set) == data.batch_size == examples and not data.augment
    assert len(batches) == 1 and batches[0][0].shape[0] == examples  # BN normalizes over the full batch
    assert sorted(batches[0][1].bincount().tolist()) == [examples // 10] * 10
    assert trainer.max_steps == steps
    (sharpness,) = [cb for cb in trainer.callbacks if isinstance(cb, Sharpness)]
    assert (sharpness.every_n_steps, sharpness.num_batches) == (10, 1)  # exactly the training batch
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert isinstance(optimizer, torch.optim.SGD) and model.hparams.get("lr_scheduler") is None
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.1, 0.0, 0.0, False)
    assert (model.hparams.norm, model.hparams.depth, model.hparams.width, model.hparams.activation) == (
        "bn", 4, 64, "tanh")


def write_run(folder: Path, sharpness: dict[int, float], lr: float, losses: list[float]) -> None:
    with SummaryWriter(str(folder)) as writer:
        for step, value in sharpness.items():
            writer.add_scalar("zoo/sharpness/top_eigenvalue", value, step)
            writer.add_scalar("zoo/sharpness/two_over_lr", 2 / lr, step)
        for step, value in enumerate(losses):
            writer.add_scalar("train/loss", value, step)


def test_the_table_gives_sharpness_in_units_of_two_over_lr_and_the_edge_window(tmp_path, capsys, monkeypatch):
    module = load_script("eos_table", monkeypatch)
    losses = [1.0, 0.9, 0.95, 0.8, 0.85, 0.7, 0.6]  # rises at steps 2 and 4
    write_run(tmp_path / "none_lr0.1_seed0", {0: 2.0, 2: 19.0, 4: 22.0, 6: 10.0}, 0.1, losses)
    write_run(tmp_path / "none_lr0.1_seed1", {0: 4.0, 2: 10.0, 4: 21.0, 6: 18.0}, 0.1, losses)
    module.main([str(tmp_path), "--every", "2", "--reach", "0.9", "--figure", str(tmp_path / "eos.png")])
    out = capsys.readouterr().out
    assert (tmp_path / "eos.png").stat().st_size > 0
    trajectory, summary = (table.splitlines()[2:] for table in out.split("\n\n")[1:3])
    row = [cell.strip() for cell in trajectory[0].strip("|").split("|")]
    assert row[0] == "none_lr0.1" and [cell.split(" ± ")[0] for cell in row[1:]] == ["0.1500", "0.7250", "1.0750",
                                                                                       "0.7000"]  # rho = s lr / 2
    row = [cell.strip() for cell in summary[0].strip("|").split("|")]
    assert row[4] == "2/2: 3.0000 ± 12.7062"  # first at the edge at steps 2 and 4
    assert row[5] == "2.0000 ± 0.0000" and row[9] == "0.5000 ± 6.3531"  # windows 2-4 and 4-6; one loss rise in 2-4
    (run,) = [r for r in module.load_runs([tmp_path / "none_lr0.1_seed0"])]
    summary = module.EdgeSummary.of(run, 0.9)
    assert summary.window == (2, 4) and summary.peak == (4, pytest.approx(1.1))
    assert summary.loss_in_window() == (pytest.approx(0.95), pytest.approx(0.85), 1)
