"""Diagnostics callbacks that work with any LightningModule, logging under ``diagnostics/<callback>/<layer>/<stat>``.

Available now: ``ActivationDrift`` (Ioffe & Szegedy Fig 1) and ``DeadUnits`` (dead and
saturated units), both built on ``normzoo.callbacks.base.ProbeCallback``, and
``GradientFlow`` (gradient norms, update-to-data ratios, entropy of normalized outputs),
and ``RunningStatsConvergence`` (BN running statistics vs the population, train/eval gap). The shared helpers are in
``normzoo.callbacks.probe`` (layer selection, input capture, side-effect-free measurement)
and ``normzoo.callbacks.distribution`` (percentiles and 1-Wasserstein on device, any size).
"""

from normzoo.callbacks.activation_drift import ActivationDrift
from normzoo.callbacks.base import ProbeCallback
from normzoo.callbacks.dead_units import DeadUnits
from normzoo.callbacks.gradient_flow import GradientFlow
from normzoo.callbacks.running_stats import RunningStatsConvergence

__all__ = ["ActivationDrift", "DeadUnits", "GradientFlow", "ProbeCallback", "RunningStatsConvergence"]
