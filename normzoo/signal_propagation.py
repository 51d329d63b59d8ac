"""Signal propagation at initialization: what one batch looks like at each depth of a model.

One forward (and one backward, given a loss) in train mode, BN normalizing with the batch's
own statistics as in training, and for each layer in forward order (by default every
activation's output, see ``normzoo.signal_trace``):

- ``channel_mean_sq`` and ``channel_var``: the average over channels of the squared channel mean
  and of the channel variance (biased), channels on dim 1, statistics over the batch and every
  other dim: Brock, De & Smith 2021's signal propagation plots;
- ``stable_rank``: ``||H||_F^2 / ||H||_2^2`` of the batch representation ``H`` (B x d, each sample
  flattened, not centred), between 1 (every sample on one line) and ``min(B, d)``; and ``cosine``:
  the mean cosine similarity over the ``B(B-1)`` pairs of distinct samples (a zero sample counts
  0): the rank collapse of Daneshmand et al. 2020, where deep nets without BN map every sample
  to nearly the same direction. An uncentred ReLU output keeps its mean direction: for
  standardized pre-activations its stable rank is at most pi (E[relu(z)^2] / E[relu(z)]^2);
- ``grad_norm``: ``||dL/dh||``, the l2 norm of the loss's gradient with respect to the whole
  batch tensor ``h`` of the layer (a mean-reduced loss divides it by B), when a loss is given:
  Yang et al. 2019's gradient explosion in deep BN nets without skips;

and for each residual block (found by the rule of ``normzoo.signal_trace``, or named with
``residual_blocks=``) the ``channel_var`` of its branch and of its skip, and their ratio
``branch_skip_ratio``: De & Smith 2020, where BN shrinks the branches against a skip whose
variance grows with depth, so deep BN ResNets start near the identity.

The model's modes, buffers (BN running statistics), attributes, ``requires_grad`` flags and
the random generators are restored afterwards, and parameters' ``.grad`` are never written:
measuring does not change a run. Plain torch; the figure imports matplotlib when drawn.

Example::

    report = signal_propagation(model, x, y, loss_fn=F.cross_entropy)
    report.layers[-1].stable_rank, report.scalars()["blocks.9.act/grad_norm"]
    plot_signal_propagation({"bn": report, "none": other}, Path("spp.png"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from normzoo.batches import batch_length
from normzoo.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from normzoo.signal_trace import ResidualSpec

LAYER_STATS = ("channel_mean_sq", "channel_var", "stable_rank", "cosine")
RESIDUAL_STATS = ("branch_var", "skip_var", "branch_skip_ratio")


def _rows(h: Tensor) -> Tensor:
    """``h`` (B, C, ...) as float64 rows, one per channel, over the batch and the other dims."""
    h = h.detach().to(torch.float64)
    h = h.reshape(h.shape[0], 1) if h.dim() == 1 else h
    return h.transpose(0, 1).reshape(h.shape[1], -1)


def channel_statistics(h: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean over channels of the squared channel mean, mean over channels of the channel variance)``.

    Channels are dim 1; each channel's mean and biased variance run over the batch and every
    other dim (Brock et al. 2021). Float64 0-d tensors on ``h``'s device.
    """
    variance, mean = torch.var_mean(_rows(h), dim=1, correction=0)
    return (mean * mean).mean(), variance.mean()


def sample_gram(h: Tensor) -> Tensor:
    """``H H^T`` (B x B, float64) of the batch representation ``H``: each sample flattened."""
    rows = h.detach().to(torch.float64).reshape(h.shape[0], -1)
    return rows @ rows.T


def stable_rank_of_gram(gram: Tensor) -> Tensor:
    """``trace(G) / lambda_max(G)`` = ``||H||_F^2 / ||H||_2^2``; NaN for H = 0."""
    return gram.diagonal().sum() / torch.linalg.eigvalsh(gram)[-1]


def mean_cosine_of_gram(gram: Tensor) -> Tensor:
    """The mean cosine similarity of distinct samples from ``G = H H^T``; a zero sample counts 0; NaN for B < 2."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    nonzero = norms > 0
    cosines = gram / torch.where(nonzero, norms, 1.0).outer(torch.where(nonzero, norms, 1.0))
    b = gram.shape[0]
    return (cosines.sum() - cosines.diagonal().sum()) / (b * (b - 1))


def stable_rank(h: Tensor) -> Tensor:
    """``||H||_F^2 / ||H||_2^2`` of ``h`` seen as B flattened samples: 1 for rank one, ``min(B, d)`` for equal
    singular values (Daneshmand et al. 2020)."""
    return stable_rank_of_gram(sample_gram(h))


def mean_pairwise_cosine(h: Tensor) -> Tensor:
    """The mean cosine similarity over pairs of distinct samples of ``h`` (B flattened samples)."""
    return mean_cosine_of_gram(sample_gram(h))


@dataclass(frozen=True)
class LayerSignal:
    """The statistics of one layer's output (see the module docstring); ``grad_norm`` None without a loss."""

    name: str
    channel_mean_sq: float
    channel_var: float
    stable_rank: float
    cosine: float
    grad_norm: float | None = None


@dataclass(frozen=True)
class ResidualSignal:
    """One residual block call: the channel variance of its branch and of its skip, and their ratio."""

    name: str
    branch_var: float
    skip_var: float
    branch_skip_ratio: float


@dataclass(frozen=True)
class SignalReport:
    """Signal propagation through one model on one batch: its layers and residual blocks in forward order."""

    model: str
    batch_size: int
    layers: tuple[LayerSignal, ...]
    residuals: tuple[ResidualSignal, ...]
    loss: float | None = None

    def layer(self, name: str) -> LayerSignal:
        """The layer called ``name``; ``KeyError`` listing the names if there is none."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"No layer {name!r}; the layers are {[layer.name for layer in self.layers]}.")

    def scalars(self) -> dict[str, float]:
        """Every statistic as ``{"<layer>/<stat>": value}``: the layers', then the residual blocks'."""
        scalars = {f"{layer.name}/{stat}": getattr(layer, stat) for layer in self.layers for stat in LAYER_STATS}
        scalars |= {f"{layer.name}/grad_norm": layer.grad_norm for layer in self.layers if layer.grad_norm is not None}
        return scalars | {f"{block.name}/{stat}": getattr(block, stat) for block in self.residuals
                          for stat in RESIDUAL_STATS}


class _GradNorm:
    """Tensor hook: keeps the l2 norm of the gradient flowing into one layer's output."""

    def __init__(self, store: dict[str, Tensor], name: str) -> None:
        self.store, self.name = store, name

    def __call__(self, grad: Tensor) -> None:
        self.store[self.name] = grad.detach().to(torch.float64).norm()


class _Statistics:
    """The sink of a ``SignalTrace``: each tensor's statistics as it is computed, its gradient's norm later."""

    def __init__(self, gradients: bool) -> None:
        self.gradients = gradients
        self.layers: dict[str, Tensor] = {}
        self.residuals: dict[str, Tensor] = {}
        self.grad_norms: dict[str, Tensor] = {}

    @torch.no_grad()
    def layer(self, name: str, output: Tensor) -> None:
        gram = sample_gram(output)
        self.layers[name] = torch.stack([*channel_statistics(output), stable_rank_of_gram(gram),
                                         mean_cosine_of_gram(gram)])
        if self.gradients and output.requires_grad:
            output.register_hook(_GradNorm(self.grad_norms, name))

    @torch.no_grad()
    def residual(self, name: str, branch: Tensor, skip: Tensor) -> None:
        branch_var, skip_var = channel_statistics(branch)[1], channel_statistics(skip)[1]
        self.residuals[name] = torch.stack([branch_var, skip_var, branch_var / skip_var])

    def report(self, model: nn.Module, batch_size: int, loss: Tensor | None) -> SignalReport:
        """Everything as Python numbers: layers, residual blocks, gradient norms, loss, in that order."""
        nan = torch.tensor(torch.nan)
        tensors = [*self.layers.values(), *self.residuals.values(),
                   *(self.grad_norms.get(name, nan) for name in self.layers), nan if loss is None else loss]
        values = iter(torch.cat([t.detach().to("cpu", torch.float64).reshape(-1) for t in tensors]).tolist())
        stats = {name: [next(values) for _ in LAYER_STATS] for name in self.layers}
        residuals = tuple(ResidualSignal(name, *(next(values) for _ in RESIDUAL_STATS)) for name in self.residuals)
        grads = {name: next(values) for name in self.layers}
        layers = tuple(LayerSignal(name, *stats[name], grad_norm=grads[name] if name in self.grad_norms else None)
                       for name in self.layers)
        loss_value = next(values)
        return SignalReport(type(model).__name__, batch_size, layers, residuals, None if loss is None else loss_value)


def trace_signal(model: nn.Module, step: Callable[[], Tensor | None], batch_size: int, *,
                 layers: Sequence[str] | None = None, residual_blocks: ResidualSpec | None = None,
                 gradients: bool = True) -> SignalReport:
    """The signal propagation of ``model`` through ``step``, code that runs it once on a batch of ``batch_size``.

    ``step`` returns the loss (or None); with ``gradients`` it runs with autograd on and one
    backward from that loss gives each layer's ``grad_norm`` (``torch.autograd.grad`` into the
    trainable parameters: ``.grad`` stays untouched). Use it where ``model(inputs)`` is not how
    the model runs (a Lightning ``training_step``, keyword inputs).

    Args:
        model: the module to measure (put in train mode for the measurement, restored afterwards).
        step: runs the model's forward once; returns the loss or None.
        batch_size: samples in the batch; only tensors with this first dimension are layers.
        layers: activation sites (``normzoo.callbacks.capture``'s names, e.g. ``blocks.0.act``,
            ``layer1.0.relu#2``) and module paths whose outputs to measure; None: every activation
            output and every residual block output that is no activation's.
        residual_blocks: ``{block path or class: (branch submodule, skip submodule or None)}``; None:
            the residual rule of ``normzoo.signal_trace``; ``{}``: no residual statistics.
        gradients: measure ``||dL/dh||`` too, when ``step`` returns a loss.

    Raises:
        ConfigError: a batch of fewer than 2 samples, names in ``layers`` that the forward did not
            compute, nothing to measure, a gradient asked of a loss that has none.
    """
    # Imported on call: importing normzoo.callbacks loads Lightning, and importing this module should not.
    from normzoo.callbacks.probe import preserved_state
    from normzoo.signal_trace import SignalTrace

    if batch_size < 2:
        raise ConfigError(f"Signal propagation needs a batch of at least 2 samples (cosines, stable rank, batch "
                          f"statistics), got {batch_size}.")
    statistics = _Statistics(gradients)
    with preserved_state(model):
        model.train()
        trace = SignalTrace(model, statistics, batch_size, layers, residual_blocks)
        with torch.set_grad_enabled(gradients), trace:
            loss = step()
        if loss is not None and loss.numel() != 1:
            raise ConfigError(f"Signal propagation needs a scalar loss, got shape {tuple(loss.shape)}.")
        if trace.problems:
            raise ConfigError("; ".join(trace.problems) + ".")
        _check_layers(model, layers, statistics, trace.seen)
        if gradients and loss is not None:
            _backward(model, loss)
    return statistics.report(model, batch_size, loss)


def signal_propagation(model: nn.Module, batch_inputs: Any, targets: Any = None,
                       loss_fn: Callable[[Any, Any], Tensor] | None = None, *, layers: Sequence[str] | None = None,
                       residual_blocks: ResidualSpec | None = None) -> SignalReport:
    """Signal propagation of ``model(batch_inputs)`` at its current weights (module docstring).

    Args:
        model: any ``nn.Module``; measured in train mode, its state restored afterwards.
        batch_inputs: what ``model`` is called with (a tensor, or any structure whose first
            tensor holds one row per sample).
        targets: passed to ``loss_fn``.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (``F.cross_entropy``); given, each layer's
            ``grad_norm`` is measured too.
        layers: see ``trace_signal``.
        residual_blocks: see ``trace_signal``.

    Raises:
        ConfigError: see ``trace_signal``.
    """

    def step() -> Tensor | None:
        outputs = model(batch_inputs)
        return None if loss_fn is None else loss_fn(outputs, targets)

    return trace_signal(model, step, batch_length(batch_inputs), layers=layers, residual_blocks=residual_blocks,
                        gradients=loss_fn is not None)


def _check_layers(model: nn.Module, layers: Sequence[str] | None, statistics: _Statistics, seen: list[str]) -> None:
    if layers is not None:
        missing = [name for name in layers if name not in statistics.layers]
        if missing:
            raise ConfigError(f"Signal propagation: {type(model).__name__}'s forward computed no batch tensor named "
                              f"{missing}; the activation sites and residual blocks are {seen}, or name a module path.")
    elif not statistics.layers:
        raise ConfigError(f"Signal propagation: {type(model).__name__}'s forward computed no activation function and "
                          "no residual block on the batch; name the modules to measure with layers=[...].")


def _backward(model: nn.Module, loss: Tensor) -> None:
    """One backward from ``loss`` into the trainable parameters (returned, not accumulated): the hooks see it."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters or not loss.requires_grad:
        raise ConfigError(f"Signal propagation: the loss of {type(model).__name__} has no gradient with respect to "
                          "its parameters (none requires grad, or the loss was computed under no_grad); measure "
                          "without a loss.")
    torch.autograd.grad(loss.reshape(()), parameters, allow_unused=True)


FIGURE_SIZE = (12.0, 6.8)
"""Inches at 100 dpi: a 2 x 3 grid of panels about as large as the diagnostics' single 640 x 400 px figures."""


def draw_signal_propagation(reports: SignalReport | Mapping[str, SignalReport], title: str | None = None) -> Figure:
    """Every statistic against depth, a panel per statistic, a line per report (``{label: report}``).

    Panels: the channel moments (log y), the stable rank, the cosine, the gradient norm (log y),
    the residual branch and skip variances (log y) and their ratio (log y). A panel with
    nothing to draw says why. Matplotlib's object API (no pyplot state), Agg-safe.
    """
    from matplotlib.figure import Figure

    reports = {reports.model: reports} if isinstance(reports, SignalReport) else dict(reports)
    figure = Figure(figsize=FIGURE_SIZE, dpi=100)
    axes = figure.subplots(2, 3).flatten()
    for index, (label, report) in enumerate(reports.items()):
        color = f"C{index % 10}"
        depth = list(range(1, len(report.layers) + 1))
        blocks = list(range(1, len(report.residuals) + 1))
        _line(axes[0], depth, [layer.channel_var for layer in report.layers], color, f"{label}: variance", "-")
        _line(axes[0], depth, [layer.channel_mean_sq for layer in report.layers], color, f"{label}: mean²", "--")
        _line(axes[1], depth, [layer.stable_rank for layer in report.layers], color, label)
        _line(axes[2], depth, [layer.cosine for layer in report.layers], color, label)
        grads = [(d, layer.grad_norm) for d, layer in zip(depth, report.layers, strict=True)
                 if layer.grad_norm is not None]
        _line(axes[3], [d for d, _ in grads], [g for _, g in grads], color, label)
        _line(axes[4], blocks, [block.branch_var for block in report.residuals], color, f"{label}: branch", "-")
        _line(axes[4], blocks, [block.skip_var for block in report.residuals], color, f"{label}: skip", "--")
        _line(axes[5], blocks, [block.branch_skip_ratio for block in report.residuals], color, label)
    layer_axis = "layer (forward order)"
    labels = [
        ("channel moments", layer_axis, "average over channels (activation²)", True),
        ("stable rank ||H||²_F / ||H||²_2", layer_axis, "stable rank (1 = collapsed)", False),
        ("mean pairwise cosine of samples", layer_axis, "cosine similarity", False),
        ("gradient norm ||dL/dh||", layer_axis, "gradient L2 norm", True),
        ("residual branch and skip", "residual block (forward order)", "channel variance (activation²)", True),
        ("branch / skip variance", "residual block (forward order)", "variance ratio", True),
    ]
    for axis, (name, x_label, y_label, log) in zip(axes, labels, strict=True):
        _panel(axis, name, x_label, y_label, log)
    axes[1].axhline(1, color="0.5", lw=0.8, ls=":")
    axes[2].axhline(1, color="0.5", lw=0.8, ls=":")
    first = next(iter(reports.values()))
    figure.suptitle(title or f"Signal propagation at initialization: {', '.join(reports)} "
                    f"(train mode, batch of {first.batch_size})", fontsize=11)
    figure.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.09, hspace=0.45, wspace=0.3)
    return figure


def plot_signal_propagation(reports: SignalReport | Mapping[str, SignalReport], path: Path,
                            title: str | None = None) -> Path:
    """Save ``draw_signal_propagation``'s figure as a PNG at ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_signal_propagation(reports, title).savefig(path, dpi=100)
    return path


def _line(axis: Any, x: Sequence[float], y: Sequence[float], color: str, label: str, style: str = "-") -> None:
    if len(x):
        axis.plot(x, y, style, color=color, lw=1.4, marker="." if len(x) <= 60 else None, ms=4, label=label)


def _panel(axis: Any, name: str, x_label: str, y_label: str, log: bool) -> None:
    """Labels, grid, legend and scale of one panel; a note instead when it has nothing to draw."""
    axis.set_title(name, fontsize=9)
    axis.set_xlabel(x_label, fontsize=8)
    axis.set_ylabel(y_label, fontsize=8)
    axis.tick_params(labelsize=7)
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)
    if not axis.lines:
        note = "no residual block found" if "residual" in x_label else "no loss given"
        axis.text(0.5, 0.5, note, ha="center", va="center", transform=axis.transAxes, fontsize=9, color="0.4")
        return
    if log and any(y > 0 for line in axis.lines for y in line.get_ydata()):
        axis.set_yscale("log", nonpositive="mask")
    axis.legend(fontsize=7, loc="best")
