"""Measure what each of normzoo's diagnostics callbacks costs at its default cadence.

A plain run gives the seconds per training step. Then each callback trains the same model
on the same data measuring every ``--every`` steps (instead of its default), with a clock
around each of its hooks (synchronizing the GPU at the hook's start and end, so the time is
its own work). Its seconds per measurement, divided by its default cadence times the
seconds per step, is its overhead at the default cadence; the sum over them is the cost
of using them all. Two have no step cadence: ``PreciseBNGap`` measures after each
validation (timed over a fit that validates once an epoch; its overhead is per epoch of
training) and ``SignalPropagation`` once, at the first batch (its seconds, once per fit).
Timing the hooks rather than subtracting two wall times keeps the number out of the
run-to-run noise (about 10% on a 2-core CPU). A last pair of runs times the step-cadence
ones together at their default cadence end to end, a check that is meaningful once
``--steps`` covers the longest default cadence (2000). Best of ``--repeats``.

    python scripts/bench_callbacks.py                          # BN MLP on MNIST-5k, CPU
    python scripts/bench_callbacks.py --model resnet20 --accelerator gpu --steps 2000
"""

from __future__ import annotations

import argparse
import inspect
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from normzoo import callbacks as diagnostics
from normzoo.data import ImageDataModule, SyntheticDataModule
from normzoo.models import CNNClassifier, MLPClassifier

CALLBACKS: list[type[L.Callback]] = [
    diagnostics.ActivationDrift,
    diagnostics.DeadUnits,
    diagnostics.GradientFlow,
    diagnostics.RunningStatsConvergence,
    diagnostics.GradientICS,
    diagnostics.LossLandscape,
    diagnostics.EffectiveLR,
    diagnostics.Sharpness,
]
"""The callbacks with an ``every_n_steps`` cadence."""


def default_cadence(callback: type[L.Callback]) -> int:
    return inspect.signature(callback).parameters["every_n_steps"].default


HOOKS = sorted(name for name in vars(L.Callback) if name.startswith("on_") or name in ("setup", "teardown"))


class HookClock:
    """Adds up the wall time a callback spends inside its hooks (its GPU work included)."""

    def __init__(self, callback: L.Callback, gpu: bool) -> None:
        self.seconds, self.gpu = 0.0, gpu
        for name in HOOKS:
            setattr(callback, name, self.timed(getattr(callback, name)))

    def timed(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            if self.gpu:
                torch.cuda.synchronize()  # the training work queued so far is not the hook's
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                if self.gpu:
                    torch.cuda.synchronize()
                self.seconds += time.perf_counter() - start

        return run


def build(model_name: str) -> tuple[L.LightningModule, L.LightningDataModule]:
    if model_name == "mlp":
        return MLPClassifier(norm="bn"), ImageDataModule("mnist5k", batch_size=60)
    data = SyntheticDataModule(num_samples=20_000, input_shape=(3, 32, 32), num_classes=10, batch_size=128)
    return CNNClassifier(arch="resnet20", norm="bn", input_shape=(3, 32, 32)), data


def fit_seconds(args: argparse.Namespace, make_callbacks: Callable[[], list[L.Callback]], steps: int,
                validate: bool = False) -> float:
    """Wall seconds of a fit of ``steps`` steps; ``validate``: with a validation at the end of each epoch."""
    L.seed_everything(0)
    model, data = build(args.model)
    trainer = L.Trainer(max_steps=steps, accelerator=args.accelerator, devices=1, logger=False,
                        callbacks=make_callbacks(), enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=1.0 if validate else 0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(model, data)
    if args.accelerator == "gpu":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def once_seconds(args: argparse.Namespace, make: Callable[[], L.Callback], validate: bool) -> tuple[float, int]:
    """Least time inside the hooks of ``make()``'s callback over ``--repeats`` fits, and its measurements."""
    times, measured = [], 0
    for _ in range(args.repeats):
        callback = make()
        clock = HookClock(callback, gpu=args.accelerator == "gpu")
        fit_seconds(args, lambda callback=callback: [callback], args.steps, validate=validate)
        times.append(clock.seconds)
        measured = len(callback.history)
    return min(times), max(measured, 1)


def hook_seconds(args: argparse.Namespace, callback_class: type[L.Callback]) -> float:
    """Least time spent inside the callback's hooks over ``--repeats`` runs measuring every ``--every`` steps."""
    times = []
    for _ in range(args.repeats):
        callback = callback_class(every_n_steps=args.every)
        clock = HookClock(callback, gpu=args.accelerator == "gpu")
        fit_seconds(args, lambda callback=callback: [callback], args.steps)
        times.append(clock.seconds)
    return min(times)


def best_pair(
    args: argparse.Namespace, make_callbacks: Callable[[], list[L.Callback]], steps: int
) -> tuple[float, float]:
    """Best wall time without and with the callbacks, runs alternating."""
    plain, measured = [], []
    for _ in range(args.repeats):
        plain.append(fit_seconds(args, list, steps))
        measured.append(fit_seconds(args, make_callbacks, steps))
    return min(plain), min(measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mlp", "resnet20"], default="mlp")
    parser.add_argument("--steps", type=int, default=400, help="steps per timed run")
    parser.add_argument("--every", type=int, default=20, help="cadence while timing one callback")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--end-to-end", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the step-cadence callbacks at their default cadence, with and without")
    args = parser.parse_args()
    fit_seconds(args, lambda: [cls(every_n_steps=5) for cls in CALLBACKS], 20)  # warm-up: imports, kernels
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"model={args.model} steps={args.steps} device={device}, each callback timed every {args.every} steps")
    print(f"{'callback':<26}{'s/measurement':>14}{'default every':>15}{'overhead':>10}")
    total = 0.0
    measurements = len(range(0, args.steps, args.every))
    step_seconds = min(fit_seconds(args, list, args.steps) for _ in range(args.repeats)) / args.steps
    for cls in CALLBACKS:
        per_measurement = hook_seconds(args, cls) / measurements
        overhead = per_measurement / (default_cadence(cls) * step_seconds)
        total += overhead
        print(f"{cls.__name__:<26}{per_measurement:>14.4f}{default_cadence(cls):>15}{100 * overhead:>9.2f}%")
    print(f"{'all of them (sum)':<55}{100 * total:>9.2f}%")
    seconds, count = once_seconds(args, diagnostics.PreciseBNGap, validate=True)
    _, data = build(args.model)
    data.setup("fit")
    epoch_steps = len(data.train_dataloader())
    print(f"{'PreciseBNGap':<26}{seconds / count:>14.4f}{'each epoch':>15}"
          f"{100 * seconds / count / (epoch_steps * step_seconds):>9.2f}%")
    seconds, _ = once_seconds(args, diagnostics.SignalPropagation, validate=False)
    print(f"{'SignalPropagation':<26}{seconds:>14.4f}{'once per fit':>15}"
          f"{'':>3}= {seconds / step_seconds:.0f} training steps")
    if not args.end_to_end:
        return
    plain, measured = best_pair(args, lambda: [cls() for cls in CALLBACKS], args.steps)
    print(f"all step-cadence callbacks at their default cadence, end to end: {plain:.2f} s -> {measured:.2f} s "
          f"({100 * (measured / plain - 1):+.1f}%; covers cadences <= {args.steps})")


if __name__ == "__main__":
    main()
