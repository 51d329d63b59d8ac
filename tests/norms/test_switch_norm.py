"""Switchable Normalization (``switch_norm``) against a float64 oracle of Luo et al. 2019, Eq. 3-5."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from normzoo.errors import BatchStatisticsError
from normzoo.norms import SwitchNorm, cancels_bias, convert_sync_norms, create_norm_layer, recalibrate_bn
from tests.norms.norm_checks import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 1e-5
LOGITS = {  # non-uniform importance logits: (means, variances), ordered (in, ln, bn) / (ln, bn)
    2: ([0.3, -1.2, 0.8], [1.0, 0.2, -0.5]),
    1: ([-0.7, 0.4], [0.6, -0.3]),
}
SHAPES = {1: (6, 5), 2: (4, 3, 5, 5)}


def data(dims: int, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPES[dims], dtype=torch.float64, generator=generator) * 2 + 3


def layer_with(dims: int, channels: int, seed: int = 1, **options) -> SwitchNorm:
    """A float64 ``switch_norm`` with the non-uniform logits of ``LOGITS`` and a random affine."""
    layer = create_norm_layer("switch_norm", channels, dims=dims, **options).double()
    means, variances = LOGITS[dims]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.mean_weight.copy_(torch.tensor(means))
        layer.var_weight.copy_(torch.tensor(variances))
        layer.weight.uniform_(0.5, 1.5, generator=generator)
        layer.bias.uniform_(-1, 1, generator=generator)
    return layer


def oracle(x: Tensor, layer: SwitchNorm, bn: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Eq. 3-5 from their definitions, in float64; ``bn``: (mean, var) to use for the BN part instead of the batch's.

    Each statistic straight from its definition over its own set of values: IN over (H, W), LN over
    all of a sample, BN over the batch (and H, W); variances biased (1 / count), as Eq. 4 has them.
    """
    x = x.double()
    spatial = tuple(range(2, x.dim()))
    per_sample = tuple(range(1, x.dim()))
    per_channel = (0, *spatial)
    stats = []
    if x.dim() == 4:
        stats.append((x.mean(spatial, keepdim=True), x.var(spatial, unbiased=False, keepdim=True)))
    stats.append((x.mean(per_sample, keepdim=True), x.var(per_sample, unbiased=False, keepdim=True)))
    if bn is None:
        stats.append((x.mean(per_channel, keepdim=True), x.var(per_channel, unbiased=False, keepdim=True)))
    else:
        shape = (1, -1, *([1] * len(spatial)))
        stats.append((bn[0].double().view(shape), bn[1].double().view(shape)))

    def softmax(logits: Tensor) -> list[float]:
        exps = [float(torch.exp(v)) for v in logits.detach().double()]
        return [e / sum(exps) for e in exps]

    w, w_var = softmax(layer.mean_weight), softmax(layer.var_weight)
    mean = sum(wk * mu for wk, (mu, _) in zip(w, stats, strict=True))
    var = sum(wk * v for wk, (_, v) in zip(w_var, stats, strict=True))
    shape = (1, -1, *([1] * len(spatial)))
    gamma, beta = layer.weight.detach().double().view(shape), layer.bias.detach().double().view(shape)
    return gamma * (x - mean) / torch.sqrt(var + EPS) + beta


# --- the forward: train and eval ------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2])
def test_train_mode_matches_the_float64_oracle_with_non_uniform_importance(dims):
    x = data(dims)
    layer = layer_with(dims, x.shape[1]).train()
    assert layer.parts == (("in", "ln", "bn") if dims == 2 else ("ln", "bn"))
    torch.testing.assert_close(layer(x), oracle(x, layer), rtol=1e-10, atol=1e-10)


def test_the_importance_starts_equal():
    layer = create_norm_layer("switch_norm", 4)
    w, w_var = layer.importance()
    torch.testing.assert_close(w, torch.full((3,), 1 / 3))
    torch.testing.assert_close(w_var, torch.full((3,), 1 / 3))
    assert create_norm_layer("switch_norm", 4, dims=1).mean_weight.shape == (2,)


@pytest.mark.parametrize(
    ("part", "reference"),
    [(0, lambda x: F.instance_norm(x, eps=EPS)), (1, lambda x: F.group_norm(x, 1, eps=EPS)),
     (2, lambda x: F.batch_norm(x, None, None, training=True, eps=EPS))],
    ids=["in", "ln", "bn"],
)
def test_one_hot_importance_is_that_norm(part, reference):
    x = data(2)
    layer = create_norm_layer("switch_norm", 3, affine=False).double()
    logits = torch.full((3,), -1e9, dtype=torch.float64)
    logits[part] = 0
    with torch.no_grad():
        layer.mean_weight.copy_(logits)
        layer.var_weight.copy_(logits)
    torch.testing.assert_close(layer(x), reference(x))


@pytest.mark.parametrize("dims", [1, 2])
def test_eval_uses_the_running_bn_statistics(dims):
    x = data(dims)
    layer = layer_with(dims, x.shape[1])
    running_mean = torch.tensor([0.5, -1.0, 2.0, 0.1, 0.0][: x.shape[1]], dtype=torch.float64)
    running_var = torch.tensor([2.0, 0.5, 3.0, 1.5, 0.7][: x.shape[1]], dtype=torch.float64)
    layer.running_mean.copy_(running_mean)
    layer.running_var.copy_(running_var)
    layer.eval()
    y = layer(x)
    torch.testing.assert_close(y, oracle(x, layer, bn=(running_mean, running_var)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer(x[:1]), y[:1])  # eval: each sample on its own
    torch.testing.assert_close(layer.running_mean, running_mean)  # eval does not update them


def test_eval_without_running_statistics_uses_the_batch():
    x = data(2)
    layer = layer_with(2, 3, track_running_stats=False).eval()
    assert layer.running_mean is None
    torch.testing.assert_close(layer(x), oracle(x, layer), rtol=1e-10, atol=1e-10)


# --- running statistics ---------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("dims", [1, 2])
def test_running_statistics_follow_pytorch_batchnorm(dims, momentum):
    """The BN part's running averages: momentum the new batch's weight, None cumulative, unbiased variance."""
    layer = layer_with(dims, SHAPES[dims][1], momentum=momentum)
    reference = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(SHAPES[dims][1], momentum=momentum).double()
    for seed in range(3):
        x = data(dims, seed) * (seed + 1)
        layer(x)
        reference(x)
    # rtol 1e-7: BatchStatNorm's cumulative factor 1 / num_batches_tracked is a float32 tensor
    torch.testing.assert_close(layer.running_mean, reference.running_mean, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(layer.running_var, reference.running_var, rtol=1e-7, atol=1e-12)
    assert int(layer.num_batches_tracked) == 3
    # and by hand for the first batch: running = (1 - m) * initial + m * batch, var unbiased
    fresh = layer_with(dims, SHAPES[dims][1], momentum=momentum)
    x = data(dims, 0)
    fresh(x)
    dims_bn = (0,) if dims == 1 else (0, 2, 3)
    m = 1.0 if momentum is None else momentum
    torch.testing.assert_close(fresh.running_mean, m * x.mean(dims_bn))
    torch.testing.assert_close(fresh.running_var, (1 - m) + m * x.var(dims_bn, unbiased=True))


# --- gradients, dtypes, errors ----------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2])
def test_the_importance_logits_receive_gradients(dims):
    x = data(dims)
    layer = layer_with(dims, x.shape[1])
    upstream = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    (layer(x) * upstream).sum().backward()
    for logits in (layer.mean_weight, layer.var_weight):
        assert logits.grad is not None and (logits.grad.abs() > 1e-6).all()
        # logits enter through a softmax, invariant to adding a constant: their gradient sums to 0
        torch.testing.assert_close(logits.grad.sum(), torch.zeros((), dtype=torch.float64), atol=1e-10, rtol=0)
    logits = layer.mean_weight.detach().clone().requires_grad_()  # and it is the oracle's gradient
    expected = torch.autograd.grad((_oracle_differentiable(x, layer, logits) * upstream).sum(), logits)[0]
    torch.testing.assert_close(layer.mean_weight.grad, expected, rtol=1e-8, atol=1e-10)


def _oracle_differentiable(x: Tensor, layer: SwitchNorm, mean_logits: Tensor) -> Tensor:
    """The oracle's output with the BN part of the batch, differentiable in the mean logits."""
    spatial = tuple(range(2, x.dim()))
    shape = (1, -1, *([1] * len(spatial)))
    means = [x.mean((1, *spatial), keepdim=True), x.mean((0, *spatial), keepdim=True)]
    variances = [x.var((1, *spatial), unbiased=False, keepdim=True), x.var((0, *spatial), unbiased=False, keepdim=True)]
    if spatial:
        means.insert(0, x.mean(spatial, keepdim=True))
        variances.insert(0, x.var(spatial, unbiased=False, keepdim=True))
    w = torch.exp(mean_logits) / torch.exp(mean_logits).sum()
    w_var = torch.exp(layer.var_weight.detach()) / torch.exp(layer.var_weight.detach()).sum()
    mean = sum(w[k] * means[k] for k in range(len(means)))
    var = sum(w_var[k] * variances[k] for k in range(len(variances)))
    return layer.weight.detach().view(shape) * (x - mean) / torch.sqrt(var + EPS) + layer.bias.detach().view(shape)


def test_statistics_are_float32_under_bf16_autocast_and_the_output_keeps_the_input_dtype():
    x = (data(2) * 10 + 100).to(torch.bfloat16)  # a large mean: bf16 statistics would lose it
    layer = create_norm_layer("switch_norm", 3)
    reference = create_norm_layer("switch_norm", 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    expected = reference(x.float())
    assert y.dtype == torch.bfloat16
    assert layer.running_mean.dtype == layer.running_var.dtype == torch.float32
    torch.testing.assert_close(layer.running_mean, reference.running_mean)
    torch.testing.assert_close(layer.running_var, reference.running_var)
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=1e-2)  # bf16 rounding of the output only


def test_a_single_value_per_channel_is_refused_in_training():
    layer = create_norm_layer("switch_norm", 4, dims=1)
    with pytest.raises(BatchStatisticsError, match="1 value per channel"):
        layer(torch.randn(1, 4))
    layer.eval()
    assert torch.isfinite(layer(torch.randn(1, 4))).all()  # eval: running statistics


def test_one_by_one_maps_give_finite_outputs():
    """The IN variance of a single position is 0 (Eq. 4's 1 / HW), not the NaN of an unbiased estimate."""
    layer = create_norm_layer("switch_norm", 3).double()
    x = data(2)[:, :, :1, :1]
    torch.testing.assert_close(layer(x), oracle(x, layer), rtol=1e-10, atol=1e-10)


def test_a_per_channel_bias_survives_unless_the_ln_part_is_off():
    """``cancels_bias`` is False: LN removes only the mean over channels of a per-channel bias."""
    layer = create_norm_layer("switch_norm", 3).double()
    assert cancels_bias(layer) is False
    x = data(2)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    assert not torch.allclose(layer(x + shift), layer(x), atol=1e-3)
    with torch.no_grad():  # IN and BN only: each subtracts a per-channel mean, so the bias cancels
        layer.mean_weight.copy_(torch.tensor([0.0, -1e9, 0.5]))
        layer.var_weight.copy_(torch.tensor([0.3, -1e9, 0.0]))
    torch.testing.assert_close(layer(x + shift), layer(x))


# --- recalibrate_bn ---------------------------------------------------------------------


def switch_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), create_norm_layer("switch_norm", 3), nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1), create_norm_layer("switch_norm", 4),
    )


def test_recalibrate_bn_sets_the_population_statistics_of_switch_norm_layers():
    model = switch_model()
    batches = [torch.randn(8, 2, 5, 5, generator=torch.Generator().manual_seed(i)) * 2 + 1 for i in range(3)]
    recalibrate_bn(model, batches)
    data_ = torch.cat(batches)
    with torch.no_grad():
        first = model[0](data_).double()
        second = model[:4].eval()(data_).double()  # the second layer's eval input, after the first recalibrated
    for layer, inputs in ((model[1], first), (model[4], second)):
        torch.testing.assert_close(layer.running_mean.double(), inputs.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.running_var.double(), inputs.var((0, 2, 3)), rtol=1e-5, atol=1e-5)
        assert int(layer.num_batches_tracked) == 3
    assert model.training  # modes restored


def test_recalibrate_bn_batch_average_is_the_papers_batch_average_and_momentum_none():
    """Luo et al.'s inference statistics: the average over training batches of their mean and (unbiased) variance."""
    model = switch_model().train()
    batches = [torch.randn(8, 2, 5, 5, generator=torch.Generator().manual_seed(i)) * 2 + 1 for i in range(3)]
    cumulative = switch_model().train()
    for module in cumulative.modules():
        if isinstance(module, SwitchNorm):
            module.momentum = None
    recalibrate_bn(model, batches, estimator="batch_average")
    with torch.no_grad():
        inputs = [model[0](b).double() for b in batches]
        for b in batches:
            cumulative(b)  # momentum=None: the equal-weight average of the batches' statistics
    layer = model[1]
    torch.testing.assert_close(layer.running_mean.double(), torch.stack([i.mean((0, 2, 3)) for i in inputs]).mean(0),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.running_var.double(), torch.stack([i.var((0, 2, 3)) for i in inputs]).mean(0),
                               rtol=1e-5, atol=1e-5)
    for index in (1, 4):
        torch.testing.assert_close(model[index].running_mean, cumulative[index].running_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model[index].running_var, cumulative[index].running_var, rtol=1e-5, atol=1e-5)


# --- synchronized BN part: two gloo ranks equal one process on the union ------------------


def _rank_step(rank: int, world: int, init_file: str, inputs: dict, out_file: str) -> None:
    """One rank: a synced layer per dims on its half of the batch, one training step, then eval."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        results = {}
        for dims, (x, upstream) in inputs.items():
            layer = convert_sync_norms(nn.Sequential(layer_with(dims, x.shape[1])))[0]
            assert layer.process_group is dist.group.WORLD
            shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
            xs = x[shard].clone().requires_grad_()
            y = layer(xs)
            y.backward(upstream[shard])
            with torch.no_grad():
                y_eval = layer.eval()(x[shard])
            results[dims] = {"y": y.detach(), "dx": xs.grad, "y_eval": y_eval,
                             "grads": {n: p.grad for n, p in layer.named_parameters()},
                             "buffers": dict(layer.named_buffers())}
        torch.save(results, f"{out_file}.{rank}")
        dist.barrier()  # no rank tears its connections down while the other still reads from them
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("switch_sync")
    generator = torch.Generator().manual_seed(3)
    inputs = {}
    for dims, shape in ((1, (8, 5)), (2, (6, 3, 4, 4))):
        x = torch.randn(shape, dtype=torch.float64, generator=generator) * 2 + 1
        inputs[dims] = (x, torch.randn(shape, dtype=torch.float64, generator=generator))
    mp.spawn(_rank_step, args=(2, str(tmp / "init"), inputs, str(tmp / "rank")), nprocs=2, join=True)
    return inputs, [torch.load(tmp / f"rank.{r}") for r in range(2)]


@pytest.mark.parametrize("dims", [1, 2])
def test_two_synced_ranks_match_one_process_on_the_union(dims, two_rank_results):
    inputs, results = two_rank_results
    x, upstream = inputs[dims]
    ranks = [r[dims] for r in results]
    single = layer_with(dims, x.shape[1])
    xs = x.clone().requires_grad_()
    y = single(xs)
    y.backward(upstream)
    torch.testing.assert_close(y.detach(), oracle(x, single), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach())
    torch.testing.assert_close(torch.cat([r["dx"] for r in ranks]), xs.grad)
    for name, parameter in single.named_parameters():  # DDP then averages the per-rank gradients
        torch.testing.assert_close(ranks[0]["grads"][name] + ranks[1]["grads"][name], parameter.grad)
    for name, value in single.named_buffers():
        for rank in ranks:
            torch.testing.assert_close(rank["buffers"][name], value)
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([r["y_eval"] for r in ranks]), single.eval()(x))
