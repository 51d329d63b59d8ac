"""Norm-activation layers: FRN+TLU, EvoNorm-B0 and EvoNorm-S0 (registry keys ``frn``, ``evonorm_b0``, ``evonorm_s0``).

Each replaces a norm *and* the activation after it: its class declares ``brings_activation = True``
(the ``NormLayer`` protocol, ``normzoo.norms.introspect``), so models put no activation of their own
after it (``normzoo.models.layers.build_norm``, ``activation_after``). Its constructor takes
``apply_act``: ``False`` builds the layer without its nonlinearity, and without the parameters of
the nonlinearity (``tau``, ``v``), for the places where a model has no activation after the norm.
Per channel throughout: ``gamma`` is ``weight`` (ones), ``beta`` is ``bias`` (zeros). For a
``(N, C, H, W)`` input, with variances biased (divided by the count) and ``eps`` inside the root:

- ``frn``, Filter Response Normalization with a Thresholded Linear Unit (Singh & Krishnan, "Filter
  Response Normalization Layer", CVPR 2020): ``nu2 = mean_{H,W} x^2`` per sample and
  channel, ``y = gamma * x / sqrt(nu2 + eps) + beta``, ``z = max(y, tau)`` with ``tau`` learned per
  channel (init 0). ``eps = 1e-6`` as in the paper; ``learnable_eps=True`` uses the paper's learned
  epsilon for small maps, ``eps + |eps_l|``, ``eps_l`` one learned scalar (``eps_learned``, shape
  ``(1,)``, init 1e-4: ``|.|`` has no gradient at 0). ``apply_act=False``: ``y``, without ``tau``.
  No mean is subtracted, so a bias before it is not cancelled. Maps only: on a feature vector
  ``nu2 = x^2`` and ``x / sqrt(x^2 + eps)`` is ``sign(x)``.
- ``evonorm_b0`` (Liu, Brock, Simonyan & Le, "Evolving Normalization-Activation Layers", NeurIPS
  2020): ``y = x / max(sqrt(s_b^2 + eps), v * x + sqrt(s_w^2 + eps)) * gamma + beta``,
  ``s_b^2`` the batch variance per channel over (N, H, W), ``s_w^2`` the instance variance per
  sample and channel over (H, W), ``v`` learned per channel (init 1). ``s_b^2`` is a batch
  statistic, handled like BatchNorm's (``BatchStatNorm``): in training the batch's, reduced across
  ranks when ``sync_batchnorm`` set a ``process_group``, and folded into ``running_var`` (unbiased,
  with ``momentum``, float32 under autocast); eval mode uses ``running_var`` while
  ``track_running_stats``. ``running_mean`` is kept too, though the formula has no mean: it makes
  the layer's running statistics complete for ``recalibrate_bn`` and the running-statistics
  diagnostics. Maps only: on a feature vector ``s_w^2`` is the variance of one value, 0.
- ``evonorm_s0`` (same paper): ``y = x * sigmoid(v * x) / sqrt(s_w^2(x, groups) + eps) * gamma + beta``,
  ``s_w^2`` the variance per sample over each group of ``C / G`` channels (and H, W), ``G =
  num_groups``, for maps by default 32 capped to the channel count, as ``gn``. Batch-independent;
  works on feature vectors too, the variance then running over the ``C / G`` features of a group
  only: there the default is one group (LayerNorm's statistics; 32 groups of a 32-wide layer would
  hold one feature each, a variance of 0, and the layer would divide by ``sqrt(eps)``), and a group
  count leaving one feature per group is refused.

``apply_act=False`` for the EvoNorms is an affine transform only, ``y = gamma * x + beta``, as in the
authors' TensorFlow code (tensorflow/tpu ``resnet_model.evonorm``: "nonlinearity: if False, apply an
affine transform only") and timm's ``EvoNorm2dB0``/``EvoNorm2dS0``: the evolved layer has no
separable normalization part. An EvoNorm-B0 built so neither uses nor keeps running statistics.

Defaults follow the papers; timm's differ in ``eps`` only: ``FilterResponseNormTlu2d`` uses 1e-5,
``EvoNorm2dB0`` 1e-3 (the authors' code and ``EvoNorm2dS0`` use 1e-5). Pass ``eps`` to match timm
exactly; the conventions are otherwise the same (biased variances, ``eps`` inside the square root,
an unbiased ``running_var`` with ``momentum`` 0.1; the authors' TensorFlow code averages the
biased batch variance, a factor ``n / (n - 1)`` apart). timm's EvoNorm-S0 takes ``groups`` unchecked
(maps only); here ``num_groups`` is capped and checked as ``gn``'s is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normzoo.errors import BatchStatisticsError, ConfigError
from normzoo.norms.batch_stats import BatchStatNorm, batch_moments, stat_dtype
from normzoo.norms.layout import check_dims, check_layout

DEFAULT_GROUPS = 32
"""EvoNorm-S0's default group count, capped to the channels: that of ``gn`` (``normzoo.norms.builtin``)."""

LEARNED_EPS_INIT = 1e-4
"""Initial ``eps_l`` of FRN's learned epsilon: small, and not 0, where ``|eps_l|`` has no gradient."""

_MLP_ALTERNATIVES = (
    "For an MLP use 'evonorm_s0' (its group statistics run over the features), or a norm "
    "followed by the model's activation ('ln', 'rms', 'gn', 'bn'), or 'dyt'."
)


def _per_channel(t: Tensor, like: Tensor) -> Tensor:
    """A per-channel vector in ``like``'s dtype, shaped to broadcast against it."""
    return t.to(like.dtype).view(1, -1, *([1] * (like.dim() - 2)))


def _affine(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``gamma * x + beta``, per channel."""
    return torch.addcmul(_per_channel(bias, x), x, _per_channel(weight, x))


class FilterResponseNorm(nn.Module):
    """FRN + TLU (Singh & Krishnan, CVPR 2020): ``max(gamma * x / sqrt(mean_{H,W} x^2 + eps) + beta, tau)``.

    Registry key ``frn``; see the module docstring. Maps only.

    Args:
        num_features: channels.
        dims: 2 (``(N, C, H, W)``); 1 is refused, FRN of a vector being ``sign(x)``.
        eps: added to the mean square; the paper's 1e-6 (timm's ``FilterResponseNormTlu2d``: 1e-5).
        learnable_eps: add ``|eps_l|``, one learned scalar (``eps_learned``), to ``eps``: the
            paper's remedy for small maps (1x1 in the extreme), where the layer nears ``sign(x)``.
        apply_act: apply the TLU ``max(., tau)``; False: FRN alone, without ``tau``.

    Raises:
        ConfigError: ``dims=1``.
    """

    # the NormLayer protocol (normzoo.norms.introspect)
    normzoo_norm = True
    brings_activation = True
    cancels_bias = False  # no mean subtracted: a bias before it still matters
    batch_statistics = False

    def __init__(
        self,
        num_features: int,
        dims: int = 2,
        eps: float = 1e-6,
        learnable_eps: bool = False,
        apply_act: bool = True,
    ) -> None:
        super().__init__()
        check_dims(dims)
        if dims == 1:
            raise ConfigError(
                "Norm 'frn' (Filter Response Normalization) divides each channel of a sample by its root "
                "mean square over the spatial positions, and a feature vector has one position per "
                "channel: x / sqrt(x^2 + eps) is sign(x) (up to eps), so every output would be "
                f"+-gamma + beta. {_MLP_ALTERNATIVES}"
            )
        self.num_features, self.dims, self.eps = num_features, dims, eps
        self.learnable_eps, self.apply_act = learnable_eps, apply_act
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.tau = nn.Parameter(torch.zeros(num_features)) if apply_act else None
        self.eps_learned = nn.Parameter(torch.full((1,), LEARNED_EPS_INIT)) if learnable_eps else None

    def forward(self, x: Tensor) -> Tensor:
        """In float32 under autocast (the mean square is a statistic); the output has the input's dtype."""
        check_layout(self, x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.to(stat_dtype(x))
            nu2 = xf.square().mean(dim=(2, 3), keepdim=True)
            eps = self.eps if self.eps_learned is None else self.eps + self.eps_learned.to(xf.dtype).abs()
            y = _affine(xf * torch.rsqrt(nu2 + eps), self.weight, self.bias)
            if self.tau is not None:
                y = torch.maximum(y, _per_channel(self.tau, y))
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, learnable_eps={self.learnable_eps}, apply_act={self.apply_act}"


class EvoNormB0(BatchStatNorm):
    """EvoNorm-B0 (Liu et al., NeurIPS 2020): ``x / max(sqrt(s_b^2 + eps), v x + sqrt(s_w^2 + eps)) * gamma + beta``.

    Registry key ``evonorm_b0``; see the module docstring. Maps only. The batch variance is that of
    ``BatchStatNorm`` (its running statistics, momentum, synchronization and float32 statistics).

    Args:
        num_features: channels.
        dims: 2 (``(N, C, H, W)``); 1 is refused, the instance variance of a vector being 0.
        eps: added to both variances; the paper's 1e-5 (timm's ``EvoNorm2dB0``: 1e-3).
        momentum: weight of the new batch in ``running_var`` (and ``running_mean``); None for a
            cumulative average.
        track_running_stats: keep running statistics and use them in eval mode; without them eval
            uses the batch's variance.
        apply_act: the layer as evolved; False: ``gamma * x + beta`` only (the authors' code and
            timm), without ``v`` and without running statistics.

    Raises:
        ConfigError: ``dims=1``.
    """

    brings_activation = True
    cancels_bias = False  # no mean subtracted: a bias before it still matters

    def __init__(
        self,
        num_features: int,
        dims: int = 2,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        track_running_stats: bool = True,
        apply_act: bool = True,
    ) -> None:
        check_dims(dims)
        if dims == 1:
            raise ConfigError(
                "Norm 'evonorm_b0' divides by max(sqrt(s_b^2 + eps), v*x + sqrt(s_w^2 + eps)), s_w^2 being "
                "each channel's variance over the spatial positions of one sample, and a feature vector "
                "has one position per channel: s_w^2 = 0 and the layer would be another one than the "
                f"paper evolved on conv nets. {_MLP_ALTERNATIVES}"
            )
        super().__init__(num_features, dims, eps, momentum, True, track_running_stats and apply_act)
        self.track_running_stats = track_running_stats  # the setting; without the activation no buffers
        self.apply_act = apply_act
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None

    def reset_running_stats(self) -> None:
        if self.running_var is not None:
            super().reset_running_stats()

    def forward(self, x: Tensor) -> Tensor:
        if self.apply_act:
            return super().forward(x)
        self.check_input(x)
        return _affine(x, self.weight, self.bias)

    def normalize_batch(self, x: Tensor) -> Tensor:
        """Training: this batch's variance over (N, H, W) (and ranks), folded into the running statistics."""
        if x.numel() == x.shape[1] and self.sync_group is None:
            raise BatchStatisticsError(
                f"EvoNormB0 got 1 value per channel (input shape {tuple(x.shape)}): a batch variance "
                "needs at least 2. Train with a batch of 2 or more samples, or use 'evonorm_s0'."
            )
        mean, var, count = batch_moments(x, self.reduce_dims(x), self.sync_group)
        self.update_running_stats(mean.detach(), var.detach(), count)
        return self.evonorm(x, var)

    def normalize_with_running_stats(self, x: Tensor) -> Tensor:
        return self.evonorm(x, self.running_var.to(x.dtype))

    def evonorm(self, x: Tensor, batch_var: Tensor) -> Tensor:
        """The B0 formula given the per-channel batch variance ``s_b^2``."""
        left = _per_channel(torch.sqrt(batch_var + self.eps), x)
        instance_var = torch.var(x, dim=(2, 3), correction=0, keepdim=True)
        right = torch.addcmul(torch.sqrt(instance_var + self.eps), _per_channel(self.v, x), x)
        return _affine(x / torch.maximum(left, right), self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"track_running_stats={self.track_running_stats}, apply_act={self.apply_act}")


class EvoNormS0(nn.Module):
    """EvoNorm-S0 (Liu et al., NeurIPS 2020): ``x * sigmoid(v x) / sqrt(s_w^2(x, groups) + eps) * gamma + beta``.

    Registry key ``evonorm_s0``; see the module docstring. Batch-independent; vectors and maps.

    Args:
        num_features: channels or features.
        dims: 1 for ``(N, C)``, 2 for ``(N, C, H, W)``.
        num_groups: groups of channels sharing a variance; None: 32 capped to the channels for
            maps (as ``gn``), 1 for vectors.
        eps: added to the group variance; the paper's and timm's 1e-5.
        apply_act: the layer as evolved; False: ``gamma * x + beta`` only (the authors' code and
            timm), without ``v``.

    Raises:
        ConfigError: the group count does not divide the channels, or leaves one feature per group
            of a vector.
    """

    # the NormLayer protocol (normzoo.norms.introspect)
    normzoo_norm = True
    brings_activation = True
    cancels_bias = False  # no mean subtracted: a bias before it still matters
    batch_statistics = False

    def __init__(
        self,
        num_features: int,
        dims: int = 2,
        num_groups: int | None = None,
        eps: float = 1e-5,
        apply_act: bool = True,
    ) -> None:
        super().__init__()
        check_dims(dims)
        self.num_features, self.dims, self.eps, self.apply_act = num_features, dims, eps, apply_act
        self.num_groups = _groups("evonorm_s0", num_features, dims, num_groups)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None

    def forward(self, x: Tensor) -> Tensor:
        """In float32 under autocast (the group variance is a statistic); the output has the input's dtype."""
        check_layout(self, x)
        if self.v is None:
            return _affine(x, self.weight, self.bias)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.to(stat_dtype(x))
            n, c = xf.shape[:2]
            group_var = xf.reshape(n, self.num_groups, -1).var(dim=-1, correction=0)  # (N, G)
            rstd = torch.rsqrt(group_var + self.eps).repeat_interleave(c // self.num_groups, dim=1)
            y = xf * torch.sigmoid(_per_channel(self.v, xf) * xf) * rstd.view(n, c, *([1] * (x.dim() - 2)))
            y = _affine(y, self.weight, self.bias)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, dims={self.dims}, num_groups={self.num_groups}, eps={self.eps}, "
                f"apply_act={self.apply_act}")


def _groups(key: str, num_features: int, dims: int, num_groups: int | None) -> int:
    """The group count: ``num_groups``, else 32 capped to the channels (maps) or 1 (vectors); it must divide them.

    On vectors a group's variance runs over its features alone, so a group of one feature has
    variance 0: refused, and the default is one group, all the features (LayerNorm's statistics).
    """
    default = min(DEFAULT_GROUPS, num_features) if dims == 2 else 1
    groups = default if num_groups is None else num_groups
    divisors = [g for g in range(1, num_features + 1) if num_features % g == 0]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or num_features % groups:
        source = "the default (32, capped to the channel count)" if num_groups is None else "num_groups"
        raise ConfigError(
            f"Norm {key!r} cannot split {num_features} channels into {groups} groups ({source}): "
            f"the group count must divide the channel count. Set norm_kwargs "
            f"{{num_groups: G}} with G one of {divisors}."
        )
    if dims == 1 and groups == num_features:
        raise ConfigError(
            f"Norm {key!r} on feature vectors with num_groups={groups} would put one feature in each group, "
            "whose variance is 0: the layer would divide by sqrt(eps) instead of normalizing. Set norm_kwargs "
            f"{{num_groups: G}} with G one of {divisors[:-1]} (None: 1 group of all {num_features} features)."
        )
    return groups
