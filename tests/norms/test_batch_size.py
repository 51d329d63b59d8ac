"""The BN batch a model normalizes over, and the small-batch warning (Wu & He 2018)."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from normzoo.models import MLPClassifier
from normzoo.norms import BNBatchSize, GhostBatchNorm, bn_batch_size, convert_sync_norms


def test_effective_batch_counts_ranks_only_when_synchronized():
    assert BNBatchSize(per_rank=8, world_size=4, synced=False).effective == 8
    assert BNBatchSize(per_rank=8, world_size=4, synced=True).effective == 32
    assert BNBatchSize(per_rank=8, world_size=4, synced=True).warning() is None
    advice = BNBatchSize(per_rank=8, world_size=4, synced=False).warning()
    assert "8 samples" in advice and "sync_batchnorm=true" in advice and "make it 32" in advice
    assert BNBatchSize(per_rank=16, world_size=1, synced=False).warning() is None


def test_models_without_batch_statistics_have_no_bn_batch():
    assert bn_batch_size(MLPClassifier(input_shape=(6,), num_classes=3, norm="ln"), 4) is None
    bn = MLPClassifier(input_shape=(6,), num_classes=3, norm="bn_manual")
    assert bn_batch_size(bn, 4, world_size=2).synced is False
    assert bn_batch_size(bn.eval(), 4) is None  # eval mode uses running statistics
    convert_sync_norms(bn.train(), process_group="group")  # normzoo's layers sync once they hold a group
    assert bn_batch_size(bn, 4, world_size=2).synced is True


def fit(norm: str, batch_size: int, tmp_path) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=generator), torch.randint(0, 3, (32,), generator=generator)
    logger = CSVLogger(tmp_path, name=norm)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=logger, log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    model = MLPClassifier(input_shape=(6,), num_classes=3, norm=norm)
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=batch_size))
    rows = (tmp_path / norm / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    values = [dict(zip(header, row.split(","), strict=True)) for row in rows[1:]]
    return {key: float(row[key]) for row in values for key in row if key.startswith("zoo/bn/") and row[key]}


def test_training_bn_on_a_small_batch_warns_and_logs_the_batch(tmp_path):
    with pytest.warns(UserWarning, match="BatchNorm computes its statistics from 8 samples"):
        logged = fit("bn", 8, tmp_path)
    assert logged == {"zoo/bn/batch_size_per_rank": 8.0, "zoo/bn/effective_batch_size": 8.0}


def test_no_warning_at_16_or_without_batch_statistics(tmp_path):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*BatchNorm computes.*")
        assert fit("bn", 16, tmp_path)["zoo/bn/effective_batch_size"] == 16.0
        assert fit("ln", 4, tmp_path) == {}


def test_ghost_bn_normalizes_over_its_chunks_on_one_rank():
    model = nn.Sequential(nn.Linear(4, 6), GhostBatchNorm(6, virtual_batch_size=8))
    size = bn_batch_size(model, per_rank=64, world_size=2)
    assert (size.per_rank, size.effective, size.synced) == (8, 8, False)  # chunks never span ranks
    assert "from 8 samples" in size.warning()
    assert bn_batch_size(model, per_rank=4).effective == 4  # a batch smaller than a chunk is one chunk
