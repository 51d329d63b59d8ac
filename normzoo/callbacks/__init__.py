"""Diagnostics callbacks that work with any LightningModule, logging under ``diagnostics/<callback>/<layer>/<stat>``.

- ``ActivationDrift``: internal covariate shift as distribution drift (Ioffe & Szegedy Fig 1).
- ``GradientICS``: internal covariate shift as gradient change (Santurkar et al. Definition 2.1).
- ``DeadUnits``: dead ReLU-family and saturated tanh/sigmoid units.
- ``RunningStatsConvergence``: BN running statistics vs the population, train/eval gap.
- ``LossLandscape``: loss variation, gradient predictiveness, beta-smoothness (Santurkar Fig 4).
- ``GradientFlow``: gradient norms, update-to-data ratios, entropy of normalized outputs.

``StopOnDivergence`` is not a diagnostic: it ends a run whose loss turns NaN/inf and marks
it ``run/diverged`` (the ``normzoo`` CLI always adds it).

Shared pieces: ``normzoo.callbacks.base.ProbeCallback`` (measure layers on a fixed probe
batch), ``normzoo.callbacks.probe`` (layer selection, input capture, side-effect-free
measurement), ``normzoo.callbacks.distribution`` (percentiles and 1-Wasserstein on device,
any size) and ``normzoo.callbacks.objective`` (one batch's loss at other weights).
"""

from normzoo.callbacks.activation_drift import ActivationDrift
from normzoo.callbacks.base import ProbeCallback
from normzoo.callbacks.dead_units import DeadUnits
from normzoo.callbacks.divergence import StopOnDivergence
from normzoo.callbacks.gradient_flow import GradientFlow
from normzoo.callbacks.gradient_ics import GradientICS
from normzoo.callbacks.loss_landscape import LossLandscape
from normzoo.callbacks.running_stats import RunningStatsConvergence

__all__ = [
    "ActivationDrift",
    "DeadUnits",
    "GradientFlow",
    "GradientICS",
    "LossLandscape",
    "ProbeCallback",
    "RunningStatsConvergence",
    "StopOnDivergence",
]
