"""Signal propagation: statistics against constructed oracles, the residual rule, and rank collapse without BN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normzoo.errors import ConfigError
from normzoo.models.mlp import MLP
from normzoo.signal_propagation import (
    channel_statistics,
    draw_signal_propagation,
    mean_pairwise_cosine,
    signal_propagation,
    stable_rank,
)


def orthonormal_rows(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    """A rows x columns matrix whose rows (rows <= columns) or columns are orthonormal."""
    draw = torch.randn(max(rows, columns), min(rows, columns), generator=torch.Generator().manual_seed(seed))
    q, _ = torch.linalg.qr(draw.double())
    return q.T if rows < columns else q


# --------------------------------------------------------------------------- statistics


def test_stable_rank_of_a_rank_one_matrix_is_one():
    u, v = torch.randn(16, 1), torch.randn(1, 40)
    assert stable_rank(u @ v).item() == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("shape", [(6, 20), (20, 6)], ids=["wide", "tall"])
def test_stable_rank_with_equal_singular_values_is_the_smaller_side(shape):
    h = 3.0 * orthonormal_rows(*shape)
    assert stable_rank(h).item() == pytest.approx(min(shape), rel=1e-9)


def test_stable_rank_matches_singular_values_and_flattens_samples():
    h = torch.randn(8, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    singular = torch.linalg.svdvals(h.reshape(8, -1).double())
    assert stable_rank(h).item() == pytest.approx((singular.square().sum() / singular[0] ** 2).item(), rel=1e-9)


def test_cosine_is_one_for_identical_samples_and_zero_for_orthogonal_ones():
    row = torch.randn(1, 12)
    assert mean_pairwise_cosine(row.expand(5, 12)).item() == pytest.approx(1.0, rel=1e-9)
    assert mean_pairwise_cosine(orthonormal_rows(5, 12)).item() == pytest.approx(0.0, abs=1e-12)


def test_cosine_is_the_mean_over_distinct_pairs():
    h = torch.randn(6, 10, generator=torch.Generator().manual_seed(2)).double()
    pairs = [F.cosine_similarity(h[i], h[j], dim=0) for i in range(6) for j in range(6) if i != j]
    assert mean_pairwise_cosine(h).item() == pytest.approx(torch.stack(pairs).mean().item(), rel=1e-9)


def test_channel_statistics_by_hand():
    # (B=2, C=3, W=2): channel 0 holds 1, 3, 1, 3 (mean 2, variance 1); channel 1 zeros; channel 2 -1, 1, -1, 1
    h = torch.tensor([[[1.0, 3.0], [0.0, 0.0], [-1.0, 1.0]], [[1.0, 3.0], [0.0, 0.0], [-1.0, 1.0]]])
    mean_sq, variance = channel_statistics(h)
    assert mean_sq.item() == pytest.approx((4 + 0 + 0) / 3)
    assert variance.item() == pytest.approx((1 + 0 + 1) / 3)


# --------------------------------------------------------------------------- residual blocks


class Scale(nn.Module):
    def __init__(self, factor: float, features: int = 4) -> None:
        super().__init__()
        self.factor = factor
        self.weight = nn.Parameter(torch.ones(features, 1))  # parameters: the branch outweighs a parameter-free skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x * self.weight


class Block(nn.Module):
    """``branch(x) + skip``, written the ways residual blocks are: identity, projection, in place."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.branch = Scale(3.0)
        self.shortcut = nn.Identity() if style == "identity" else nn.Sequential(Scale(0.5, features=1))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.style == "in_place":  # torchvision: out = bn2(...); out += identity
            out = self.branch(x)
            out += self.shortcut(x)
            return self.relu(out)
        return self.relu(self.shortcut(x) + self.branch(x))


def standardized(batch: int = 64, channels: int = 4) -> torch.Tensor:
    x = torch.randn(batch, channels, 3, generator=torch.Generator().manual_seed(3))
    return (x - x.mean((0, 2), keepdim=True)) / x.std((0, 2), correction=0, keepdim=True)  # channel variance 1


@pytest.mark.parametrize(("style", "skip_var"), [("identity", 1.0), ("projection", 0.25), ("in_place", 0.25)])
def test_residual_ratio_of_a_constructed_block(style, skip_var):
    report = signal_propagation(nn.Sequential(Block(style)), standardized())
    (block,) = report.residuals
    assert block.name == "0"
    assert block.branch_var == pytest.approx(9.0) and block.skip_var == pytest.approx(skip_var)
    assert block.branch_skip_ratio == pytest.approx(9.0 / skip_var)
    assert [layer.name for layer in report.layers] == ["0.relu"]  # the block's output is the ReLU's


def test_explicit_residual_blocks_by_path_or_class_and_none():
    x, model = standardized(), nn.Sequential(Block("projection"))
    by_path = signal_propagation(model, x, residual_blocks={"0": ("branch", "shortcut")}).residuals
    by_class = signal_propagation(model, x, residual_blocks={Block: ("branch", None)}).residuals  # skip: the input
    assert (by_path[0].branch_var, by_path[0].skip_var) == pytest.approx((9.0, 0.25))
    assert (by_class[0].branch_var, by_class[0].skip_var) == pytest.approx((9.0, 1.0))
    assert signal_propagation(model, x, residual_blocks={}).residuals == ()
    with pytest.raises(ConfigError, match="no submodule 'nope'"):
        signal_propagation(model, x, residual_blocks={"0": ("nope", None)})


class Doubled(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + x)


class PreActivation(nn.Module):
    """``x + W relu(BN(x))``: no activation after the addition, so the block's output is a layer of its own."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm, self.linear = nn.BatchNorm1d(width), nn.Linear(width, width, bias=False)
        nn.init.kaiming_normal_(self.linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(torch.relu(self.norm(x)))


def test_an_ambiguous_sum_is_no_block_and_a_pre_activation_block_is_a_layer():
    assert signal_propagation(Doubled(), standardized()).residuals == ()
    torch.manual_seed(0)
    report = signal_propagation(nn.Sequential(*(PreActivation(64) for _ in range(8))), torch.randn(32, 64))
    assert [layer.name for layer in report.layers[:3]] == ["0.relu", "0", "1.relu"]
    # De & Smith 2020: the skip's variance grows by about one per block, the BN branch's stays ~1, ratio ~1/l
    ratios = [block.branch_skip_ratio for block in report.residuals]
    assert all(0.5 / depth < ratio < 2 / depth for depth, ratio in enumerate(ratios, start=1))


# --------------------------------------------------------------------------- the measurement


def deep_mlp(norm: str, depth: int = 30, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(input_shape=(16,), num_classes=5, depth=depth, width=64, norm=norm, init="kaiming")


def test_rank_collapses_with_depth_without_bn_but_not_with_it():
    """Daneshmand et al. 2020, on a 30-layer ReLU MLP at He init. Post-ReLU outputs keep their mean
    direction, so BN's stable rank is near pi (at most, for standardized inputs): 2.6-3.0 over 20 seeds,
    against 1.00-1.04 (cosine 0.97-1.0) without BN."""
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    with_bn, without = signal_propagation(deep_mlp("bn"), x), signal_propagation(deep_mlp("none"), x)
    assert len(with_bn.layers) == len(without.layers) == 30
    assert min(layer.stable_rank for layer in with_bn.layers) > 2.0 and with_bn.layers[-1].cosine < 0.5
    assert without.layers[0].stable_rank > 2.0
    assert without.layers[-1].stable_rank < 1.2 and without.layers[-1].cosine > 0.9


def test_gradient_norms_match_autograd_and_the_model_is_left_as_it_was():
    model = deep_mlp("bn", depth=4).eval()
    x, y = torch.randn(32, 16), torch.randint(0, 5, (32,))
    state = {key: value.clone() for key, value in model.state_dict().items()}
    report = signal_propagation(model, x, y, F.cross_entropy)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items())  # running stats too

    outputs = []
    for block in model.blocks:
        block.act.register_forward_hook(lambda module, inputs, output: outputs.append(output) or output.retain_grad())
    loss = F.cross_entropy(model.train()(x), y)
    loss.backward()
    assert report.loss == pytest.approx(loss.item(), rel=1e-6)
    assert [layer.grad_norm for layer in report.layers] == pytest.approx([o.grad.norm().item() for o in outputs],
                                                                         rel=1e-5)
    assert report.scalars()["blocks.3.act/grad_norm"] == report.layers[-1].grad_norm


def test_layers_by_name_and_errors():
    model, x = deep_mlp("bn", depth=3), torch.randn(8, 16)
    report = signal_propagation(model, x, layers=["blocks.1.act", "blocks.2.norm", "head"])
    assert [layer.name for layer in report.layers] == ["blocks.1.act", "blocks.2.norm", "head"]
    assert report.layer("blocks.2.norm").channel_var == pytest.approx(1.0, rel=1e-3)  # BN standardizes
    assert report.layers[0].grad_norm is None and "blocks.1.act/grad_norm" not in report.scalars()
    with pytest.raises(ConfigError, match=r"no batch tensor named \['blocks.9.act'\].*blocks.0.act"):
        signal_propagation(model, x, layers=["blocks.9.act"])
    with pytest.raises(ConfigError, match="at least 2 samples"):
        signal_propagation(model, x[:1])
    with pytest.raises(ConfigError, match="no activation function"):
        signal_propagation(nn.Linear(16, 4), x)


def test_figure_against_depth():
    """Drawn, not rendered (a second of CPU): the callback's test renders one into TensorBoard."""
    x = torch.randn(16, 16)
    reports = {norm: signal_propagation(deep_mlp(norm, depth=6), x, torch.randint(0, 5, (16,)), F.cross_entropy)
               for norm in ("bn", "none")}
    figure = draw_signal_propagation(reports)
    panels = [axis for axis in figure.axes if axis.lines]
    assert len(panels) == 4  # moments, rank, cosine, gradients; no residual block in an MLP
    assert all(axis.get_xlabel() and axis.get_ylabel() for axis in figure.axes)
    assert [len(axis.lines) for axis in panels] == [4, 3, 3, 2]  # with the reference lines at 1
    assert figure.axes[0].get_yscale() == "log" and "bn, none" in figure.texts[0].get_text()
    assert figure.get_figwidth() * figure.dpi == 1200
