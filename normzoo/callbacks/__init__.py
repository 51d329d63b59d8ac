"""Diagnostics callbacks that work with any LightningModule, logging under ``zoo/<callback>/<layer>/<stat>``.

- ``ActivationDrift``: internal covariate shift as distribution drift (Ioffe & Szegedy Fig 1).
- ``GradientICS``: internal covariate shift as gradient change (Santurkar et al. Definition 2.1).
- ``DeadUnits``: dead ReLU-family and saturated tanh/sigmoid units.
- ``RunningStatsConvergence``: BN running statistics vs the population, train/eval gap.
- ``LossLandscape``: loss variation, gradient predictiveness, beta-smoothness (Santurkar Fig 4).
- ``GradientFlow``: gradient norms, real and lr*grad update-to-data ratios, entropy of normalized outputs.
- ``Sharpness``: the top Hessian eigenvalue against 2/lr, the Hessian trace, spherical sharpness (train mode).
- ``EffectiveLR``: weights that feed a norm: effective learning rate, angular update and its equilibrium.
- ``PreciseBNGap``: validation with BN's EMA statistics against precise ones (Wu & Johnson 2021).
- ``SignalPropagation``: signal propagation at initialization (channel moments, rank collapse, gradients,
  residual branch against skip).

``StopOnDivergence`` is not a diagnostic: it ends a run whose loss turns NaN/inf and marks
it ``zoo/run/diverged`` (the ``normzoo`` CLI always adds it).

Shared pieces: ``normzoo.callbacks.base`` (the ``Diagnostic`` base: cadence, history,
layout, failure policy; ``ProbeDiagnostic`` for a fixed probe batch; ``LossDiagnostic``
for the loss around a step), ``normzoo.callbacks.evaluate`` (the one way to evaluate a
user's model: its replayed ``training_step``, or ``loss=`` / ``forward=``),
``normzoo.callbacks.capture`` (what the model computes: activation inputs, in place,
functional, per call), ``normzoo.callbacks.probe`` (the probe batch, side-effect-free
measurement), ``normzoo.callbacks.distribution`` (percentiles and 1-Wasserstein on device)
and ``normzoo.callbacks.objective`` (a step's loss at other weights).
"""

from normzoo.callbacks.activation_drift import ActivationDrift
from normzoo.callbacks.base import Diagnostic, LossDiagnostic, ProbeDiagnostic
from normzoo.callbacks.dead_units import DeadUnits
from normzoo.callbacks.divergence import StopOnDivergence
from normzoo.callbacks.effective_lr import EffectiveLR
from normzoo.callbacks.gradient_flow import GradientFlow
from normzoo.callbacks.gradient_ics import GradientICS
from normzoo.callbacks.loss_landscape import LossLandscape
from normzoo.callbacks.precise_bn import PreciseBNGap
from normzoo.callbacks.running_stats import RunningStatsConvergence
from normzoo.callbacks.sharpness import Sharpness
from normzoo.callbacks.signal_propagation import SignalPropagation

__all__ = [
    "ActivationDrift",
    "DeadUnits",
    "Diagnostic",
    "EffectiveLR",
    "GradientFlow",
    "GradientICS",
    "LossDiagnostic",
    "LossLandscape",
    "PreciseBNGap",
    "ProbeDiagnostic",
    "RunningStatsConvergence",
    "Sharpness",
    "SignalPropagation",
    "StopOnDivergence",
]
