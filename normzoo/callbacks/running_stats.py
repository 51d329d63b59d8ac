"""``RunningStatsConvergence``: how far BN running statistics are from the population they estimate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten
from typing_extensions import override

from normzoo.batches import batch_targets
from normzoo.callbacks.base import ProbeDiagnostic
from normzoo.callbacks.capture import Captured, select_per_stage, site_root
from normzoo.callbacks.evaluate import Evaluation, ForwardFn, LossFn
from normzoo.callbacks.layout import Charts, family_charts
from normzoo.callbacks.probe import sum_over_ranks
from normzoo.errors import ConfigError
from normzoo.norms import keeps_mean_and_variance
from normzoo.norms.moments import PopulationMoments, channel_mean, statistics_gap
from normzoo.norms.registry import norms_with_running_statistics


def primary_output(outputs: Any) -> Tensor | None:
    """The output that predictions are read from: the tensor itself, a tuple's first tensor, a dict's
    ``"logits"`` entry or else its first tensor."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("logits"), Tensor):
        return outputs["logits"]
    tensors = [leaf for leaf in tree_flatten(outputs)[0] if isinstance(leaf, Tensor)]
    return tensors[0] if tensors else None


def hits(output: Tensor, targets: Tensor) -> Tensor | None:
    """Correct predictions (a count) of classification logits, or None for outputs that are not that.

    ``(N, C)`` logits with ``C >= 2`` and integer labels: the argmax. ``(N,)`` or ``(N, 1)``
    single logits and 0/1 targets: positive means class 1.
    """
    n = len(targets)
    if output.dim() == 0 or len(output) != n or targets.dim() != 1:
        return None
    if output.dim() == 2 and output.shape[1] >= 2 and not targets.is_floating_point():
        return (output.argmax(1) == targets).sum().float()
    single = output.reshape(n) if output.numel() == n else None
    if single is not None and bool(((targets == 0) | (targets == 1)).all()):
        return ((single > 0).float() == targets.float()).sum().float()
    return None


class RunningStatsConvergence(ProbeDiagnostic):
    """Distance between each BN layer's running statistics and the probe's population statistics.

    Inference uses running averages of batch statistics; early in training, after an LR
    change, or with tiny batches they lag behind the weights. Every ``every_n_steps`` steps,
    on a fixed probe batch with the model in eval mode (so each layer sees inputs shaped by
    the running statistics before it, as at inference), for every BatchNorm-family layer
    with running mean and variance (torch BNs, noisy BN's inner BN, ``bn_manual``,
    ``batch_renorm``; above 12 layers, the last one of each stage of the model):

    - ``mean_gap``: mean over channels of ``|running_mean - mu| / sqrt(var + eps)``, the
      error in units of the population standard deviation;
    - ``var_gap``: mean over channels of ``|running_var - var| / (var + eps)``, relative,

    with ``mu`` and ``var`` (unbiased) the population statistics of the layer's input over
    the probe (all calls of the layer; the union of the shards under DDP), from float64 sums
    shifted by a per-channel mean (``normzoo.norms.moments``), exact even when a channel's
    mean is large against its spread.

    The train/eval gap: the same probe evaluated in eval mode (running statistics) and in
    train mode (batch statistics), eval minus train, for any model:

    - ``train_eval/loss_gap``: of the model's own loss (the replayed ``training_step``, or
      ``loss=``); absent where there is none (manual optimization without ``loss=``);
    - ``train_eval/acc_gap``: of the accuracy, where the primary output (the output tensor,
      a tuple's first tensor, a dict's ``"logits"``) holds classification logits for the
      batch's targets: ``(N, C)`` with integer labels, or a single logit with 0/1 targets;
    - ``train_eval/output_gap``: the relative l2 distance of the two outputs (every float
      tensor in them), where the forward produced outputs.

    Logged metrics: ``zoo/running_stats/<layer>/mean_gap``, ``.../<layer>/var_gap``,
    ``zoo/running_stats/train_eval/{loss_gap,acc_gap,output_gap}``.

    Args:
        every_n_steps: optimizer steps between measurements.
        layers: BN layer names to watch; default every BN-family layer with running statistics.
        probe_size: samples in the probe batch (per rank).
        eps: added to the population variance in the gaps.
        forward: ``(pl_module, batch) -> outputs`` to run instead of the replayed ``training_step``.
        loss: ``(pl_module, batch) -> loss`` (or a ``torch.nn.functional`` name) for the loss gap,
            instead of the ``training_step``'s loss.
        strict: raise on any measurement error instead of warning and stopping.

    Raises:
        ConfigError: bad settings or unknown layer names. A model without BN layers gets a
            warning and no measurements, so one callback list serves BN and no-BN runs.

    Example::

        trainer = Trainer(callbacks=[RunningStatsConvergence(every_n_steps=500)])
    """

    name = "running_stats"

    def __init__(
        self,
        every_n_steps: int = 500,
        layers: Sequence[str] | None = None,
        probe_size: int = 256,
        eps: float = 1e-5,
        forward: str | ForwardFn | None = None,
        loss: str | LossFn | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(every_n_steps, layers, probe_size, "eval", forward=forward, loss=loss, strict=strict)
        self.eps = eps

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.layer_names:
            modules = dict(pl_module.named_modules())
            unknown = [name for name in self.layer_names if not keeps_mean_and_variance(modules.get(name))]
            if unknown:
                raise_unknown(pl_module, unknown)
            self.hooked = list(self.layer_names)
        else:
            layers = [name for name, module in pl_module.named_modules() if keeps_mean_and_variance(module)]
            self.hooked = select_per_stage(layers)
        self.sites = []

    def captures_activations(self) -> bool:
        return False

    def nothing_to_watch(self, pl_module: L.LightningModule) -> str:
        return (f"{type(pl_module).__name__} has no BatchNorm layer with running statistics (norms with them: "
                f"{', '.join(norms_with_running_statistics())})")

    @override
    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        """Per BN layer: its two relative gaps; train against eval: each gap apart (a loss, a fraction, a ratio)."""
        gaps = {gap: (gap,) for gap in ("loss_gap", "acc_gap", "output_gap")}
        return {**family_charts(self.name, self.groups, {"mean_gap, var_gap": ("mean_gap", "var_gap")}),
                **family_charts(self.name, ["train_eval"], gaps)}

    def _probe_step(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        if not self.hooked and self.stopped is None:
            self.stop(trainer, self.nothing_to_watch(pl_module))
        super()._probe_step(trainer, pl_module, batch)

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule, captured: Captured, evaluation: Evaluation,
                step: int) -> dict[str, Tensor]:
        modules = dict(pl_module.named_modules())
        stats: dict[str, Tensor] = {}
        for name in self.hooked:
            calls = [inputs for site, inputs in captured.items() if site_root(site) == name]
            if not calls:
                continue
            # shifted sums (exact when the mean dwarfs the spread), with a shift shared by the ranks
            shift = sum_over_ranks(trainer, channel_mean(calls[0])) / trainer.world_size
            moments = PopulationMoments(shift)
            for inputs in calls:
                moments.add(inputs)
            mean, var = moments.mean_and_var(sum_over_ranks(trainer, moments.sums))
            layer = modules[name]
            stats[f"{name}/mean_gap"], stats[f"{name}/var_gap"] = statistics_gap(
                layer.running_mean, layer.running_var, mean, var, self.eps)
        stats.update(self._train_eval_gap(trainer, pl_module, evaluation))
        return stats

    def _train_eval_gap(self, trainer: L.Trainer, pl_module: L.LightningModule,
                        eval_run: Evaluation) -> dict[str, Tensor]:
        batch = self.probe.batch
        own_loss = self.evaluation.forward_fn is not None or self.evaluation.loss_fn is not None  # forward=, loss=
        # in eval mode still, before any train-mode pass moves the running statistics it reads
        eval_loss = self.probe_loss(trainer, pl_module) if own_loss else eval_run.loss
        pl_module.train()
        train_run = self.probe_forward(trainer, pl_module)
        train_loss = self.probe_loss(trainer, pl_module) if own_loss else train_run.loss
        ratios: dict[str, tuple[Tensor, Tensor]] = {}  # numerators and denominators, summed over ranks
        one = torch.ones((), dtype=torch.float64)
        if eval_loss is not None and train_loss is not None:
            ratios["loss_gap"] = ((eval_loss.detach().double() - train_loss.detach().double()).reshape(()), one)
        eval_out, train_out = primary_output(eval_run.outputs), primary_output(train_run.outputs)
        targets = batch_targets(batch)
        if eval_out is not None and train_out is not None and targets is not None:
            eval_hits, train_hits = hits(eval_out, targets), hits(train_out, targets)
            if eval_hits is not None and train_hits is not None:
                ratios["acc_gap"] = (eval_hits - train_hits, one * len(targets))
        parts = output_parts(eval_run.outputs, train_run.outputs)
        if parts is not None:
            ratios["output_gap"] = (parts[0], parts[1])
        if not ratios:
            return {}
        device = next(iter(pl_module.parameters())).device
        stacked = torch.stack([torch.stack([a.to(device, torch.float64), b.to(device, torch.float64)])
                               for a, b in ratios.values()])
        summed = sum_over_ranks(trainer, stacked)
        gaps = dict(zip(ratios, summed[:, 0] / summed[:, 1].clamp_min(1e-12), strict=True))
        if "output_gap" in gaps:
            gaps["output_gap"] = gaps["output_gap"].sqrt()  # relative l2 distance
        return {f"train_eval/{key}": value for key, value in gaps.items()}


def output_parts(eval_outputs: Any, train_outputs: Any) -> list[Tensor] | None:
    """``[sum of squared differences, sum of squares of train]`` over the float tensors of two outputs,
    or None where they differ in structure or hold no float tensor."""
    eval_leaves, eval_spec = tree_flatten(eval_outputs)
    train_leaves, train_spec = tree_flatten(train_outputs)
    pairs = [(a, b) for a, b in zip(eval_leaves, train_leaves, strict=False)
             if isinstance(a, Tensor) and isinstance(b, Tensor) and a.is_floating_point() and a.shape == b.shape]
    if eval_spec != train_spec or not pairs:
        return None
    return [sum((a.double() - b.double()).pow(2).sum() for a, b in pairs),
            sum(b.double().pow(2).sum() for _, b in pairs)]


def raise_unknown(pl_module: L.LightningModule, unknown: list[str]) -> None:
    layers = [name for name, m in pl_module.named_modules() if keeps_mean_and_variance(m)]
    raise ConfigError(
        f"RunningStatsConvergence: {', '.join(map(repr, unknown))} is not a BatchNorm layer with running statistics "
        f"in {type(pl_module).__name__}. Such layers: {', '.join(layers[:12]) or 'none'}."
    )
