"""Speed options of a training run: precision, channels-last, ``torch.compile``, CUDA graphs.

A study is dozens of runs, so each option that makes a step faster without changing what
is computed is worth having, but none of them applies everywhere. Each one here is asked
for, checked against the model and the device, and applied or skipped with a warning that
says why, so a config that is fast on a GPU still runs on a laptop:

- ``resolve_precision``: bf16-mixed by default when training on a CUDA GPU that supports
  bfloat16 (Ampere and newer); 16-mixed instead of bf16 on older GPUs; Lightning's
  32-true elsewhere. ``NormZooCLI`` applies it to ``--trainer.precision``.
- ``SpeedUp``, a callback that works with any LightningModule (``--speed.*`` in the CLI):
  channels-last memory format for convolutional models (tensor cores read NHWC);
  ``torch.compile`` of the whole module, which also fuses the GN/LN/IN statistics that
  eager PyTorch computes in separate slow kernels; and CUDA-graph capture of the compiled
  step for small launch-bound models (``mode="reduce-overhead"``: forward and backward
  replay as graphs, BatchNorm's running-statistics updates included).
"""

from __future__ import annotations

import shutil
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from normzoo.errors import ConfigError
from normzoo.norms.introspect import slow_in_channels_last

__all__ = ["COMPILE_MODES", "SpeedUp", "compile_unavailable", "resolve_precision", "trains_on_cuda"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes; ``reduce-overhead`` and ``max-autotune`` replay CUDA graphs."""

BF16_PRECISIONS = ("bf16-mixed", "bf16-true", "bf16")


def trains_on_cuda(accelerator: Any) -> bool:
    """Whether a Trainer with this ``accelerator`` setting would train on a CUDA GPU."""
    name = str(accelerator).lower() if accelerator is not None else "auto"
    return name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available())


def resolve_precision(precision: Any, accelerator: Any) -> Any:
    """The precision a run uses: bf16-mixed by default on GPUs that support it.

    Args:
        precision: the requested ``Trainer(precision=...)``; None means "the fastest safe one".
        accelerator: the requested ``Trainer(accelerator=...)``.

    Returns:
        ``"bf16-mixed"`` for None on a bfloat16-capable CUDA GPU; ``"16-mixed"`` (with a
        warning) for a bf16 request on a GPU without bfloat16; otherwise ``precision``
        unchanged (None lets Lightning pick 32-true).
    """
    if not trains_on_cuda(accelerator):
        return precision
    bf16_ok = torch.cuda.is_bf16_supported()
    if precision is None:
        return "bf16-mixed" if bf16_ok else None
    if str(precision) in BF16_PRECISIONS and not bf16_ok:
        rank_zero_warn(
            f"precision={precision!r}: this GPU has no bfloat16 support (it needs compute capability 8.0+); "
            "training with 16-mixed instead (float16 autocast with loss scaling)."
        )
        return "16-mixed"
    return precision


class SpeedUp(Callback):
    """Apply channels-last, ``torch.compile`` and CUDA graphs to the trained module, where they help.

    The options act in ``setup``, before Lightning moves the module to its device and wraps
    it for DDP, so they apply to every strategy; each skips itself with a warning where it
    cannot apply. Nothing here changes the math: channels-last is a memory layout, and
    compiled kernels compute the same function up to float rounding (the tests compare
    every registered norm with its eager module).

    Args:
        channels_last: store 4-D conv weights (and so activations) as NHWC, on CUDA GPUs
            (elsewhere it warns and keeps NCHW). None (auto): on for convolutional models
            trained on a CUDA GPU, except with GroupNorm or InstanceNorm layers in eager
            mode, whose kernels are slower in NHWC.
        compile: ``torch.compile`` the module: True or a mode name (see ``COMPILE_MODES``).
            The first steps pay the compilation (seconds to a minute). normzoo's diagnostics
            measure with the eager forward (``callbacks.probe.eager_calls``), since a compiled
            module ignores hooks added after compilation.
        cuda_graph: capture the compiled forward and backward as CUDA graphs and replay them
            (``mode="reduce-overhead"``), which removes the per-kernel launch cost that
            dominates small models (on one H100 the Ioffe MLP's step is 2.4 ms eager, 0.175 ms
            as a graph). Needs a CUDA device; implies ``compile``.
    """

    def __init__(
        self, channels_last: bool | None = None, compile: bool | str = False, cuda_graph: bool = False
    ) -> None:
        if isinstance(compile, str) and compile not in COMPILE_MODES:
            raise ConfigError(f"compile={compile!r} is not a torch.compile mode. Use true, false or one of: "
                              f"{', '.join(COMPILE_MODES)}.")
        self.channels_last = channels_last
        self.compile = compile
        self.cuda_graph = cuda_graph
        self.applied: list[str] = []
        self._graphs_on = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "_normzoo_speed_up", False):  # fit then test: applied once
            return
        device = trainer.strategy.root_device
        if self._wants_channels_last(pl_module, device):
            pl_module.to(memory_format=torch.channels_last)
            self.applied.append("channels-last")
        mode = self._compile_mode(device)
        if mode is not None:
            if device.type == "cpu":
                # Inductor would convert convolutions to NHWC, where torch's CPU backward gets
                # strided 1x1 weight gradients wrong (see _wants_channels_last)
                torch._inductor.config.layout_optimization = False
            pl_module.compile(**({} if mode == "default" else {"mode": mode}))
            self.applied.append(f"torch.compile (mode {mode})")
            self._graphs_on = device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
        pl_module._normzoo_speed_up = True
        if self.applied:
            rank_zero_info(f"SpeedUp: {', '.join(self.applied)}.")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._graphs_on:
            # a new training iteration: outputs of the previous replay may be overwritten now
            torch.compiler.cudagraph_mark_step_begin()

    def _wants_channels_last(self, module: nn.Module, device: torch.device) -> bool:
        has_conv = any(isinstance(layer, nn.Conv2d) for layer in module.modules())
        if self.channels_last is None:
            compiled = bool(self.compile) or self.cuda_graph
            slow_norm = any(slow_in_channels_last(layer) for layer in module.modules())
            return device.type == "cuda" and has_conv and (compiled or not slow_norm)
        if self.channels_last and not has_conv:
            rank_zero_warn("SpeedUp(channels_last=True): the model has no Conv2d layers, so the NHWC layout "
                           "cannot apply; training in the default layout.")
            return False
        if self.channels_last and device.type != "cuda":
            rank_zero_warn(
                f"SpeedUp(channels_last=True) applies on CUDA GPUs only; this run is on {device.type}, where NHWC "
                "gains nothing and torch's CPU convolution backward returns wrong weight gradients for strided "
                "1x1 convolutions in NHWC (about 1 call in 20 with torch 2.14.1). Training in the default layout."
            )
            return False
        return bool(self.channels_last)

    def _compile_mode(self, device: torch.device) -> str | None:
        """The ``torch.compile`` mode to use, or None to stay eager (with a warning if one was asked for)."""
        mode = self.compile if isinstance(self.compile, str) else "default" if self.compile else None
        if self.cuda_graph:
            if device.type != "cuda":
                rank_zero_warn(f"SpeedUp(cuda_graph=True): CUDA graphs need a CUDA device and this run is on "
                               f"{device.type}; training without them"
                               + (" (compiled)." if mode else ". Use a GPU (--trainer.accelerator gpu)."))
            elif mode == "max-autotune-no-cudagraphs":
                rank_zero_warn("SpeedUp: cuda_graph=True and compile='max-autotune-no-cudagraphs' contradict "
                               "each other; using 'max-autotune', which captures CUDA graphs.")
                mode = "max-autotune"
            elif mode != "max-autotune":
                mode = "reduce-overhead"
        if mode is None:
            return None
        problem = compile_unavailable(device)
        if problem:
            rank_zero_warn(f"SpeedUp: torch.compile cannot run here ({problem}); training eagerly.")
            return None
        return mode


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here, or None when it can."""
    if not torch._dynamo.is_dynamo_supported():
        return f"TorchDynamo does not support this Python/platform (torch {torch.__version__})"
    if device.type == "cpu" and not any(shutil.which(name) for name in ("g++", "clang++", "c++")):
        return "its CPU backend needs a C++ compiler (g++ or clang++) on the PATH"
    return None
