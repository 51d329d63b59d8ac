"""Weight-side normalization (``normzoo.models.weight_norms``): WS, Scaled WS and Weight Normalization.

The oracles below are the papers' formulas written out per output unit in float64, independently
of the implementation: Qiao et al. 2019 (WS), Brock et al. 2021 Sec 4 (Scaled WS),
Salimans & Kingma 2016 Eq. 2 (WN).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from normzoo.errors import ConfigError
from normzoo.models import MLP, VGG, ResNet
from normzoo.models.optim import decay_groups
from normzoo.models.weight_norms import (
    WEIGHT_NORMS,
    ScaledWeightStandardization,
    WeightNormalization,
    WeightStandardization,
    apply_weight_norm,
    nonlinearity_gain,
)
from normzoo.speed import compile_unavailable
from tests.norms.norm_checks import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors; restored after each test, never set globally

SHAPES = {"conv": (4, 3, 3, 3), "grouped_conv": (6, 2, 3, 3), "linear": (5, 7)}


def random_weight(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * 0.3 + 0.1).requires_grad_()


def unit_stats(row: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and biased variance of one unit's fan-in entries, from the definitions."""
    n = row.numel()
    mean = row.sum() / n
    return mean, ((row - mean) ** 2).sum() / n


def ws_oracle(weight: Tensor, eps: float) -> Tensor:
    rows = []
    for row in weight.reshape(weight.shape[0], -1):
        mean, var = unit_stats(row)
        rows.append((row - mean) / torch.sqrt(var + eps))
    return torch.stack(rows).reshape(weight.shape)


def sws_oracle(weight: Tensor, gain: Tensor, gamma: float, eps: float, eps_mode: str) -> Tensor:
    rows = []
    for row, g in zip(weight.reshape(weight.shape[0], -1), gain, strict=True):
        n = row.numel()
        mean, var = unit_stats(row)
        if eps_mode == "max":  # the reference code: rsqrt(max(N var, eps))
            denominator = torch.sqrt(torch.maximum(n * var, torch.tensor(eps, dtype=var.dtype)))
        else:  # timm: sqrt(var + eps) * sqrt(N)
            denominator = torch.sqrt(var + eps) * math.sqrt(n)
        rows.append(g * gamma * (row - mean) / denominator)
    return torch.stack(rows).reshape(weight.shape)


def wn_oracle(g: Tensor, v: Tensor) -> Tensor:
    rows = [gi * row / torch.sqrt((row**2).sum()) for gi, row in zip(g, v.reshape(v.shape[0], -1), strict=True)]
    return torch.stack(rows).reshape(v.shape)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_ws_is_the_papers_formula_and_each_unit_has_mean_0_and_variance_1(shape):
    weight = random_weight(shape)
    for eps in (1e-5, 0.1):
        result = WeightStandardization(eps=eps)(weight)
        torch.testing.assert_close(result, ws_oracle(weight, eps), rtol=1e-12, atol=1e-12)
    rows = WeightStandardization(eps=0.0)(weight).reshape(shape[0], -1)
    torch.testing.assert_close(rows.mean(1), torch.zeros(shape[0], dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(rows.var(1, correction=0), torch.ones(shape[0], dtype=torch.float64))


@pytest.mark.parametrize("eps_mode", ["max", "add"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_sws_is_the_papers_formula_with_a_per_unit_gain(shape, eps_mode):
    weight = random_weight(shape)
    sws = ScaledWeightStandardization(shape[0], gamma=1.7, eps=1e-3, eps_mode=eps_mode, dtype=torch.float64)
    with torch.no_grad():
        sws.gain.copy_(torch.linspace(0.5, 2.0, shape[0]))
    expected = sws_oracle(weight, sws.gain, 1.7, 1e-3, eps_mode)
    torch.testing.assert_close(sws(weight), expected, rtol=1e-12, atol=1e-12)
    # without eps and gain, each unit has variance gamma^2 / fan_in: a layer preserves its input's variance
    plain = ScaledWeightStandardization(shape[0], gamma=1.0, eps=0.0, dtype=torch.float64)
    fan_in = math.prod(shape[1:])
    torch.testing.assert_close(plain(weight).reshape(shape[0], -1).var(1, correction=0) * fan_in,
                               torch.ones(shape[0], dtype=torch.float64))


def test_sws_eps_modes_differ_where_the_variance_is_tiny():
    """``max`` floors ``fan_in * var`` at eps; ``add`` adds eps to ``var``: a near-constant unit tells them apart."""
    weight = torch.full((2, 8), 0.5, dtype=torch.float64)
    weight[0, 0] += 1e-4  # fan_in * var ~ 1e-8 < eps
    weight[1] = torch.arange(8.0)
    floor = ScaledWeightStandardization(2, gamma=1.0, eps=1e-4, eps_mode="max", dtype=torch.float64)(weight)
    added = ScaledWeightStandardization(2, gamma=1.0, eps=1e-4, eps_mode="add", dtype=torch.float64)(weight)
    centred = weight[0] - weight[0].mean()
    torch.testing.assert_close(floor[0], centred / math.sqrt(1e-4))
    var = centred.pow(2).mean()
    torch.testing.assert_close(added[0], centred / torch.sqrt((var + 1e-4) * 8))
    torch.testing.assert_close(floor[1], sws_oracle(weight, torch.ones(2, dtype=torch.float64), 1.0, 1e-4, "max")[1])


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_wn_is_g_times_the_unit_direction_and_starts_as_the_weight(shape):
    weight = random_weight(shape).detach()
    wn = WeightNormalization()
    g, v = wn.right_inverse(weight)
    assert g.shape == (shape[0],)
    torch.testing.assert_close(g, weight.reshape(shape[0], -1).norm(dim=1), rtol=1e-12, atol=0)
    torch.testing.assert_close(wn(g, v), weight, rtol=1e-12, atol=1e-12)  # the function at init is unchanged
    g2 = torch.linspace(0.1, 3.0, shape[0], dtype=torch.float64)
    torch.testing.assert_close(wn(g2, v), wn_oracle(g2, v), rtol=1e-12, atol=1e-12)


def conv_layer(name: str, **options) -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=True).double()
    apply_weight_norm(conv, name, **options)
    return conv


@pytest.mark.parametrize("name", ["ws", "sws", "wn"])
def test_a_parametrized_conv_computes_the_conv_with_w_hat_and_grads_reach_its_parameters(name):
    conv = conv_layer(name, **({"gamma": 1.5} if name == "sws" else {}))
    plist = conv.parametrizations.weight
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    if name == "ws":
        originals = [plist.original]
        oracle = lambda: ws_oracle(originals[0], 1e-5)  # noqa: E731
    elif name == "sws":
        with torch.no_grad():
            plist[0].gain.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
        originals = [plist.original, plist[0].gain]
        oracle = lambda: sws_oracle(originals[0], originals[1], 1.5, 1e-4, "max")  # noqa: E731
    else:
        with torch.no_grad():
            plist.original0.mul_(torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64))
        originals = [plist.original0, plist.original1]
        oracle = lambda: wn_oracle(originals[0], originals[1])  # noqa: E731
    out = conv(x)
    torch.testing.assert_close(out, F.conv2d(x, oracle(), conv.bias, padding=1), rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(out)
    got = torch.autograd.grad((out * upstream).sum(), originals)
    expected = torch.autograd.grad((F.conv2d(x, oracle(), conv.bias, padding=1) * upstream).sum(), originals)
    for g, e in zip(got, expected, strict=True):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_ws_gradients_are_orthogonal_to_the_shift_and_the_scale_of_each_unit():
    """WS(W) is invariant to a per-unit shift and (at eps=0) scale: the gradient per unit has zero sum and is
    orthogonal to the centred weight (Qiao et al. 2019's gradient normalization)."""
    conv = conv_layer("ws", eps=0.0)
    out = conv(torch.randn(2, 3, 5, 5, dtype=torch.float64))
    (out * torch.randn_like(out)).sum().backward()
    weight = conv.parametrizations.weight.original
    grad = weight.grad.reshape(4, -1)
    centred = (weight - weight.mean(dim=(1, 2, 3), keepdim=True)).detach().reshape(4, -1)
    zeros = torch.zeros(4, dtype=torch.float64)
    torch.testing.assert_close(grad.sum(1), zeros, rtol=0, atol=1e-10)
    torch.testing.assert_close((grad * centred).sum(1), zeros, rtol=0, atol=1e-10)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["ws", "sws", "wn"])
def test_the_parametrizations_pass_gradcheck_and_gradgradcheck(name):
    weight = random_weight((3, 2, 2, 2))
    if name == "wn":
        g, v = WeightNormalization().right_inverse(weight.detach())
        inputs = (g.clone().requires_grad_(), v.clone().requires_grad_())
        function = WeightNormalization()
    else:
        function = WEIGHT_NORMS[name].for_weight(weight, eps=1e-3).double()
        inputs = (weight,)
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


def test_learned_gains_are_1d_so_the_optimizer_does_not_decay_them():
    """normzoo decays only ``dim() >= 2`` (nanoGPT's rule); the NF papers do not decay gains, and WN's g neither."""
    for name, gain_key in (("sws", "parametrizations.weight.0.gain"), ("wn", "parametrizations.weight.original0")):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
        apply_weight_norm(model, name)
        params = dict(model.named_parameters())
        decayed, not_decayed = ({id(p) for p in group["params"]} for group in decay_groups(model))
        for layer in ("0", "2"):
            assert params[f"{layer}.{gain_key}"].dim() == 1 and id(params[f"{layer}.{gain_key}"]) in not_decayed
        raw = "parametrizations.weight.original" + ("1" if name == "wn" else "")
        assert all(id(params[f"{layer}.{raw}"]) in decayed for layer in ("0", "2"))


def test_the_relu_gain_is_the_papers_and_the_others_match_the_reference_table():
    assert nonlinearity_gain("relu") == pytest.approx(math.sqrt(2 / (1 - 1 / math.pi)), rel=1e-8)
    assert nonlinearity_gain("identity") == pytest.approx(1.0, rel=1e-8)
    # deepmind-research nfnets' sampled table (float32 samples: ~0.1% off the integral)
    reference = {"relu": 1.7139588594436646, "tanh": 1.5939117670059204, "sigmoid": 4.803835391998291,
                 "leaky_relu": 1.70590341091156, "gelu": 1.7015043497085571}
    for activation, gamma in reference.items():
        assert nonlinearity_gain(activation) == pytest.approx(gamma, rel=2e-3), activation
    assert ScaledWeightStandardization(2, gamma="tanh").gamma == nonlinearity_gain("tanh")
    with pytest.raises(ConfigError, match="Unknown activation 'swish'"):
        nonlinearity_gain("swish")


def test_configuration_errors_name_the_choices():
    model = MLP(input_shape=(4,), num_classes=2, depth=1, width=4, norm="none")
    with pytest.raises(ConfigError, match="Unknown weight norm 'bcn'. Choose one of: ws, sws, wn"):
        apply_weight_norm(model, "bcn")
    with pytest.raises(ConfigError, match="'wn' has no option eps; its options: none"):
        apply_weight_norm(model, "wn", eps=1e-5)
    with pytest.raises(ConfigError, match="'ws' has no option gamma; its options: eps"):
        apply_weight_norm(model, "ws", gamma=1.0)
    with pytest.raises(ConfigError, match="Unknown Scaled WS eps_mode 'inside'. Choose one of: max, add"):
        apply_weight_norm(model, "sws", eps_mode="inside")
    with pytest.raises(ConfigError, match="'heads', which is no submodule of MLP.*flatten, blocks, head"):
        apply_weight_norm(model, "ws", exclude=["heads"])
    with pytest.raises(ConfigError, match="MLP has no nn.Conv1d/2d/3d or nn.Linear layer outside exclude"):
        apply_weight_norm(model, "ws", exclude=["blocks", model.head])
    assert not any(parametrize.is_parametrized(m) for m in model.modules())  # nothing half-applied
    apply_weight_norm(model, "ws", exclude=["head"])
    with pytest.raises(ConfigError, match="blocks.0.linear is parametrized already"):
        apply_weight_norm(model, "sws", exclude=["head"])


def small_resnet(seed: int, name: str = "ws") -> ResNet:
    torch.manual_seed(seed)
    model = ResNet("resnet8", input_shape=(3, 8, 8), num_classes=3, norm="gn", norm_kwargs={"num_groups": 4})
    apply_weight_norm(model, name, exclude=["head"])
    return model


def test_ws_on_a_resnet_parametrizes_every_conv_but_not_the_head_and_round_trips_its_state_dict():
    model = small_resnet(seed=0)
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9  # stem, 2 per block x 3, 2 projection shortcuts
    assert all(parametrize.is_parametrized(model.get_submodule(name), "weight") for name in convs)
    assert not parametrize.is_parametrized(model.head)
    keys = model.state_dict().keys()
    assert all(f"{name}.parametrizations.weight.original" in keys and f"{name}.weight" not in keys for name in convs)
    assert "head.weight" in keys
    x = torch.randn(4, 3, 8, 8)
    other = small_resnet(seed=1)
    assert not torch.allclose(other(x), model(x))
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["ws", "sws", "wn"])
def test_a_weight_normed_resnet_trains_on_a_fixed_batch(name):
    model = small_resnet(seed=0, name=name)
    x, y = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 3
    optimizer = torch.optim.SGD(decay_groups(model), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_wn_leaves_a_vgg_unchanged_at_init():
    torch.manual_seed(0)
    model = VGG("vgg11", input_shape=(3, 8, 8), num_classes=3, norm="none", width_factor=0.125).eval()
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    names = apply_weight_norm(model, "wn", exclude=[model.head])
    assert len(names) == 8 and "head" not in names
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_sws_with_the_relu_gain_keeps_an_unnormalized_mlp_at_unit_variance():
    """Brock et al. 2021's point: with SWS, ``Var(pre-activation) = gamma^2 Var(relu(z)) = 1`` at every depth,
    the mean shift of the ReLU outputs removed by the zero-mean weights; without gamma it shrinks ~3x a layer.
    gamma belongs to the ReLU feeding a layer: the first layer, on the raw input, takes gamma=1."""

    def pre_activation_variances(gamma: float | str, first_gamma: float | str) -> list[float]:
        torch.manual_seed(0)
        model = MLP(input_shape=(256,), num_classes=2, depth=6, width=256, norm="none", init="kaiming")
        apply_weight_norm(model, "sws", exclude=["head", "blocks.0"], gamma=gamma)
        apply_weight_norm(model.blocks[0], "sws", gamma=first_gamma)
        variances: list[float] = []
        for block in model.blocks:
            block.linear.register_forward_hook(lambda m, i, out: variances.append(out.var(0).mean().item()))
        with torch.no_grad():
            model(torch.randn(512, 256))
        return variances

    assert all(0.85 < v < 1.15 for v in pre_activation_variances("relu", first_gamma=1.0))
    relu_gain = nonlinearity_gain("relu") ** 2
    assert all(0.85 * relu_gain < v < 1.15 * relu_gain for v in pre_activation_variances("relu", first_gamma="relu"))
    assert pre_activation_variances(1.0, first_gamma=1.0)[-1] < 0.01


@pytest.mark.skipif(compile_unavailable(torch.device("cpu")) is not None, reason="torch.compile unavailable")
def test_a_compiled_sws_model_equals_the_eager_one():
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    apply_weight_norm(eager, "sws")
    compiled = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    apply_weight_norm(compiled, "sws")
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    x = torch.randn(4, 6)
    grads = {}
    for label, model in (("eager", eager), ("compiled", compiled)):
        out = model(x)
        out.square().sum().backward()
        grads[label] = (out.detach(), [p.grad for p in model.parameters()])
    torch.testing.assert_close(grads["compiled"][0], grads["eager"][0], rtol=1e-5, atol=1e-6)
    for got, expected in zip(grads["compiled"][1], grads["eager"][1], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)  # float32 sums reordered


class TestAgainstTimm:
    """timm's StdConv2d / ScaledStdConv2d and an ``nn.Conv2d`` parametrized with the timm-matching options."""

    @staticmethod
    def compare(timm_conv: nn.Conv2d, conv: nn.Conv2d, gains: tuple[Tensor, Tensor] | None = None) -> None:
        x = torch.randn(2, 3, 6, 6)
        x_timm, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_timm, out_ours = timm_conv(x_timm), conv(x_ours)
        torch.testing.assert_close(out_ours, out_timm, rtol=1e-5, atol=1e-5)
        upstream = torch.randn_like(out_timm)
        (out_timm * upstream).sum().backward()
        (out_ours * upstream).sum().backward()
        torch.testing.assert_close(x_ours.grad, x_timm.grad, rtol=1e-5, atol=1e-5)
        original = conv.parametrizations.weight.original
        torch.testing.assert_close(original.grad, timm_conv.weight.grad, rtol=1e-4, atol=1e-5)
        if gains is not None:
            torch.testing.assert_close(gains[1].grad, gains[0].grad.view(-1), rtol=1e-4, atol=1e-5)

    def test_ws_with_eps_1e6_is_timms_std_conv2d(self):
        timm = pytest.importorskip("timm")
        torch.manual_seed(0)
        timm_conv = timm.layers.StdConv2d(3, 4, 3)  # eps 1e-6, padding 1, no bias
        conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        conv.load_state_dict(timm_conv.state_dict())
        apply_weight_norm(conv, "ws", eps=1e-6)
        self.compare(timm_conv, conv)

    def test_sws_with_eps_mode_add_is_timms_scaled_std_conv2d(self):
        timm = pytest.importorskip("timm")
        torch.manual_seed(0)
        gamma = nonlinearity_gain("relu")
        timm_conv = timm.layers.ScaledStdConv2d(3, 4, 3, gamma=gamma)  # eps 1e-6, padding 1, bias
        conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
        conv.load_state_dict({k: v for k, v in timm_conv.state_dict().items() if k != "gain"})
        apply_weight_norm(conv, "sws", gamma=gamma, eps=1e-6, eps_mode="add")
        gains = torch.tensor([0.5, 1.0, 1.5, 2.0])
        ours = conv.parametrizations.weight[0].gain
        with torch.no_grad():
            timm_conv.gain.copy_(gains.view(-1, 1, 1, 1))
            ours.copy_(gains)
        self.compare(timm_conv, conv, gains=(timm_conv.gain, ours))
