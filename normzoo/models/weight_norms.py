"""Weight-side normalization: reparametrizations of the weights of a model's conv and linear layers.

Where a norm layer standardizes activations, these standardize (or rescale) each layer's weight
before it is used; the layer computes with ``W_hat = f(W)`` while the optimizer updates ``W``.
Each is a ``torch.nn.utils.parametrize`` parametrization of a layer's ``weight``, one row of
``WEIGHT_NORMS``; a "unit" is one output unit, the slice ``W[i]`` of a ``(out, in)`` linear weight
or an ``(out, in / groups, k, k)`` conv kernel, whose ``fan_in`` entries the statistics run over.

- ``ws``: Weight Standardization (Qiao, Wang, Liu, Shen & Yuille 2019, "Micro-Batch Training
  with Batch-Channel Normalization and Weight Standardization", the WS definition):
  ``W_hat[i] = (W[i] - mean(W[i])) / sqrt(var(W[i]) + eps)``, biased variance. With GN it is
  BiT's "GN+WS" (Kolesnikov et al. 2020).
- ``sws``: Scaled Weight Standardization (Brock, De & Smith, ICLR 2021, "Characterizing signal
  propagation to close the performance gap in unnormalized ResNets", Sec 4):
  ``W_hat[i] = gain[i] * gamma * (W[i] - mean(W[i])) / (std(W[i]) * sqrt(fan_in))``, a learned
  per-unit gain (init 1) and ``gamma`` the gain of the nonlinearity feeding the layer. The
  weights of NF-ResNets.
- ``wn``: Weight Normalization (Salimans & Kingma 2016, Eq. 2): ``W[i] = g[i] * v[i] / ||v[i]||``,
  ``g`` initialized to ``||v[i]||`` (the data-independent init), so the function at init is unchanged.

``apply_weight_norm(model, name, exclude=...)`` parametrizes every ``nn.Conv1d/2d/3d`` and
``nn.Linear`` outside ``exclude`` (NF-ResNets and BiT leave the classifier head alone). The
parametrized state_dict keys are ``<layer>.parametrizations.weight.original`` (ws, sws),
``<layer>.parametrizations.weight.0.gain`` (sws), and ``...weight.original0`` (g) /
``...weight.original1`` (v) (wn). Every learned gain is 1-D, so normzoo's optimizers do not decay
it (``normzoo.models.optim``: only ``dim() >= 2`` is decayed; the NF papers do not decay gains).
Parametrized modules pickle only through their state_dict (a torch restriction).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from normzoo.errors import ConfigError
from normzoo.models.layers import make_activation

__all__ = [
    "WEIGHT_NORMS",
    "ScaledWeightStandardization",
    "WeightNormalization",
    "WeightStandardization",
    "apply_weight_norm",
    "modules_outside",
    "nonlinearity_gain",
]

PARAMETRIZED_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""The layers ``apply_weight_norm`` parametrizes: their weight's dim 0 is the output unit.
(Transposed convs are not: their dim 0 is the input channel.)"""


def _unit_dims(weight: Tensor) -> tuple[int, ...]:
    """The fan-in dimensions of a weight: all but dim 0, the output unit."""
    return tuple(range(1, weight.dim()))


def _per_unit(vector: Tensor, weight: Tensor) -> Tensor:
    """A 1-D per-unit vector shaped to broadcast against ``weight``: ``(out, 1, ..., 1)``."""
    return vector.view(-1, *([1] * (weight.dim() - 1)))


class WeightStandardization(nn.Module):
    """``W_hat[i] = (W[i] - mean(W[i])) / sqrt(var(W[i]) + eps)`` per output unit: Qiao et al. 2019.

    The variance is the biased one (over ``fan_in`` entries) and ``eps`` is inside the square
    root, as in the paper's definition of sigma. The paper gives no value for ``eps``; the default 1e-5 is the
    value of the authors' reference code (which adds it to the unbiased std instead). ``eps=1e-6``
    reproduces timm's ``StdConv2d`` exactly, ``eps=1e-10`` BiT's reference code. No affine: the
    norm layer after the conv (GN, BN) brings its own.
    """

    options: ClassVar[tuple[str, ...]] = ("eps",)

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        if not eps >= 0:
            raise ConfigError(f"Weight Standardization needs eps >= 0, got {eps}.")
        self.eps = float(eps)

    @classmethod
    def for_weight(cls, weight: Tensor, **options: Any) -> WeightStandardization:
        """The parametrization of ``weight`` (which fixes nothing here but the options)."""
        return cls(**options)

    def forward(self, weight: Tensor) -> Tensor:
        var, mean = torch.var_mean(weight, dim=_unit_dims(weight), correction=0, keepdim=True)
        return (weight - mean) * torch.rsqrt(var + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


SWS_EPS_MODES = ("max", "add")
"""How Scaled WS keeps the denominator off zero: ``max``: ``sqrt(max(fan_in * var, eps))`` (the
NF papers' reference code); ``add``: ``sqrt(fan_in * (var + eps))`` (timm's ``ScaledStdConv2d``)."""


class ScaledWeightStandardization(nn.Module):
    """``W_hat[i] = gain[i] * gamma * (W[i] - mean(W[i])) / (std(W[i]) * sqrt(fan_in))``: Brock et al. 2021, Sec 4.

    The standardized weight has per-unit variance ``1 / fan_in``, so a layer preserves the
    variance of its input (He init without the 2); ``gamma`` undoes the variance a nonlinearity
    takes away: ``1 / std(g(x))`` for ``x ~ N(0, 1)``, ``sqrt(2 / (1 - 1/pi))`` for ReLU
    (``nonlinearity_gain``). It belongs to the nonlinearity *feeding* the layer: a layer on the raw
    input (a stem conv, an MLP's first linear) would take ``gamma=1.0``. ``gain`` is a learned
    per-unit scale, 1-D ``(out,)`` (reshaped in forward) and initialized at 1, so it is not
    weight-decayed by normzoo's ``dim() >= 2`` rule, as in the paper.

    The paper's formula has no epsilon. The default ``eps_mode="max", eps=1e-4`` follows the
    authors' reference code (deepmind-research nfnets: ``rsqrt(max(fan_in * var, 1e-4))``);
    ``eps_mode="add", eps=1e-6`` with the same ``gamma`` reproduces timm's ``ScaledStdConv2d``
    exactly (``(W - mean) / sqrt(var + eps) * gain * gamma / sqrt(fan_in)``).

    Args:
        out_features: output units of the weight (its dim 0): the size of ``gain``.
        gamma: the nonlinearity gain, a float or an activation name of ``normzoo.models.ACTIVATIONS``
            (``nonlinearity_gain``); default ``"relu"``.
        eps, eps_mode: see above.
        device, dtype: of ``gain``.
    """

    options: ClassVar[tuple[str, ...]] = ("gamma", "eps", "eps_mode")

    def __init__(
        self, out_features: int, gamma: float | str = "relu", eps: float = 1e-4, eps_mode: str = "max",
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if eps_mode not in SWS_EPS_MODES:
            raise ConfigError(f"Unknown Scaled WS eps_mode {eps_mode!r}. Choose one of: {', '.join(SWS_EPS_MODES)}.")
        if not eps >= 0:
            raise ConfigError(f"Scaled Weight Standardization needs eps >= 0, got {eps}.")
        self.gamma = nonlinearity_gain(gamma) if isinstance(gamma, str) else float(gamma)
        self.eps, self.eps_mode = float(eps), eps_mode
        self.gain = nn.Parameter(torch.ones(out_features, device=device, dtype=dtype))

    @classmethod
    def for_weight(cls, weight: Tensor, **options: Any) -> ScaledWeightStandardization:
        """The parametrization of ``weight``: a gain per output unit, on its device and in its dtype."""
        return cls(weight.shape[0], **options, device=weight.device, dtype=weight.dtype)

    def forward(self, weight: Tensor) -> Tensor:
        var, mean = torch.var_mean(weight, dim=_unit_dims(weight), correction=0, keepdim=True)
        fan_in = weight[0].numel()
        if self.eps_mode == "max":
            inv_std = torch.rsqrt(torch.clamp(var * fan_in, min=self.eps))
        else:
            inv_std = torch.rsqrt((var + self.eps) * fan_in)
        return (weight - mean) * (_per_unit(self.gain, weight) * self.gamma * inv_std)

    def extra_repr(self) -> str:
        return f"{self.gain.numel()}, gamma={self.gamma:.6g}, eps={self.eps}, eps_mode={self.eps_mode!r}"


class WeightNormalization(nn.Module):
    """``W[i] = g[i] * v[i] / ||v[i]||`` per output unit: Salimans & Kingma 2016, Eq. 2.

    Registered on a weight ``W``, ``right_inverse`` sets ``v = W`` and ``g[i] = ||W[i]||``, the
    paper's data-independent init: the layer computes the same function as before. ``g`` is 1-D
    ``(out,)`` (``parametrizations.weight.original0``; ``v`` is ``original1``), so normzoo's
    ``dim() >= 2`` rule decays ``v`` but not ``g`` (torch's own ``weight_norm`` keeps ``g`` as
    ``(out, 1, 1, 1)``, which that rule would decay). No epsilon, as in the paper.
    """

    options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def for_weight(cls, weight: Tensor, **options: Any) -> WeightNormalization:
        """The parametrization of ``weight`` (its ``g`` and ``v`` come from ``right_inverse``)."""
        return cls(**options)

    def forward(self, g: Tensor, v: Tensor) -> Tensor:
        return v * (_per_unit(g, v) / torch.linalg.vector_norm(v, dim=_unit_dims(v), keepdim=True))

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """``(g, v)`` with ``forward(g, v) == weight``: ``g`` the per-unit norms, ``v`` the weight itself."""
        return torch.linalg.vector_norm(weight, dim=_unit_dims(weight)), weight


WEIGHT_NORMS: Mapping[str, type[WeightStandardization | ScaledWeightStandardization | WeightNormalization]] = {
    "ws": WeightStandardization,
    "sws": ScaledWeightStandardization,
    "wn": WeightNormalization,
}
"""The ``weight_norm`` option's values -> parametrization class (each has ``options`` and ``for_weight``)."""


@functools.cache
def nonlinearity_gain(activation: str) -> float:
    """``gamma = 1 / std(g(x))`` for ``x ~ N(0, 1)``: the gain of Scaled WS (Brock et al. 2021, Sec 4).

    ``activation`` is a name of ``normzoo.models.ACTIVATIONS``. Computed in float64 by the
    trapezoid rule over ``[-12, 12]`` (exact to ~1e-10): ReLU gives the paper's
    ``sqrt(2 / (1 - 1/pi)) = 1.71286``; the reference code's table has sampled values (ReLU 1.71396).
    """
    module = make_activation(activation)
    x = torch.linspace(-12.0, 12.0, 240_001, dtype=torch.float64)
    density = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    with torch.no_grad():
        y = module(x)
    mean = torch.trapezoid(y * density, x)
    var = torch.trapezoid((y - mean) ** 2 * density, x)
    return float(var.rsqrt())


def modules_outside(
    model: nn.Module, exclude: Iterable[str | nn.Module] = ()
) -> list[tuple[str, nn.Module]]:
    """``model.named_modules()`` minus the modules of ``exclude`` and everything inside them.

    ``exclude`` holds module names as ``named_modules`` spells them (``"head"``, ``"stem.0.0"``)
    or the modules themselves; a name that is no submodule of ``model`` is a ``ConfigError``.
    """
    named = dict(model.named_modules())
    roots: list[nn.Module] = []
    for item in exclude:
        if isinstance(item, nn.Module):
            roots.append(item)
        elif item in named:
            roots.append(named[item])
        else:
            children = ", ".join(name for name, _ in model.named_children())
            raise ConfigError(
                f"exclude names {item!r}, which is no submodule of {type(model).__name__}. "
                f"Use names as model.named_modules() spells them, e.g. one of its children: {children}."
            )
    excluded = {id(inner) for root in roots for inner in root.modules()}
    return [(name, module) for name, module in named.items() if id(module) not in excluded]


def apply_weight_norm(
    model: nn.Module, name: str, exclude: Iterable[str | nn.Module] = (), **options: Any
) -> list[str]:
    """Parametrize the weight of every conv / linear layer of ``model`` outside ``exclude`` with ``name``.

    Call it on a freshly built (and initialized) model: the parametrization starts from the
    current weights (for ``wn``, ``g = ||W[i]||``: the function is unchanged), and code that
    writes ``module.weight`` afterwards (normzoo's ``init_weights``) would skip it. Build the
    model the same way, option included, before ``load_state_dict`` of a checkpoint of it.

    Args:
        model: a plain ``nn.Module`` (any Lightning wrapper's backbone).
        name: a key of ``WEIGHT_NORMS``: ``ws``, ``sws`` or ``wn``.
        exclude: module names or modules left alone, with everything inside them; the
            classifier head in BiT and the NF-ResNets (``exclude=["head"]`` for normzoo's models).
        options: the parametrization's own (``WEIGHT_NORMS[name].options``), e.g. ``eps=1e-6``, or
            for ``sws`` ``gamma="tanh"`` (the model's activation).

    Returns:
        The names of the parametrized modules, in ``named_modules`` order.
    """
    if name not in WEIGHT_NORMS:
        raise ConfigError(f"Unknown weight norm {name!r}. Choose one of: {', '.join(WEIGHT_NORMS)}.")
    parametrization = WEIGHT_NORMS[name]
    unknown = sorted(set(options) - set(parametrization.options))
    if unknown:
        accepted = ", ".join(parametrization.options) or "none"
        raise ConfigError(f"Weight norm {name!r} has no option {', '.join(unknown)}; its options: {accepted}.")
    targets = [
        (module_name, module) for module_name, module in modules_outside(model, exclude)
        if isinstance(module, PARAMETRIZED_TYPES) and module.weight.dim() >= 2
    ]
    if not targets:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Conv1d/2d/3d or nn.Linear layer outside exclude "
            f"for weight norm {name!r}."
        )
    for module_name, module in targets:
        if parametrize.is_parametrized(module, "weight"):
            raise ConfigError(
                f"The weight of {module_name or type(model).__name__} is parametrized already; "
                "apply one weight norm per layer, to a freshly built model."
            )
    build: Callable[..., nn.Module] = parametrization.for_weight
    for _, module in targets:
        parametrize.register_parametrization(module, "weight", build(module.weight, **options))
    return [module_name for module_name, _ in targets]


def normalize_backbone_weights(model: nn.Module, name: str | None, activation: str = "relu") -> None:
    """The ``weight_norm`` option of normzoo's backbones: ``name`` on every conv and linear layer but the ``head``.

    For ``sws``, ``gamma`` is the gain of the backbone's ``activation`` (the nonlinearity that feeds each
    layer), except on the first layer, which sees the raw input and gets ``gamma = 1``: otherwise the
    first layer would scale the input's variance by gamma^2 (2.9 for ReLU). Nothing happens for None.
    """
    if name is None:
        return
    if name != "sws":
        apply_weight_norm(model, name, exclude=["head"])
        return
    first = next(module_name for module_name, module in model.named_modules() if isinstance(module, PARAMETRIZED_TYPES))
    apply_weight_norm(model, "sws", exclude=["head", first], gamma=activation)
    apply_weight_norm(model.get_submodule(first), "sws", gamma=1.0)
