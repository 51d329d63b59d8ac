"""Benchmark normzoo's ``Trainer.fit`` against a plain PyTorch loop on the same model and data.

    python scripts/bench.py --model mlp --norms bn none                  # the quickstart shape, CPU or GPU
    python scripts/bench.py --model resnet18 --norms bn gn ln in none --precision 32-true bf16-mixed
    python scripts/bench.py --model resnet18 --norms bn gn --precision bf16-mixed --modes channels_last compile
    python scripts/bench.py --model mlp --norms bn --modes eager cuda_graph       # launch-bound: graphs
    python scripts/bench.py --quickstart                                         # the README's fit, end to end
    python scripts/bench.py --model resnet20 --norms all --batch-size 128       # every registered norm

Both paths train the same backbone (same init, same SGD with momentum) on the same
synthetic uint8 images, staged once on the device and batched there by normzoo's
``DeviceImageLoader``, so the data path costs both the same. The plain loop is the few lines
below (forward, cross-entropy, zero_grad, backward, step). Each path first runs
``--warmup`` steps, then is timed over ``--steps`` steps (synchronizing the GPU at both
ends); the paths take turns, ``--repeats`` times, and the best time of each counts.
Printed per norm, precision and mode: images/s of each path, their ratio (fit / plain,
higher is better; 1.00 means Lightning costs nothing), the step time relative to the first
norm's (bn's) in the same mode, and the model FLOP/s of the plain loop (forward + backward
FLOPs counted by ``torch.utils.flop_counter``). A mode applies the same speed option to both
paths: ``eager``; ``channels_last`` (NHWC weights and inputs); ``compile`` (``torch.compile``);
``cuda_graph`` (``torch.compile(mode="reduce-overhead")``); normzoo's path gets them from
``normzoo.speed.SpeedUp``.

``--norms all`` is every registered norm, bn first; a norm the model cannot take (``in`` or ``frn`` on
the MLP's feature vectors) is listed under the table with the reason instead of a row.

``--augment`` crops and flips every batch on the device (``random_crop_flip``); comparing a
run with it and one without gives the cost of real-data augmentation against pre-staged
tensors. ``--quickstart`` times the README's run instead: ``configs/quickstart.yaml`` through the CLI
(logger, checkpoints, progress bar, validation every epoch) against a plain loop that trains
and validates on the same datamodule's loaders for the same epochs.
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

from normzoo.data.device_loader import DeviceImageLoader
from normzoo.data.image_tensors import ImageTensorDataset
from normzoo.errors import ConfigError
from normzoo.models import CNNClassifier, MLPClassifier, NormClassifier, ViTClassifier
from normzoo.norms import available_norms
from normzoo.speed import SpeedUp

MODES = {
    "eager": {},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "cuda_graph": {"cuda_graph": True},
}
"""Bench mode -> ``SpeedUp`` options for the fit path (the plain loop applies the same by hand)."""

SHAPES = {"mlp": (1, 28, 28), "resnet20": (3, 32, 32), "resnet18": (3, 32, 32), "vgg11": (3, 32, 32),
          "vit_mini": (3, 32, 32), "vit_tiny": (3, 32, 32)}
NORM_OPTIONS = {("mlp", "gn"): {"num_groups": 10}}
"""GroupNorm's groups: 10 of 10 units for the 100-unit MLP; CNNs keep the default (Wu & He's 32, capped to C)."""
OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9}}


@dataclass
class Result:
    norm: str
    precision: str
    mode: str
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
    if arch.startswith("vit"):
        return ViTClassifier(arch=arch, **kwargs)  # both paths train it with the same SGD as the others
    return CNNClassifier(arch=arch, **kwargs)


def norms_to_bench(names: list[str]) -> list[str]:
    """``names``, with ``all`` standing for every registered norm (bn first: the other rows are relative to it)."""
    if names != ["all"]:
        return names
    return ["bn"] + [name for name in available_norms() if name != "bn"]


def make_loader(arch: str, batch_size: int, num_images: int, device: torch.device,
                augment: bool = False) -> DeviceImageLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num_images, *SHAPES[arch]), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (num_images,), generator=generator)
    channels = SHAPES[arch][0]
    data = ImageTensorDataset(images, labels, mean=(0.5,) * channels, std=(0.25,) * channels, augment=augment)
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


def plain_model(model: nn.Module, mode: str) -> nn.Module:
    """The plain loop's model in ``mode``, set up the way anyone would write it."""
    if mode == "channels_last":
        return model.to(memory_format=torch.channels_last)
    if mode == "compile":
        return torch.compile(model)
    if mode == "cuda_graph":
        return torch.compile(model, mode="reduce-overhead")
    return model


def plain_loop_seconds(model: nn.Module, loader, device, precision: str, warmup: int, steps: int,
                       mode: str = "eager") -> float:
    """The reference: a training loop with nothing but the step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = endless(loader)
    model = plain_model(model, mode)
    model.train()
    for index in range(warmup + steps):
        if index == warmup:
            sync(device)
            start = time.perf_counter()
        x, y = next(batches)
        if mode == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        if mode == "cuda_graph":
            torch.compiler.cudagraph_mark_step_begin()
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


def fit_seconds(model: NormClassifier, loader, device, precision: str, warmup: int, steps: int,
                mode: str = "eager") -> float:
    """normzoo's path: ``Trainer.fit`` as the CLI configures it, minus files and the progress bar."""
    clock = StepClock(warmup, device)
    trainer = L.Trainer(
        accelerator=device.type if device.type != "cuda" else "gpu", devices=1, precision=precision,
        max_steps=warmup + steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[SpeedUp(**MODES[mode]), clock],
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


def bench(arch: str, norm: str, precision: str, mode: str, args: argparse.Namespace, device: torch.device) -> Result:
    loader = make_loader(arch, args.batch_size, args.batch_size * 16, device, args.augment)
    plain_times, fit_times = [], []
    flops = 0
    for _ in range(args.repeats):
        L.seed_everything(0, verbose=False)
        plain = make_model(arch, norm).backbone.to(device)
        flops = flops or step_flops(plain, loader, device, precision)
        plain_times.append(plain_loop_seconds(plain, loader, device, precision, args.warmup, args.steps, mode))
        L.seed_everything(0, verbose=False)
        fit_times.append(fit_seconds(make_model(arch, norm), loader, device, precision, args.warmup, args.steps, mode))
    images = args.steps * args.batch_size
    return Result(norm, precision, mode, images / min(plain_times), images / min(fit_times),
                  flops * args.steps / min(plain_times))


def quickstart_seconds(extra_args: list[str]) -> tuple[float, float, float, float]:
    """(normzoo fit seconds, plain loop seconds, their val accuracies) for configs/quickstart.yaml."""
    import tempfile

    from normzoo.cli import NormZooCLI, own_arguments_only

    with tempfile.TemporaryDirectory() as runs, own_arguments_only():
        cli = NormZooCLI(args=["--config", "configs/quickstart.yaml", "--runs_dir", runs, *extra_args], run=False)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        fit_time = time.perf_counter() - start
        fit_accuracy = float(cli.trainer.callback_metrics["val/acc"])
    datamodule, epochs = cli.datamodule, cli.trainer.max_epochs
    device = cli.trainer.strategy.root_device
    L.seed_everything(0, verbose=False)
    hparams = cli.model.hparams
    model = MLPClassifier(norm=hparams.norm, depth=hparams.depth, width=hparams.width,
                          activation=hparams.activation).backbone.to(device)
    optimizer = torch.optim.SGD(model.parameters(), **hparams.optimizer["init_args"])
    train, val = datamodule.train_dataloader(), datamodule.val_dataloader()
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        train.sampler.set_epoch(epoch)
        for x, y in train:
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad():
            for x, y in val:
                correct += (model(x.to(device)).argmax(dim=-1) == y.to(device)).sum()
        accuracy = float(correct) / len(datamodule.val_set)
    sync(device)
    return fit_time, time.perf_counter() - start, fit_accuracy, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="mlp")
    parser.add_argument("--norms", nargs="+", default=["bn", "none"])
    parser.add_argument("--precision", nargs="+", default=["32-true"], help="32-true and/or bf16-mixed")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["eager"])
    parser.add_argument("--batch-size", type=int, default=None, help="default: 60 for mlp, 512 for CNNs")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--augment", action="store_true",
                        help="random crop + flip on the device for every batch (compare with a run without)")
    parser.add_argument("--quickstart", action="store_true", help="time configs/quickstart.yaml end to end")
    args, extra = parser.parse_known_args()
    if extra and not args.quickstart:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.batch_size = args.batch_size or (60 if args.model == "mlp" else 512)
    use_gpu = args.accelerator == "gpu" or (args.accelerator == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if use_gpu else f"CPU ({torch.get_num_threads()} threads)"
    versions = f"torch {torch.__version__}, lightning {L.__version__}"
    if args.quickstart:
        print(f"configs/quickstart.yaml {' '.join(extra)}, best of {args.repeats}, on {name}, {versions}")
        runs = [quickstart_seconds(["--trainer.accelerator", "gpu" if use_gpu else "cpu", *extra])
                for _ in range(args.repeats)]
        fit_time, plain_time = min(run[0] for run in runs), min(run[1] for run in runs)
        print("| normzoo fit s | plain loop s | fit / plain time | val acc fit | val acc plain |")
        print("|---|---|---|---|---|")
        print(f"| {fit_time:.2f} | {plain_time:.2f} | {fit_time / plain_time:.2f}x | {runs[0][2]:.4f} | "
              f"{runs[0][3]:.4f} |")
        return
    print(f"{args.model}, batch {args.batch_size}, {'augmented' if args.augment else 'pre-staged'} images, "
          f"{args.steps} timed steps after {args.warmup}, best of "
          f"{args.repeats}, on {name}, {versions}")
    print("| norm | precision | mode | plain loop img/s | normzoo fit img/s | fit / plain | step time / first "
          "norm's | plain model TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for precision in args.precision:
        for mode in args.modes:
            first = None
            refused: dict[str, str] = {}
            for norm in norms_to_bench(args.norms):
                try:
                    make_model(args.model, norm)
                except ConfigError as error:
                    refused[norm] = str(error).split(". ")[0]
                    continue
                result = bench(args.model, norm, precision, mode, args, device)
                first = first or result
                print(f"| {norm} | {precision} | {mode} | {result.plain_images_per_s:,.0f} | "
                      f"{result.fit_images_per_s:,.0f} | {result.ratio:.2f}x | "
                      f"{first.fit_images_per_s / result.fit_images_per_s:.2f}x | "
                      f"{result.flops_per_s / 1e12:.3f} |", flush=True)
            for norm, reason in refused.items():
                print(f"not timed: {norm} ({args.model} refuses it: {reason})")


if __name__ == "__main__":
    main()
