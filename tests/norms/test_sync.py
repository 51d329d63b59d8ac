"""Sync conversion keeps every layer's own behaviour; normzoo's layers really sync (2 gloo ranks)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.plugins import TorchSyncBatchNorm
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from normzoo.norms import BatchNoise, NoisyBatchNorm, create_norm_layer
from normzoo.sync_plugin import NormZooSyncBatchNorm


def noisy_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), NoisyBatchNorm(8), nn.ReLU())


@pytest.mark.parametrize("plugin", [TorchSyncBatchNorm(), NormZooSyncBatchNorm()], ids=["lightning", "normzoo"])
def test_noise_is_still_applied_after_lightnings_sync_batchnorm_plugin(plugin):
    model = plugin.apply(noisy_model())
    noisy = model[1]
    assert isinstance(noisy.bn, nn.SyncBatchNorm) and isinstance(noisy.noise, BatchNoise)
    # CPU SyncBatchNorm only runs in eval; keep the noise in training mode to see it applied
    model.eval()
    noisy.noise.train()
    x = torch.randn(4, 3, 6, 6)
    with_noise = noisy(model[0](x))
    without_noise = noisy.bn(model[0](x))
    assert not torch.allclose(with_noise, without_noise)
    reverted = plugin.revert(model)
    inner = reverted[1].bn  # Lightning reverts to its generic _BatchNormXd
    assert isinstance(inner, _BatchNorm) and not isinstance(inner, nn.SyncBatchNorm)
    assert isinstance(reverted[1].noise, BatchNoise)


@pytest.mark.parametrize(
    "key", ["bn_manual", "batch_renorm", "l1", "l2", "linf", "frozen_bn", "switch_norm", "evonorm_b0"])
def test_normzoos_own_layers_are_not_replaced_by_torch(key):
    layer = create_norm_layer(key, 4)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(layer))
    assert converted[0] is layer


def test_normzoo_plugin_sets_and_clears_the_process_group():
    model = nn.Sequential(create_norm_layer("bn_manual", 4), create_norm_layer("l2", 4))
    plugin = NormZooSyncBatchNorm()
    plugin.apply(model)
    assert all(m.process_group is dist.group.WORLD for m in model)
    plugin.revert(model)
    assert all(m.process_group is None for m in model)


SYNCED_KEYS = ["bn_manual", "batch_renorm", "l1", "l2", "switch_norm", "evonorm_b0"]


def _rank_step(rank: int, world: int, init_file: str, x, upstream, out_file: str) -> None:
    """One rank: every synced key on its shard of the batch; results saved for the parent test."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for key in SYNCED_KEYS:
            layer = create_norm_layer(key, x.shape[1]).double()
            layer.process_group = dist.group.WORLD
            shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
            xs = x[shard].clone().requires_grad_()
            y = layer(xs)
            y.backward(upstream[shard])
            results[key] = {"y": y.detach(), "dx": xs.grad, "dw": layer.weight.grad,
                            "buffers": dict(layer.named_buffers())}
        torch.save(results, f"{out_file}.{rank}")
        dist.barrier()  # no rank tears its connections down while the other still reads from them
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sync")
    torch.manual_seed(1)
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + 1
    upstream = torch.randn_like(x)
    mp.spawn(_rank_step, args=(2, str(tmp / "init"), x, upstream, str(tmp / "rank")), nprocs=2, join=True)
    return x, upstream, [torch.load(tmp / f"rank.{r}") for r in range(2)]


@pytest.mark.parametrize("key", SYNCED_KEYS)
def test_two_ranks_match_one_process_on_the_union(key, two_rank_results):
    x, upstream, results = two_rank_results
    ranks = [r[key] for r in results]
    single = create_norm_layer(key, 3).double()
    xs = x.clone().requires_grad_()
    y = single(xs)
    y.backward(upstream)
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach())
    torch.testing.assert_close(torch.cat([r["dx"] for r in ranks]), xs.grad)
    torch.testing.assert_close(ranks[0]["dw"] + ranks[1]["dw"], single.weight.grad)  # DDP then averages
    for name, value in single.named_buffers():
        for rank in ranks:
            torch.testing.assert_close(rank["buffers"][name], value)

