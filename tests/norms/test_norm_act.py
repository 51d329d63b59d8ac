"""frn, evonorm_b0, evonorm_s0 against their papers' formulas in float64, and equal to timm's layers."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from normzoo.errors import BatchStatisticsError, ConfigError
from normzoo.norms import (
    EvoNormB0,
    EvoNormS0,
    FilterResponseNorm,
    brings_activation,
    cancels_bias,
    create_norm_layer,
    get_norm_layer,
    is_norm,
    keeps_mean_and_variance,
    uses_batch_statistics,
)
from normzoo.norms import batch_stats as batch_stats_module
from tests.norms.norm_checks import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

C = 6
MAPS = (4, C, 3, 2)
KEYS = ["frn", "evonorm_b0", "evonorm_s0"]
ACTIVATION_PARAMS = {"frn": "tau", "evonorm_b0": "v", "evonorm_s0": "v"}


def vec(t: Tensor) -> Tensor:
    """A per-channel vector shaped to broadcast over (N, C, H, W)."""
    return t.view(1, -1, 1, 1)


def moments(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Mean and biased variance over ``dims`` from sums, kept for broadcasting."""
    count = 1
    for d in dims:
        count *= x.shape[d]
    mean = x.sum(dims, keepdim=True) / count
    return mean, ((x - mean) ** 2).sum(dims, keepdim=True) / count


def frn_oracle(x: Tensor, gamma: Tensor, beta: Tensor, tau: Tensor | None, eps: float) -> Tensor:
    """Singh & Krishnan 2020: nu2 = mean over (H, W) of x^2; max(gamma x / sqrt(nu2 + eps) + beta, tau)."""
    nu2 = (x * x).sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3])
    y = vec(gamma) * x / torch.sqrt(nu2 + eps) + vec(beta)
    return y if tau is None else torch.where(y > vec(tau), y, vec(tau).expand_as(y))


def b0_oracle(x: Tensor, batch_var: Tensor, v: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
    """Liu et al. 2020: x / max(sqrt(s_b^2 + eps), v x + sqrt(s_w^2 + eps)) * gamma + beta."""
    _, instance_var = moments(x, (2, 3))
    left, right = torch.sqrt(vec(batch_var) + eps).expand_as(x), vec(v) * x + torch.sqrt(instance_var + eps)
    denominator = torch.where(left > right, left, right)
    return x / denominator * vec(gamma) + vec(beta)


def s0_oracle(x: Tensor, groups: int, v: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
    """Liu et al. 2020: x sigmoid(v x) / sqrt(s_w^2(x, groups) + eps) * gamma + beta, a loop over groups."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    size = x.shape[1] // groups
    outputs = []
    for g in range(groups):
        block = x[:, g * size:(g + 1) * size]
        _, var = moments(block, tuple(range(1, x.dim())))
        swish = block / (1 + torch.exp(-v[g * size:(g + 1) * size].view(shape) * block))
        outputs.append(swish / torch.sqrt(var + eps))
    return torch.cat(outputs, 1) * gamma.view(shape) + beta.view(shape)


def perturb(layer: nn.Module, seed: int = 1) -> nn.Module:
    """gamma, beta, tau, v away from their initial values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name in ("weight", "v"):
                parameter.uniform_(0.5, 1.5, generator=generator)
            elif name in ("bias", "tau"):
                parameter.normal_(0, 0.5, generator=generator)
    return layer


def maps(seed: int = 0, shape: tuple[int, ...] = MAPS) -> Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def assert_float64_close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def assert_gradients_match(layer: nn.Module, x: Tensor, oracle) -> None:  # noqa: ANN001 - a function of (x, params)
    """Outputs and the input and parameter gradients of ``layer`` equal those of ``oracle(x, **params)``."""
    params = {n: p.detach().clone().requires_grad_() for n, p in layer.named_parameters()}
    x_layer, x_oracle = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, expected = layer(x_layer), oracle(x_oracle, **params)
    assert_float64_close(y, expected)
    upstream = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(5))
    y.backward(upstream)
    expected.backward(upstream)
    assert_float64_close(x_layer.grad, x_oracle.grad)
    for name, parameter in layer.named_parameters():
        assert_float64_close(parameter.grad, params[name].grad)


# --- frn ------------------------------------------------------------------------------------


@pytest.mark.parametrize("apply_act", [True, False])
def test_frn_is_the_paper_formula_in_train_and_eval(apply_act):
    layer = perturb(FilterResponseNorm(C, apply_act=apply_act).double())
    x = maps()
    for training in (True, False):  # no running statistics: the same function in both modes
        layer.train(training).zero_grad()
        assert_gradients_match(layer, x, lambda x, weight, bias, tau=None: frn_oracle(x, weight, bias, tau, 1e-6))
    if apply_act:
        assert (layer(x) == vec(layer.tau).expand_as(x)).any()  # the threshold is active somewhere


def test_frn_learned_eps_is_the_fixed_eps_plus_the_absolute_learned_one():
    layer = perturb(FilterResponseNorm(C, eps=1e-6, learnable_eps=True).double())
    assert layer.eps_learned.shape == (1,) and layer.eps_learned.item() == pytest.approx(1e-4)
    with torch.no_grad():
        layer.eps_learned.fill_(-0.7)  # |eps_l|: a negative value still adds
    x = maps(shape=(3, C, 1, 2))  # a small map, where eps matters

    def oracle(x: Tensor, weight: Tensor, bias: Tensor, tau: Tensor, eps_learned: Tensor) -> Tensor:
        return frn_oracle(x, weight, bias, tau, 1e-6 + eps_learned.abs())

    assert_gradients_match(layer, x, oracle)
    assert layer.eps_learned.grad.item() > 0  # a larger |eps_l| shrinks the outputs that the upstream weighs


def test_frn_refuses_feature_vectors_and_says_why():
    with pytest.raises(ConfigError, match=r"'frn'.*sign\(x\).*For an MLP use 'evonorm_s0'"):
        create_norm_layer("frn", 8, dims=1)


# --- evonorm_b0 -------------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None])
def test_b0_is_the_paper_formula_with_running_variance_for_eval(momentum):
    layer = perturb(EvoNormB0(C, momentum=momentum).double())
    running_var = torch.ones(C, dtype=torch.float64)
    count = MAPS[0] * MAPS[2] * MAPS[3]
    for step in range(1, 3):
        x = maps(step) * step
        _, batch_var = moments(x, (0, 2, 3))
        batch_var = batch_var.flatten()
        layer.train().zero_grad()
        assert_gradients_match(layer, x, lambda x, weight, bias, v: b0_oracle(x, moments(x, (0, 2, 3))[1].flatten(),
                                                                              v, weight, bias, 1e-5))
        factor = 1 / step if momentum is None else momentum
        running_var = (1 - factor) * running_var + factor * batch_var * count / (count - 1)  # unbiased, as BN's
        assert_float64_close(layer.running_var, running_var)
        assert layer.num_batches_tracked.item() == step
    layer.eval().zero_grad()
    x = maps(7)
    params = {n: p.detach() for n, p in layer.named_parameters()}
    assert_gradients_match(layer, x, lambda x, weight, bias, v: b0_oracle(x, running_var, v, weight, bias, 1e-5))
    assert_float64_close(layer.running_var, running_var)  # eval leaves it
    assert not torch.allclose(layer(x), b0_oracle(x, moments(x, (0, 2, 3))[1].flatten(), params["v"],
                                                  params["weight"], params["bias"], 1e-5))


def test_b0_without_running_stats_uses_the_batch_variance_in_eval_too():
    layer = perturb(EvoNormB0(C, track_running_stats=False).double()).eval()
    assert layer.running_var is None and not keeps_mean_and_variance(layer)
    x = maps(3)
    assert_gradients_match(layer, x, lambda x, weight, bias, v: b0_oracle(x, moments(x, (0, 2, 3))[1].flatten(),
                                                                          v, weight, bias, 1e-5))


def test_b0_without_activation_is_the_affine_transform_only_and_keeps_no_statistics():
    """As the authors' code (nonlinearity=False) and timm's EvoNorm2dB0(apply_act=False)."""
    layer = perturb(EvoNormB0(C, apply_act=False).double())
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert dict(layer.named_buffers()) == {} and not keeps_mean_and_variance(layer)
    x = maps()
    for training in (True, False):
        layer.train(training).zero_grad()
        assert_gradients_match(layer, x, lambda x, weight, bias: vec(weight) * x + vec(bias))
    layer.reset_running_stats()  # nothing to reset, no error


def test_b0_statistics_are_float32_under_bf16_autocast():
    layer = perturb(EvoNormB0(C))
    x = maps().float().bfloat16()
    reference = perturb(EvoNormB0(C))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16 and layer.running_var.dtype == torch.float32
    expected = reference(x.float())  # the same bf16 values, in float32 without autocast
    torch.testing.assert_close(layer.running_var, reference.running_var, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y.float(), expected, rtol=0.02, atol=0.02)


def test_b0_refuses_one_value_per_channel_and_feature_vectors():
    with pytest.raises(BatchStatisticsError, match="1 value per channel"):
        EvoNormB0(C)(torch.randn(1, C, 1, 1))
    assert EvoNormB0(C).eval()(torch.randn(1, C, 1, 1)).shape == (1, C, 1, 1)  # eval: running statistics
    with pytest.raises(ConfigError, match=r"'evonorm_b0'.*s_w\^2 = 0.*For an MLP use 'evonorm_s0'"):
        create_norm_layer("evonorm_b0", 8, dims=1)


def test_b0_reduces_its_batch_variance_over_the_process_group(monkeypatch):
    """With a process group, the batch statistics go through the all-reduce: a fake one whose other rank
    holds the same shard makes the layer on ``x`` behave as the unsynced layer on ``cat([x, x])``."""
    calls = []

    def all_reduce_sum(tensor: Tensor, group: object) -> Tensor:
        calls.append(group)
        return tensor * 2

    monkeypatch.setattr(batch_stats_module, "all_reduce_sum", all_reduce_sum)
    monkeypatch.setattr(EvoNormB0, "syncing", property(lambda self: self.process_group is not None))
    synced, alone = perturb(EvoNormB0(C).double()), perturb(EvoNormB0(C).double())
    synced.process_group = "group"
    x = maps()
    y = synced(x)
    assert calls and set(calls) == {"group"}
    assert_float64_close(y, alone(torch.cat([x, x]))[: len(x)])
    assert_float64_close(synced.running_var, alone.running_var)  # the unbiased factor counts both ranks


# --- evonorm_s0 -------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "groups"), [(MAPS, 3), (MAPS, 6), ((5, C), 1), ((5, C), 3)])
def test_s0_is_the_paper_formula_in_train_and_eval(shape, groups):
    dims = 1 if len(shape) == 2 else 2
    layer = perturb(create_norm_layer("evonorm_s0", C, dims=dims, num_groups=groups).double())
    x = maps(shape=shape)
    for training in (True, False):  # batch-independent: the same function in both modes
        layer.train(training).zero_grad()
        assert_gradients_match(layer, x, lambda x, weight, bias, v: s0_oracle(x, groups, v, weight, bias, 1e-5))


def test_s0_without_activation_is_the_affine_transform_only():
    layer = perturb(EvoNormS0(C, dims=1, apply_act=False).double())
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    x = maps(shape=(5, C))
    assert_gradients_match(layer, x, lambda x, weight, bias: weight * x + bias)


def test_s0_groups_default_to_32_capped_and_must_divide_the_channels():
    assert EvoNormS0(64).num_groups == 32 and EvoNormS0(8).num_groups == 8
    with pytest.raises(ConfigError, match=r"'evonorm_s0' cannot split 100 channels into 32 groups.*\[1, 2, 4, 5, 10"):
        create_norm_layer("evonorm_s0", 100)
    with pytest.raises(ConfigError, match=r"into 4 groups \(num_groups\)"):
        create_norm_layer("evonorm_s0", 6, num_groups=4)


def test_s0_on_vectors_defaults_to_one_group_and_refuses_one_feature_per_group():
    """A group of one feature has variance 0: the layer would divide by sqrt(eps) (x 316) instead of normalizing."""
    assert EvoNormS0(32, dims=1).num_groups == 1 and EvoNormS0(32, dims=2).num_groups == 32
    with pytest.raises(ConfigError, match=r"one feature in each group.*variance is 0.*G one of \[1, 2, 3\]"):
        create_norm_layer("evonorm_s0", 6, dims=1, num_groups=6)
    assert EvoNormS0(6, dims=2, num_groups=6).num_groups == 6  # a map's group still has H * W values


def test_s0_statistics_are_float32_under_bf16_autocast():
    layer = perturb(EvoNormS0(C, num_groups=2))
    x = (maps() * 100).float().bfloat16()  # large values: a bf16 variance would be coarse
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), layer(x.float()), rtol=0.02, atol=0.02)


# --- the protocol -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_declares_a_norm_activation_layer_and_apply_act_false_drops_the_activation(key):
    layer = create_norm_layer(key, 8)
    assert is_norm(layer) and brings_activation(layer) and layer.apply_act is True
    assert not cancels_bias(layer)  # none subtracts a mean
    assert uses_batch_statistics(layer) is (key == "evonorm_b0")
    bare = get_norm_layer(key)(8, apply_act=False)  # what normzoo.models.layers.build_norm asks for
    assert not brings_activation(bare) and bare.apply_act is False
    names = {n for n, _ in bare.named_parameters()}
    assert ACTIVATION_PARAMS[key] in dict(layer.named_parameters()) and names == {"weight", "bias"}


@pytest.mark.parametrize("key", KEYS)
def test_refuses_a_wrong_input_layout(key):
    with pytest.raises(ConfigError, match=r"expects inputs of shape \(N, C, H, W\) with C=8"):
        create_norm_layer(key, 8)(torch.randn(2, 8))


# --- equal to timm ----------------------------------------------------------------------------


def timm_pair(key: str, apply_act: bool) -> tuple[nn.Module, nn.Module]:
    """normzoo's layer with perturbed parameters and timm's with the same values, in float32."""
    evo_norm = pytest.importorskip("timm.layers.evo_norm")
    frn = pytest.importorskip("timm.layers.filter_response_norm")
    ours = perturb(create_norm_layer(key, C, apply_act=apply_act, **({"num_groups": 3} if key == "evonorm_s0" else {})))
    theirs = {  # each with normzoo's eps: timm's defaults are 1e-5 (FRN) and 1e-3 (B0)
        "frn": lambda: frn.FilterResponseNormTlu2d(C, apply_act=apply_act, eps=ours.eps),
        "evonorm_b0": lambda: evo_norm.EvoNorm2dB0(C, apply_act=apply_act, eps=ours.eps),
        "evonorm_s0": lambda: evo_norm.EvoNorm2dS0(C, groups=3, apply_act=apply_act, eps=ours.eps),
    }[key]()
    theirs.load_state_dict(ours.state_dict(), strict=False)
    assert dict(theirs.named_parameters()).keys() == dict(ours.named_parameters()).keys()
    for name, parameter in theirs.named_parameters():
        assert torch.equal(parameter, dict(ours.named_parameters())[name])
    return ours, theirs


@pytest.mark.parametrize("apply_act", [True, False])
@pytest.mark.parametrize("key", KEYS)
def test_equals_timm_in_outputs_gradients_and_running_variance(key, apply_act):
    ours, theirs = timm_pair(key, apply_act)
    for step, training in enumerate((True, True, False)):
        x = maps(step).float() * (step + 1)
        results = []
        for layer in (ours, theirs):
            layer.train(training).zero_grad()
            xg = x.clone().requires_grad_()
            y = layer(xg)
            y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
            results.append((y, xg.grad, {n: p.grad for n, p in layer.named_parameters()}))
        (y, dx, grads), (y_timm, dx_timm, grads_timm) = results
        torch.testing.assert_close(y, y_timm, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dx, dx_timm, rtol=1e-4, atol=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, grads_timm[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
        if key == "evonorm_b0" and apply_act:
            torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-6, atol=1e-6)
