"""The LightningModules: one base class that trains any backbone as a classifier.

``MLPClassifier`` and ``CNNClassifier`` take plain typed arguments (``norm: str = "bn"``,
``arch: str = "resnet20"``) so a YAML config reads naturally and ``hparams.yaml`` and
checkpoints stay plain data; ``load_from_checkpoint(path)`` rebuilds them without the CLI.
Their signatures are what LightningCLI offers as ``--model.*``; every argument but the
training ones (``TRAINING_HPARAMS``) goes to the backbone by name.

The optimizer and LR scheduler arrive as plain ``{"class_path", "init_args"}`` dicts,
linked by ``NormZooCLI`` from its ``--optimizer`` / ``--lr_scheduler`` groups (see
``normzoo.models.optim``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from normzoo.batches import NonFiniteInputs
from normzoo.errors import DataError
from normzoo.models.agc import adaptive_clip_grad_, agc_parameters
from normzoo.models.archs import build_cnn
from normzoo.models.bn_report import BNBatchReport
from normzoo.models.mlp import MLP, NormPosition
from normzoo.models.optim import configure_optimization
from normzoo.models.vit import Placement, ViT
from normzoo.norms import guard_batch_statistics
from normzoo.tb_logging import log_hparams_experiment, log_hparams_session, logged_metrics, tensorboard_loggers

HPARAM_METRICS = ("val/acc", "val/loss", "train/loss", "test/acc")
"""The metric columns of TensorBoard's hparams tab, of those a run logged."""

TRAINING_HPARAMS = ("optimizer", "lr_scheduler", "agc")
"""The classifiers' arguments that configure training; every other one is the backbone's."""


class NormClassifier(L.LightningModule):
    """Cross-entropy classification of ``self.backbone``, with accuracy for train/val/test.

    Subclasses build ``self.backbone`` from their typed arguments. Logged metrics:
    ``train/loss``, ``train/acc`` (per step), ``val/loss``, ``val/acc``, ``test/loss``,
    ``test/acc`` (per epoch), and once per fit, ``zoo/bn/batch_size_per_rank`` and
    ``zoo/bn/effective_batch_size`` (``BNBatchReport``, which the classifier brings to its trainer).
    BatchNorm layers are guarded against batches of one.
    """

    backbone: nn.Module
    overridden_paths: tuple[str, ...] = ()
    """The command-line paths this run sets (``model.norm``); ``NormZooCLI`` fills them in, and
    TensorBoard's HPARAMS tab shows their hyperparameters first (``normzoo.key_hparams``)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self._guarded = False
        self._eval_inputs = NonFiniteInputs()

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets ``_current_fx_name`` around every hook call, ~45 times a training step;
        # nn.Module's checks for parameters and submodules made that ~0.2 ms a step on a CPU
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def setup(self, stage: str) -> None:
        if not self._guarded:
            guard_batch_statistics(self)
            self._guarded = True

    def configure_callbacks(self) -> list[L.Callback]:
        return [BNBatchReport()]

    def backbone_options(self) -> dict[str, Any]:
        """The hyperparameters that build the backbone: all public ones but ``TRAINING_HPARAMS``."""
        return {key: value for key, value in public_hparams(self.hparams).items() if key not in TRAINING_HPARAMS}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if self._logs_this_step():
            # the batch's accuracy as a plain tensor: a torchmetrics forward per step (copying
            # its state) cost ~1.5 ms, more than a small MLP's whole step on a CPU
            accuracy = (logits.detach().argmax(dim=-1) == y).float().mean()
            self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
            self.log("train/acc", accuracy, on_step=True, on_epoch=False, batch_size=len(y))
        return loss

    def _logs_this_step(self) -> bool:
        """Whether this step's train metrics are wanted: Lightning writes logs on this step
        (every ``log_every_n_steps``), or it is the last step (the run's final metrics).

        ``self.log`` costs ~1 ms a call on a CPU; on the steps in between, its values would
        only be overwritten, so they are not computed at all.
        """
        trainer = self._trainer
        if trainer is None:
            return True
        connector = getattr(trainer, "_logger_connector", None)
        if bool(getattr(connector, "should_update_logs", True)):
            return True
        last_step = 0 < trainer.max_steps <= trainer.global_step + 1
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        return last_step or (last_epoch and trainer.is_last_batch)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_inputs.add(batch, batch_idx)
        self._evaluate(batch, self.val_loss, self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_inputs.add(batch, batch_idx)
        self._evaluate(batch, self.test_loss, self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(dim=-1)

    def _evaluate(self, batch: tuple[Tensor, Tensor], loss: MeanMetric, accuracy: MulticlassAccuracy) -> None:
        """Accumulate the batch into the epoch's metrics; they are logged once, at the epoch's end.

        A ``self.log`` per evaluation step cost ~5 ms on a CPU (Lightning moves each logged
        metric's state to the device per call), more than the step itself.
        """
        x, y = batch
        logits = self(x)
        accuracy.update(logits, y)
        loss.update(F.cross_entropy(logits, y), weight=len(y))  # the sample-weighted mean, synced over ranks

    def on_validation_epoch_end(self) -> None:
        self._check_eval_inputs("validation")
        self.log("val/loss", self.val_loss)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._check_eval_inputs("test")
        self.log("test/loss", self.test_loss)
        self.log("test/acc", self.test_acc)

    def _check_eval_inputs(self, split: str) -> None:
        """One host sync per evaluation epoch: NaN/inf inputs are an error naming the split and the batch.

        (The mean loss would drop such samples and the accuracy count them: a number that looks fine.)
        """
        bad = self._eval_inputs.first()
        if self.trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            where = "on another rank" if bad is None else f"first in batch {bad}"
            raise DataError(f"The {split} inputs hold NaN or inf values, {where}. Check the dataset and its "
                              "transforms.")

    def configure_optimizers(self) -> Any:
        return configure_optimization(self, self.hparams.get("optimizer"), self.hparams.get("lr_scheduler"))

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """``agc``: adaptive gradient clipping of every parameter but the head's (Brock et al. 2021), then the
        Trainer's own ``gradient_clip_val`` clipping. Lightning calls this after unscaling fp16 gradients."""
        clipping = self.hparams.get("agc")
        if clipping is not None:
            adaptive_clip_grad_(agc_parameters(self.backbone, exclude=["head"]), clipping)
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_fit_start(self) -> None:
        params = public_hparams(self.hparams)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and getattr(datamodule, "hparams", None):
            params["data"] = {"class": type(datamodule).__name__, **public_hparams(datamodule.hparams)}
        params["lr"] = self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else 0.0
        params["world_size"] = self.trainer.world_size
        params["precision"] = str(self.trainer.precision)  # 32-true, bf16-mixed, ...: runs differ by it
        params["model"] = self.hparams.get("arch", type(self).__name__)  # resnet20, vgg11, ... or MLPClassifier
        if "PL_GLOBAL_SEED" in os.environ:  # set by seed_everything
            params["seed"] = int(os.environ["PL_GLOBAL_SEED"])
        self._session_params = params
        tensorboards = tensorboard_loggers(self.loggers)
        for logger in self.loggers:
            if logger in tensorboards:
                log_hparams_session(logger, params)
            else:
                logger.log_hyperparams(params)

    def on_fit_end(self) -> None:
        metrics = logged_metrics(self.trainer, HPARAM_METRICS)
        for logger in tensorboard_loggers(self.loggers):
            log_hparams_experiment(logger, self._session_params, self.overridden_paths, metrics)


def public_hparams(hparams: Any) -> dict[str, Any]:
    """Hyperparameters without LightningCLI's private ``_class_path`` / ``_instantiator`` entries."""
    return {key: value for key, value in dict(hparams).items() if not str(key).startswith("_")}


class MLPClassifier(NormClassifier):
    """An ``MLP`` classifier; the defaults are Ioffe & Szegedy's MNIST network with BN.

    Args:
        input_shape: shape of one sample; linked from the datamodule by the CLI.
        num_classes: number of classes; linked from the datamodule by the CLI.
        norm: registered norm name: bn, ln, gn, none, noisy_bn, ... (``in`` needs conv maps).
        norm_kwargs: options of the norm, e.g. ``{num_groups: 20}`` for gn.
        depth, width, activation, norm_position, init, init_gain, weight_norm: see ``normzoo.models.MLP``.
        agc: None, or adaptive gradient clipping's threshold lambda (Brock et al. 2021; 0.01 ... 0.16 in the paper):
            each unit's gradient norm is clipped to lambda times its weight norm; the head is not clipped.
        optimizer: ``{"class_path": ..., "init_args": {...}}``; SGD(lr=0.1, momentum=0.9) if None.
        lr_scheduler: same form, or None for a constant learning rate.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        norm: str = "bn",
        norm_kwargs: dict[str, Any] | None = None,
        depth: int = 3,
        width: int = 100,
        activation: str = "relu",
        norm_position: NormPosition = "before",
        init: str = "default",
        init_gain: float = 1.0,
        weight_norm: str | None = None,
        agc: float | None = None,
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes)
        self.save_hyperparameters(logger=False)
        self.backbone = MLP(**self.backbone_options())


class CNNClassifier(NormClassifier):
    """A VGG or ResNet classifier for image maps.

    Args:
        input_shape: ``(C, H, W)`` of one sample; linked from the datamodule by the CLI.
        num_classes: number of classes; linked from the datamodule by the CLI.
        arch: vgg11, vgg13, vgg16, resnet8, resnet20, resnet56, resnet110 or resnet18.
        norm: registered norm name: bn, ln, in, gn, none, noisy_bn, ...
        norm_kwargs: options of the norm, e.g. ``{num_groups: 16}`` for gn.
        activation: nonlinearity (relu in the papers).
        init: weight init scheme; None picks the architecture's own (xavier for VGG,
            as in Santurkar et al.; kaiming for ResNet, as in He et al.).
        init_gain: multiplies the init scheme's standard deviation.
        width_factor: multiplies every layer's channel count (e.g. 0.125 for a quick CPU VGG).
        residual_scale: ResNets only: None for the plain blocks; a float puts a learned scalar on every
            residual branch, initialized at that value (0.0: SkipInit, De & Smith 2020; see
            ``normzoo.models.ResNet``). Never weight-decayed.
        fixup: ResNets only: Fixup (Zhang et al. 2019), the initialization and scalar biases that train a
            deep ResNet without normalization; needs ``norm: none``.
        weight_norm: None, ``ws``, ``sws`` or ``wn``: a weight-side normalization of every conv and linear layer
            but the head (``norm: gn`` with ``weight_norm: ws`` is BiT's GN+WS); see ``normzoo.models.ConvNet``.
        agc: None, or adaptive gradient clipping's threshold lambda (Brock et al. 2021); the head is not clipped.
        optimizer: ``{"class_path": ..., "init_args": {...}}``; SGD(lr=0.1, momentum=0.9) if None.
        lr_scheduler: same form, or None for a constant learning rate.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        arch: str = "resnet20",
        norm: str = "bn",
        norm_kwargs: dict[str, Any] | None = None,
        activation: str = "relu",
        init: str | None = None,
        init_gain: float = 1.0,
        width_factor: float = 1.0,
        residual_scale: float | None = None,
        fixup: bool = False,
        weight_norm: str | None = None,
        agc: float | None = None,
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes)
        self.save_hyperparameters(logger=False)
        self.backbone = build_cnn(**self.backbone_options())


class ViTClassifier(NormClassifier):
    """A Vision Transformer classifier (``normzoo.models.ViT``) for image maps, trained with AdamW by default.

    Args:
        input_shape: ``(C, H, W)`` of one sample; linked from the datamodule by the CLI. H and W must be
            multiples of ``patch_size``.
        num_classes: number of classes; linked from the datamodule by the CLI.
        arch: vit_mini, vit_tiny or vit_small (``normzoo.models.VIT_VARIANTS``).
        norm: a per-token norm: ln (ViT's own), rms, bn, dyt, derf, none, ...; not a norm-activation layer.
        norm_kwargs: options of the norm, e.g. ``{eps: 1e-6}``.
        placement: pre (Pre-LN, Xiong et al. 2020), post (Post-LN, Vaswani et al. 2017) or peri (Peri-LN,
            Kim et al. 2025).
        patch_size: side of the square patches; None for 4.
        init: None for timm's ViT init (truncated normal, std 0.02), or a scheme of ``INIT_SCHEMES``.
        init_gain: multiplies the init's standard deviation.
        optimizer: ``{"class_path": ..., "init_args": {...}}``; ``default_optimizer`` (AdamW) if None.
        lr_scheduler: same form, or None for a constant learning rate.
    """

    default_optimizer: ClassVar[dict[str, Any]] = {
        "class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3, "weight_decay": 0.05},
    }
    """AdamW, the optimizer of ViT recipes (DeiT: weight decay 0.05); SGD, the other classifiers' default, trains
    ViTs poorly."""

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        arch: str = "vit_mini",
        norm: str = "ln",
        norm_kwargs: dict[str, Any] | None = None,
        placement: Placement = "pre",
        patch_size: int | None = None,
        init: str | None = None,
        init_gain: float = 1.0,
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes)
        self.save_hyperparameters(logger=False)
        options = self.backbone_options()
        self.backbone = ViT(options.pop("arch"), **options)

    def configure_optimizers(self) -> Any:
        optimizer = self.hparams.get("optimizer") or self.default_optimizer
        return configure_optimization(self, optimizer, self.hparams.get("lr_scheduler"))
