"""Benchmark normzoo's ``Trainer.fit`` against a plain PyTorch loop on the same model and data.

    python scripts/bench.py --model mlp --norms bn none                  # the quickstart shape, CPU or GPU
    python scripts/bench.py --model resnet18 --norms bn gn ln in none --precision 32-true bf16-mixed

Both paths train the same backbone (same init, same SGD with momentum) on the same
synthetic uint8 images, staged once on the device and batched there by normzoo's
``DeviceImageLoader``, so the data path costs both the same. The plain loop is the few lines
below (forward, cross-entropy, zero_grad, backward, step). Each path first runs
``--warmup`` steps, then is timed over ``--steps`` steps (synchronizing the GPU at both
ends); the paths take turns, ``--repeats`` times, and the best time of each counts.
Printed per norm and precision: images/s of each path, their ratio (fit / plain, higher is
better; 1.00 means Lightning costs nothing) and the model FLOP/s of the plain loop (forward +
backward FLOPs counted by ``torch.utils.flop_counter``).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler
from torch.utils.flop_counter import FlopCounterMode

from normzoo.data.base import ImageTensorDataset
from normzoo.data.device_loader import DeviceImageLoader
from normzoo.models import CNNClassifier, MLPClassifier, NormClassifier

SHAPES = {"mlp": (1, 28, 28), "resnet20": (3, 32, 32), "resnet18": (3, 32, 32), "vgg11": (3, 32, 32)}
NORM_OPTIONS = {("mlp", "gn"): {"num_groups": 10}}
"""GroupNorm's groups: 10 of 10 units for the 100-unit MLP; CNNs keep the default (Wu & He's 32, capped to C)."""
OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9}}


@dataclass
class Result:
    norm: str
    precision: str
    plain_images_per_s: float
    fit_images_per_s: float
    flops_per_s: float

    @property
    def ratio(self) -> float:
        return self.fit_images_per_s / self.plain_images_per_s


def make_model(arch: str, norm: str) -> NormClassifier:
    options = NORM_OPTIONS.get(("mlp" if arch == "mlp" else "cnn", norm))
    kwargs = dict(input_shape=SHAPES[arch], num_classes=10, norm=norm, norm_kwargs=options, optimizer=OPTIMIZER)
    if arch == "mlp":
        return MLPClassifier(depth=3, width=100, **kwargs)  # Ioffe & Szegedy's 784-100-100-100-10
    return CNNClassifier(arch=arch, **kwargs)


def make_loader(arch: str, batch_size: int, num_images: int, device: torch.device) -> DeviceImageLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num_images, *SHAPES[arch]), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (num_images,), generator=generator)
    channels = SHAPES[arch][0]
    data = ImageTensorDataset(images, labels, mean=(0.5,) * channels, std=(0.25,) * channels)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    return DeviceImageLoader(data, batch_size, sampler, device, drop_last=True)


def endless(loader: DeviceImageLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def plain_loop_seconds(model: nn.Module, loader, device, precision: str, warmup: int, steps: int) -> float:
    """The reference: a training loop with nothing but the step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = endless(loader)
    model.train()
    for index in range(warmup + steps):
        if index == warmup:
            sync(device)
            start = time.perf_counter()
        x, y = next(batches)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


class StepClock(L.Callback):
    """Wall time of the training steps after ``warmup`` (the GPU synchronized at both ends)."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device
        self.start = self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self.start


def fit_seconds(model: NormClassifier, loader, device, precision: str, warmup: int, steps: int) -> float:
    """normzoo's path: ``Trainer.fit`` as the CLI configures it, minus files and the progress bar."""
    clock = StepClock(warmup, device)
    trainer = L.Trainer(
        accelerator=device.type if device.type != "cuda" else "gpu", devices=1, precision=precision,
        max_steps=warmup + steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
    )
    trainer.fit(model, train_dataloaders=loader)
    return clock.seconds


def step_flops(model: nn.Module, loader, device, precision: str) -> int:
    """Forward + backward FLOPs of one training step."""
    x, y = next(iter(loader))
    with FlopCounterMode(display=False) as counter, autocast(device, precision):
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench(arch: str, norm: str, precision: str, args: argparse.Namespace, device: torch.device) -> Result:
    loader = make_loader(arch, args.batch_size, args.batch_size * 16, device)
    plain_times, fit_times = [], []
    flops = 0
    for _ in range(args.repeats):
        L.seed_everything(0, verbose=False)
        plain = make_model(arch, norm).backbone.to(device)
        flops = flops or step_flops(plain, loader, device, precision)
        plain_times.append(plain_loop_seconds(plain, loader, device, precision, args.warmup, args.steps))
        L.seed_everything(0, verbose=False)
        fit_times.append(fit_seconds(make_model(arch, norm), loader, device, precision, args.warmup, args.steps))
    images = args.steps * args.batch_size
    return Result(norm, precision, images / min(plain_times), images / min(fit_times),
                  flops * args.steps / min(plain_times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="mlp")
    parser.add_argument("--norms", nargs="+", default=["bn", "none"])
    parser.add_argument("--precision", nargs="+", default=["32-true"], help="32-true and/or bf16-mixed")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 60 for mlp, 512 for CNNs")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    args = parser.parse_args()
    args.batch_size = args.batch_size or (60 if args.model == "mlp" else 512)
    use_gpu = args.accelerator == "gpu" or (args.accelerator == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if use_gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.model}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, best of "
          f"{args.repeats}, on {name}, torch {torch.__version__}, lightning {L.__version__}")
    print("| norm | precision | plain loop img/s | normzoo fit img/s | fit / plain | plain model TFLOP/s |")
    print("|---|---|---|---|---|---|")
    for precision in args.precision:
        for norm in args.norms:
            result = bench(args.model, norm, precision, args, device)
            print(f"| {norm} | {precision} | {result.plain_images_per_s:,.0f} | {result.fit_images_per_s:,.0f} | "
                  f"{result.ratio:.2f}x | {result.flops_per_s / 1e12:.3f} |", flush=True)


if __name__ == "__main__":
    main()
