"""``RunningStatsConvergence``: how far BN running statistics are from the population they estimate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from normzoo.callbacks.base import ProbeCallback
from normzoo.callbacks.distribution import channel_moments
from normzoo.callbacks.layout import Charts, chart_per_group
from normzoo.callbacks.probe import preserved_state, sum_over_ranks
from normzoo.norms import keeps_mean_and_variance

PREFIX = "diagnostics/running_stats"


class RunningStatsConvergence(ProbeCallback):
    """Distance between each BN layer's running statistics and the probe's population statistics.

    Inference uses running averages of batch statistics; early in training, after an LR
    change, or with tiny batches they lag behind the weights. Every ``every_n_steps`` steps,
    on a fixed probe batch with the model in eval mode (so each layer sees inputs shaped by
    the running statistics before it, as at inference), for every BatchNorm-family layer
    with running mean and variance (torch BNs, noisy BN's inner BN, ``bn_manual``,
    ``batch_renorm``):

    - ``mean_gap``: mean over channels of ``|running_mean - mu| / sqrt(var + eps)``, the
      error in units of the population standard deviation;
    - ``var_gap``: mean over channels of ``|running_var - var| / (var + eps)``, relative,

    with ``mu`` and ``var`` (unbiased) the population statistics of the layer's input over
    the probe (the union of the shards under DDP). And for the model as a whole, the same
    probe evaluated in train mode (batch statistics) and in eval mode (running statistics):
    ``train_eval/loss_gap`` and ``train_eval/acc_gap`` (eval minus train; cross-entropy and
    accuracy when the batches carry class labels and the model outputs logits), else
    ``train_eval/output_gap``, the relative l2 distance of the two outputs.

    Logged metrics: ``diagnostics/running_stats/<layer>/mean_gap``, ``.../<layer>/var_gap``,
    ``diagnostics/running_stats/train_eval/{loss_gap,acc_gap | output_gap}``.

    Args:
        every_n_steps: optimizer steps between measurements.
        layers: BN layer names to watch; default every BN-family layer with running statistics.
        probe_size: samples in the probe batch (per rank).
        eps: added to the population variance in the gaps.

    Raises:
        ConfigError: bad settings or unknown layer names. A model without BN layers gets a
            warning and no measurements, so one callback list serves BN and no-BN runs.

    Example::

        trainer = Trainer(callbacks=[RunningStatsConvergence(every_n_steps=500)])
    """

    name = "running_stats"

    def __init__(
        self, every_n_steps: int = 500, layers: Sequence[str] | None = None, probe_size: int = 256, eps: float = 1e-5
    ) -> None:
        super().__init__(every_n_steps, layers, probe_size, mode="eval")
        self.eps = eps
        self.history: list[dict[str, float]] = []

    def select(self, pl_module: L.LightningModule) -> list[tuple[str, nn.Module]]:
        if self.layer_names:
            return super().select(pl_module)
        chosen = [(name, m) for name, m in pl_module.named_modules() if keeps_mean_and_variance(m)]
        if not chosen:  # a no-BN run of a BN-vs-no-BN comparison: same callbacks, nothing to measure here
            rank_zero_warn(
                f"{type(pl_module).__name__} has no BatchNorm layer with running statistics, so "
                "RunningStatsConvergence measures nothing in this run (norms with them: bn, noisy_bn, bn_manual, "
                "batch_renorm)."
            )
        return chosen

    def layout_charts(self, pl_module: L.LightningModule) -> Charts:
        return {**super().layout_charts(pl_module), **chart_per_group(self.name, ["train_eval"])}

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, captured: dict[str, Tensor], outputs: Any, step: int
    ) -> dict[str, float]:
        stats: dict[str, Tensor] = {}
        for name, layer in self.layers:
            count, total, squares = sum_over_ranks(trainer, channel_moments(captured[name]))
            mean = total / count
            var = (squares - count * mean**2) / (count - 1)
            running_mean, running_var = layer.running_mean.to(torch.float64), layer.running_var.to(torch.float64)
            stats[f"{name}/mean_gap"] = ((running_mean - mean).abs() / torch.sqrt(var + self.eps)).mean()
            stats[f"{name}/var_gap"] = ((running_var - var).abs() / (var + self.eps)).mean()
        stats.update(self._train_eval_gap(trainer, pl_module, outputs))
        values = torch.stack([v.to(torch.float64) for v in stats.values()]).tolist()  # the one host sync
        record = dict(zip(stats, values, strict=True))
        self.history.append({"step": float(step), **record})
        return {f"{PREFIX}/{key}": value for key, value in record.items()}

    def _train_eval_gap(self, trainer: L.Trainer, pl_module: L.LightningModule, eval_out: Any) -> dict[str, Tensor]:
        with preserved_state(pl_module):
            pl_module.train()
            train_out = pl_module(self.probe.inputs.to(pl_module.device))
        targets = self.probe.targets
        labelled = targets is not None and not targets.is_floating_point()
        if labelled and isinstance(eval_out, Tensor) and eval_out.dim() == 2:
            targets = targets.to(eval_out.device)
            sums = torch.stack([
                F.cross_entropy(eval_out.float(), targets, reduction="sum"),
                F.cross_entropy(train_out.float(), targets, reduction="sum"),
                (eval_out.argmax(1) == targets).sum().float(),
                (train_out.argmax(1) == targets).sum().float(),
                torch.tensor(float(len(targets)), device=targets.device),
            ])
            eval_loss, train_loss, eval_hits, train_hits, n = sum_over_ranks(trainer, sums)
            return {"train_eval/loss_gap": (eval_loss - train_loss) / n,
                    "train_eval/acc_gap": (eval_hits - train_hits) / n}
        difference = torch.stack([(eval_out - train_out).float().pow(2).sum(), train_out.float().pow(2).sum()])
        difference = sum_over_ranks(trainer, difference)
        return {"train_eval/output_gap": torch.sqrt(difference[0] / difference[1].clamp_min(1e-12))}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.history = state_dict["history"]
