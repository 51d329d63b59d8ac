"""The li_arora and wu_johnson studies as planned and built, and the tables their RESULTS sections come from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from normzoo.callbacks import EffectiveLR, PreciseBNGap
from normzoo.models.schedules import WeightDecayAsExponentialLR
from normzoo.norms import GhostBatchNorm
from normzoo.studies import STUDIES, plan_runs
from normzoo.studies.estimate import build
from tests.fixtures import load_script

ROOT = Path(__file__).resolve().parents[2]


def built(study: str, run: str, tmp_path: Path, mode: str = "quick"):
    return build(next(p for p in plan_runs(STUDIES[study], mode, tmp_path) if p.name == f"{run}_seed0"))


def optimizer_of(model) -> tuple[torch.optim.Optimizer, object]:
    configured = model.configure_optimizers()
    if isinstance(configured, dict):
        return configured["optimizer"], configured["lr_scheduler"]
    return configured, None


def test_li_arora_trades_weight_decay_for_the_exponential_schedule(tmp_path):
    decayed, exponential, plain = (optimizer_of(built("li_arora", run, tmp_path)[0])
                                   for run in ("wd", "exp_lr", "no_wd"))
    assert decayed[1] is None and plain[1] is None
    assert [g["weight_decay"] for g in decayed[0].param_groups] == [1e-3, 0.0]  # quick mode; dim >= 2 only
    assert [g["weight_decay"] for g in plain[0].param_groups] == [0.0, 0.0]
    optimizer, schedule = exponential
    assert isinstance(schedule["scheduler"], WeightDecayAsExponentialLR) and schedule["interval"] == "step"
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.0]
    assert [g["momentum"] for g in optimizer.param_groups] == [0.9, 0.9]
    model, _, trainer = built("li_arora", "wd", tmp_path, "full")
    (callback,) = [cb for cb in trainer.callbacks if isinstance(cb, EffectiveLR)]
    assert callback.every_n_steps == 100 and optimizer_of(model)[0].param_groups[0]["weight_decay"] == 5e-4


def test_wu_johnson_varies_the_normalization_batch_under_one_optimizer_batch(tmp_path):
    for size in (2, 128):
        model, data, trainer = built("wu_johnson", f"nbs{size}", tmp_path)
        norms = [m for m in model.modules() if isinstance(m, GhostBatchNorm)]
        assert len(norms) == 3 and {m.virtual_batch_size for m in norms} == {size}
        assert data.batch_size == 128
        (callback,) = [cb for cb in trainer.callbacks if isinstance(cb, PreciseBNGap)]
        assert callback.batch_statistics and callback.every_n_steps == 64


def write(folder: Path, scalars: dict[str, dict[int, float]]) -> None:
    with SummaryWriter(str(folder)) as writer:
        for tag, values in scalars.items():
            for step, value in values.items():
                writer.add_scalar(tag, value, step)


def test_the_angular_table_averages_windows_and_compares_with_the_equilibrium(tmp_path, capsys, monkeypatch):
    module = load_script("angular_table", monkeypatch)
    prefix = "zoo/effective_lr/fc"
    for seed, scale in ((0, 1.0), (1, 3.0)):
        write(tmp_path / f"wd_seed{seed}", {f"{prefix}/angular_update": {0: 0.4 * scale, 1: 0.2 * scale, 2: 0.1,
                                                                          3: 0.1},
                                            f"{prefix}/angular_equilibrium": dict.fromkeys(range(4), 0.125),
                                            f"{prefix}/weight_norm": {0: 1.0, 3: 2.0 * scale}})
        write(tmp_path / f"plain_seed{seed}", {f"{prefix}/angular_update": {0: 0.1, 1: 0.1, 2: 0.05, 3: 0.05 * scale}})
    module.main([str(tmp_path), "--windows", "2", "--reference", "wd"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| ") and "cell" not in line}
    assert rows["wd"][1].startswith("0.6000 ± ") and rows["wd"][2] == "0.1000 ± 0.0000"  # (0.3 + 0.9) / 2
    assert rows["wd"][3] == "0.125" and rows["wd"][4] == "0.8000 ± 0.0000"
    assert rows["wd"][6].startswith("4.0000 ± ")  # last norms 2 and 6
    assert rows["plain"][3] == "–" and rows["plain"][4].startswith("0.6000 ± ")  # (0.05 + 0.1) / 2 / 0.125
    with pytest.raises(SystemExit):
        module.main([str(tmp_path), "--reference", "nope"])
    assert "--reference nope: no such cell; the cells are plain, wd" in capsys.readouterr().err


def test_the_cell_table_gives_last_values_and_within_run_differences(tmp_path, capsys, monkeypatch):
    module = load_script("cell_table", monkeypatch)
    for seed, (ema, batch) in enumerate(((0.3, 0.1), (0.5, 0.2), (0.4, 0.3))):
        write(tmp_path / f"nbs2_seed{seed}", {"ema": {0: 1.0, 10: ema}, "batch": {0: 1.0, 10: batch, 12: 0.0}})
    module.main([str(tmp_path), "ema", "--difference", "batch", "ema"])
    row = [c.strip() for c in capsys.readouterr().out.splitlines()[-1].strip("|").split("|")]
    assert row[:3] == ["nbs2", "3", "0.4000 ± 0.2484"]  # t(2) = 4.303, sd 0.1, sqrt(3)
    assert row[3].startswith("-0.2000 ± ")  # at step 10, the last one both logged: -0.2, -0.3, -0.1
    with pytest.raises(SystemExit):
        module.main([str(tmp_path), "missing"])
    assert "no run logged missing" in capsys.readouterr().err
