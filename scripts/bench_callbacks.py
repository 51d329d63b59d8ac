"""Measure what normzoo's diagnostics callbacks cost at their default cadence.

Trains the same model on the same data with and without the callbacks, alternating the
two several times in one process, and prints the best wall time of each and their ratio.
The default is the quickstart (BN MLP on MNIST-5k, 10 epochs); ``--model resnet20`` uses
a CIFAR-shaped ResNet-20 on synthetic images. Run on the device for GPU numbers:

    python scripts/bench_callbacks.py --model resnet20 --steps 1000 --accelerator gpu
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from normzoo.callbacks import ActivationDrift, DeadUnits, GradientFlow, RunningStatsConvergence
from normzoo.data import ImageDataModule, SyntheticDataModule
from normzoo.models import CNNClassifier, MLPClassifier


def build(model_name: str) -> tuple[L.LightningModule, L.LightningDataModule]:
    if model_name == "mlp":
        return MLPClassifier(norm="bn"), ImageDataModule("mnist5k", batch_size=60)
    data = SyntheticDataModule(num_samples=20_000, input_shape=(3, 32, 32), num_classes=10, batch_size=128)
    return CNNClassifier(arch="resnet20", norm="bn", input_shape=(3, 32, 32)), data


def fit_seconds(model_name: str, steps: int, accelerator: str, with_callbacks: bool) -> float:
    L.seed_everything(0)
    model, data = build(model_name)
    callbacks = [ActivationDrift(), DeadUnits(), GradientFlow(), RunningStatsConvergence()] if with_callbacks else []
    trainer = L.Trainer(max_steps=steps, accelerator=accelerator, devices=1, logger=False, callbacks=callbacks,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(model, data)
    if accelerator == "gpu":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mlp", "resnet20"], default="mlp")
    parser.add_argument("--steps", type=int, default=670)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    fit_seconds(args.model, 20, args.accelerator, True)  # warm-up: imports, allocator, kernels
    plain, measured = [], []
    for _ in range(args.repeats):
        plain.append(fit_seconds(args.model, args.steps, args.accelerator, False))
        measured.append(fit_seconds(args.model, args.steps, args.accelerator, True))
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"model={args.model} steps={args.steps} device={device} (default cadence: every 100 steps)")
    print(f"without callbacks: best {min(plain):.2f} s   runs {[round(t, 2) for t in plain]}")
    print(f"with 4 callbacks:  best {min(measured):.2f} s   runs {[round(t, 2) for t in measured]}")
    print(f"overhead: {100 * (min(measured) / min(plain) - 1):+.1f}%")


if __name__ == "__main__":
    main()
