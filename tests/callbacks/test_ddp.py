"""Under DDP (2 CPU ranks, ddp_spawn) the callbacks log what one process logs on the union of the shards.

The step-0 measurement is compared (identical weights in both runs). Each rank's probe is
its first batch; DistributedSampler without shuffling deals samples round-robin, so the two
probes together are the single process's first batch of twice the size. LayerNorm keeps
the train-mode probe forward batch-independent, so per-rank forwards equal the union's.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from normzoo.callbacks import ActivationDrift, DeadUnits, GradientFlow
from normzoo.models import MLPClassifier
from tests.tb_events import load_events

PER_RANK_BATCH = 8


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


def run(tmp_path, devices: int) -> dict[str, float]:
    L.seed_everything(0)
    model = MLPClassifier(input_shape=(6,), num_classes=3, depth=2, width=10, activation="tanh", norm="ln")
    batch = PER_RANK_BATCH * (2 // devices)
    callbacks = [ActivationDrift(every_n_steps=1, probe_size=batch, log_figure=False),
                 DeadUnits(every_n_steps=1, probe_size=batch, threshold=0.5, log_image=False),
                 GradientFlow(every_n_steps=1)]
    logger = TensorBoardLogger(tmp_path, name=f"devices{devices}", default_hp_metric=False)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                        max_steps=1, logger=logger, callbacks=callbacks, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(model, RoundRobinData(batch))
    events = load_events(tmp_path / f"devices{devices}" / "version_0")
    return {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"] if tag.startswith("diagnostics/")}


@pytest.mark.slow
def test_two_ranks_log_what_one_process_logs_on_the_union(tmp_path):
    single = run(tmp_path, devices=1)
    distributed = run(tmp_path, devices=2)
    assert single.keys() == distributed.keys() and len(single) > 10
    for tag, value in single.items():
        assert distributed[tag] == pytest.approx(value, rel=1e-4, abs=1e-5), tag
