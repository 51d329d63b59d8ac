"""Questions models ask of a norm layer, answered from the module itself.

Models build the norm first and ask it, instead of keeping type lists per norm name, so
a user's own registered norm gets the same treatment by setting a class attribute.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from normzoo.norms.batch_stats import BatchStatNorm


def cancels_bias(norm: nn.Module) -> bool:
    """Whether ``norm`` subtracts a per-channel mean, making a bias right before it redundant.

    True for BatchNorm (per-channel batch mean), InstanceNorm (per-sample, per-channel mean)
    and GroupNorm with one channel per group. A module may declare it with a class
    attribute ``cancels_bias``. LayerNorm and GroupNorm with larger groups subtract a mean
    shared by several channels, so a per-channel bias still matters there.
    """
    declared = getattr(norm, "cancels_bias", None)
    if declared is not None:
        return bool(declared)
    if isinstance(norm, (_BatchNorm, _InstanceNorm)):
        return True
    return isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels


def keeps_mean_and_variance(module: nn.Module) -> bool:
    """Whether ``module`` normalizes eval inputs with running mean and variance buffers (BN-style).

    A torch BN uses its buffers in eval mode whenever it has them, also after
    ``track_running_stats`` was switched off to freeze it (Lightning's ``BaseFinetuning.freeze``);
    normzoo's batch-statistics layers use them only while they track.
    """
    if not isinstance(getattr(module, "running_var", None), torch.Tensor):
        return False
    if isinstance(module, _BatchNorm):
        return isinstance(module.running_mean, torch.Tensor)
    return isinstance(module, BatchStatNorm) and bool(module.track_running_stats)

