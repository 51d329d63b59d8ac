"""Under DDP (2 CPU ranks, ddp_spawn) all six callbacks log what one process logs on the union of the shards.

Three steps are measured and compared. Each rank's probe is its first batch;
DistributedSampler without shuffling deals samples round-robin, so the two probes together
are the single process's first batch of twice the size. The model normalizes with
normzoo's ``bn_manual`` synchronized across the ranks (torch's SyncBatchNorm refuses CPU
tensors), so train-mode forwards see the union's batch statistics, as one process does.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from normzoo import callbacks as diagnostics
from normzoo.models import MLPClassifier
from normzoo.sync_plugin import NormZooSyncBatchNorm
from normzoo.tags import diagnostic_callback
from tests.tb_events import load_events

PER_RANK_BATCH = 8
STEPS = 3


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=generator) * 2
    return TensorDataset(x, torch.randint(0, 3, (64,), generator=generator))


class RoundRobinData(L.LightningDataModule):
    """Deals samples to ranks round-robin, unshuffled: the ranks' first batches are the union's first batch."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        sampler = DistributedSampler(dataset(), num_replicas=self.trainer.world_size,
                                     rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(dataset(), batch_size=self.batch_size, sampler=sampler)


def run(tmp_path, devices: int) -> dict[tuple[str, int], float]:
    L.seed_everything(0)
    model = MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=10, activation="tanh", norm="bn_manual")
    batch = PER_RANK_BATCH * (2 // devices)
    callbacks = [
        diagnostics.ActivationDrift(every_n_steps=1, probe_size=batch, log_figure=False),
        diagnostics.DeadUnits(every_n_steps=1, probe_size=batch, threshold=0.5, log_image=False),
        diagnostics.GradientFlow(every_n_steps=1),
        diagnostics.RunningStatsConvergence(every_n_steps=1, probe_size=batch),
        diagnostics.GradientICS(every_n_steps=1),
        diagnostics.LossLandscape(every_n_steps=1),
    ]
    logger = TensorBoardLogger(tmp_path, name=f"devices{devices}", default_hp_metric=False)
    distributed = {"strategy": "ddp_spawn", "sync_batchnorm": True, "plugins": [NormZooSyncBatchNorm()]}
    trainer = L.Trainer(accelerator="cpu", devices=devices, max_steps=STEPS, logger=logger, callbacks=callbacks,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, **(distributed if devices > 1 else {}))
    trainer.fit(model, RoundRobinData(batch))
    events = load_events(tmp_path / f"devices{devices}" / "version_0")
    return {(tag, event.step): event.value for tag in events.Tags()["scalars"] if diagnostic_callback(tag)
            for event in events.Scalars(tag)}


@pytest.mark.slow
def test_two_ranks_log_what_one_process_logs_on_the_union(tmp_path):
    single = run(tmp_path, devices=1)
    distributed = run(tmp_path, devices=2)
    assert single.keys() == distributed.keys()
    callbacks = {diagnostic_callback(tag) for tag, _ in single}
    assert callbacks == {"activation_drift", "dead_units", "gradient_flow", "running_stats", "gradient_ics",
                         "loss_landscape"}
    assert {step for _, step in single} == set(range(STEPS))
    for key, value in single.items():
        assert distributed[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
