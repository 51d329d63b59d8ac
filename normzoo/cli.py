"""``NormZooCLI``: LightningCLI with normzoo's defaults, and the ``normzoo`` console script.

    normzoo fit --config configs/quickstart.yaml
    normzoo fit --config configs/cifar10/resnet.yaml --model.norm gn --trainer.max_epochs 5
    normzoo test --config configs/quickstart.yaml --ckpt_path runs/quickstart/version_0/checkpoints/last.ckpt
    normzoo fit --print_config

What it adds to LightningCLI:

- the model and data are any ``NormClassifier`` / ``NormZooDataModule`` subclass
  (``model: class_path: normzoo.models.CNNClassifier``);
- the datamodule's ``input_shape`` and ``num_classes`` are linked into the model;
- ``--optimizer`` and ``--lr_scheduler`` are linked into the model as plain dicts, so
  hparams and checkpoints stay plain YAML;
- a ``NormZooCheckpoint`` keeps ``last.ckpt`` (the newest state) and the best ``val/acc``
  (``--checkpoint.*``), every file written atomically (``AtomicCheckpointIO``);
- ``StopOnDivergence`` ends a run whose training loss turns NaN/inf and marks it
  ``zoo/run/diverged`` in its logs (``--divergence.check_every_n_steps``);
- ``normzoo report RUN_DIR...`` compares finished runs in figures and a Markdown table
  (``normzoo.report``);
- ``normzoo study NAME`` runs a study of the catalog, its fits side by side and then its
  report (``normzoo study --list``; ``normzoo.studies``);
- TensorBoard is the default logger, with runs under ``<runs_dir>/<run_name>/version_N``
  (``run_name`` defaults to the config file's name; Lightning's ``--trainer.default_root_dir``
  sets the same folder as ``--runs_dir``), the config saved beside each run, and the hparams
  tab filled with the real metrics;
- ``validate``, ``test`` and ``predict`` of a ``--ckpt_path`` are logged at the checkpoint's
  step, record what they evaluated in ``evaluation.yaml`` and name the checkpoint and step in
  their summary (``normzoo.evaluation``); ``normzoo report`` lists them with their fit run;
- ``normzoo --help`` lists every command, normzoo's own included (``normzoo.commands``);
- ``--ckpt_path last`` resumes the run's newest ``last.ckpt`` into the same ``version_N``
  folder, so its TensorBoard curves and checkpoints continue in place;
- speed: ``--trainer.precision`` defaults to bf16-mixed on GPUs that support it, and
  ``--speed.channels_last`` / ``--speed.compile`` / ``--speed.cuda_graph`` apply
  ``normzoo.speed.SpeedUp`` (each falls back with a warning where it cannot apply);
- on a terminal the live progress bar redraws every ``min(log_every_n_steps, 10)`` steps,
  when its metrics change, instead of every step (a redraw costs about a small MLP's whole
  CPU step); when stdout is not a terminal (a log file, a pipe) ``LineProgressBar`` prints
  one plain line per epoch and per validation instead (``normzoo.progress``);
- ``--trainer.sync_batchnorm=true`` synchronizes every BN-family layer (normzoo's own
  included, through ``NormZooSyncBatchNorm``) on GPUs, and stops with one clear message on
  CPU, before any process starts (torch's SyncBatchNorm refuses CPU tensors);
- a closing summary of the metrics and of where the logs are.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple, instantiate_class
from lightning.pytorch.plugins import LayerSync
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch.optim import Optimizer
from typing_extensions import override

from normzoo.callbacks import StopOnDivergence
from normzoo.checkpoint import AtomicCheckpointIO, NormZooCheckpoint, check_checkpoint_matches, read_checkpoint
from normzoo.commands import COMMANDS, DESCRIPTION, OWN_COMMANDS
from normzoo.data import NormZooDataModule
from normzoo.data.base import MIN_TRAIN_BATCH
from normzoo.errors import ConfigError, find_user_error
from normzoo.evaluation import EvaluatedCheckpoint, Evaluation
from normzoo.files import writable_folder
from normzoo.key_hparams import command_line_paths
from normzoo.models import NormClassifier
from normzoo.models.optim import DEFAULT_OPTIMIZER
from normzoo.norms import bn_batch_size
from normzoo.progress import default_progress_bar
from normzoo.resume import LAST, ExactResume, after_newest_event_file, last_checkpoint
from normzoo.speed import SpeedUp, resolve_precision
from normzoo.sync_plugin import NormZooSyncBatchNorm

SUMMARY_METRICS = ("val/acc", "val/loss", "train/loss", "test/acc", "test/loss")
DEFAULT_RUNS_DIR = "runs"
MAX_PROGRESS_REFRESH_STEPS = 10


class NormZooCLI(LightningCLI):
    """LightningCLI for normzoo models and datamodules (see the module docstring)."""

    def __init__(self, args: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", NormClassifier)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("datamodule_class", NormZooDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        kwargs.setdefault("auto_configure_optimizers", False)  # the model builds them from linked dicts
        self.argv = list(sys.argv[1:] if args is None else args) if isinstance(args, (list, tuple, type(None))) else []
        super().__init__(args=args, **kwargs)

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """Lightning's subcommands with normzoo's descriptions, and ``report`` and ``study`` listed beside them.

        ``main`` runs ``report`` and ``study`` before any CLI is built; their entries here only
        make ``normzoo --help`` list every command (each has its own ``--help``).
        """
        parser.description = DESCRIPTION
        for name in self.subcommands():
            kwargs[name] = {"description": COMMANDS[name], **kwargs.get(name, {})}
        super()._add_subcommands(parser, **kwargs)
        subcommands = parser._subcommands_action
        for name in OWN_COMMANDS:
            subcommands.add_subcommand(name, LightningArgumentParser(description=COMMANDS[name]), help=COMMANDS[name])
        for listed in subcommands._choices_actions:  # Lightning lists the first lines of Trainer's docstrings
            listed.help = COMMANDS.get(listed.dest, listed.help)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # --optimizer / --lr_scheduler: any torch class, handed to the model as a plain dict
        for key, base, first_argument in (("optimizer", (Optimizer,), "params"),
                                          ("lr_scheduler", LRSchedulerTypeTuple, "optimizer")):
            parser.add_subclass_arguments(
                base, key, instantiate=False, fail_untyped=False, skip={first_argument}, required=False
            )
            parser.link_arguments(key, f"model.init_args.{key}", compute_fn=_as_dict)
        parser.add_lightning_class_args(NormZooCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/acc", "checkpoint.mode": "max", "checkpoint.save_last": True})
        parser.add_lightning_class_args(StopOnDivergence, "divergence")
        parser.add_lightning_class_args(SpeedUp, "speed")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.add_argument(
            "--runs_dir", type=str, default=DEFAULT_RUNS_DIR,
            help="Folder that holds every run: <runs_dir>/<run_name>/version_N (--trainer.default_root_dir sets it "
                 "too).",
        )
        parser.add_argument(
            "--run_name", type=str | None, default=None,
            help="Run folder name under runs_dir; defaults to the (last) config file's name.",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        config.runs_dir = runs_dir_of(config.runs_dir, config.trainer.default_root_dir)
        config.trainer.default_root_dir = config.runs_dir  # checkpoints of logger-less runs (fast_dev_run) too
        config.trainer.precision = resolve_precision(config.trainer.precision, config.trainer.accelerator)
        version = None
        if config.get("ckpt_path") == LAST:
            path, version = last_checkpoint(config.runs_dir, _run_name(config))
            config.ckpt_path = str(path)
            self.save_config_kwargs["overwrite"] = True  # the run's config.yaml is already there
        if config.trainer.logger in (None, True):
            init_args = Namespace(save_dir=config.runs_dir, name=_run_name(config), default_hp_metric=False,
                                  version=version if self.subcommand == "fit" else None)
            if version is not None and self.subcommand == "fit":  # resuming in place: hide the steps it redoes
                init_args.purge_step = read_checkpoint(config.ckpt_path)["global_step"] + 1
                after_newest_event_file(Path(config.ckpt_path).parent.parent)
            config.trainer.logger = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                                              init_args=init_args)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={})
        plugins = _as_list(trainer_config.get("plugins"))
        if trainer_config.get("sync_batchnorm"):
            plugins = sync_batchnorm_plugins(trainer_config.get("accelerator"), plugins)
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins = [*plugins, AtomicCheckpointIO()]  # no half-written checkpoint under a real name
        kwargs["plugins"] = plugins
        return super().instantiate_trainer(**kwargs)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        given = [*_as_list(config.get("callbacks")), *_as_list(self.trainer_defaults.get("callbacks")), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(cb, ProgressBar) for cb in given):
            every = min(config.get("log_every_n_steps") or 50, MAX_PROGRESS_REFRESH_STEPS)
            callbacks = [*callbacks, default_progress_bar(refresh_rate=every)]
        return super()._instantiate_trainer(config, [*callbacks, ExactResume(), EvaluatedCheckpoint(),
                                                     ReleaseProcessGroup()])

    def _parse_ckpt_path(self) -> None:
        """Keep the configured model: a ``--ckpt_path`` is checked against it (``_run_subcommand``), never merged.

        LightningCLI would overwrite the configured model's arguments with the checkpoint's, so a
        config for one model and a checkpoint of another silently ran the checkpoint's model.
        """

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; a fit interrupted by SIGTERM or Ctrl-C ends with status 128 + signal and says where its state is.

        The run's inputs are checked first, before anything of it is written: a ``--ckpt_path``
        (readable, the configured model, for ``fit`` the same settings and a healthy run), the
        optimizer and batch size of a fit, and a ``--runs_dir`` that takes files.
        """
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path:
            check_checkpoint_matches(ckpt_path, dict(self.model.hparams), resuming=subcommand == "fit")
        if subcommand == "fit":
            check_optimization(self.model.hparams.get("optimizer"), self.model.hparams.get("lr_scheduler"))
            check_batch_statistics(self.model, getattr(self.datamodule, "batch_size", None))
        writable_folder(self.config[subcommand].runs_dir, "--runs_dir")
        try:
            super()._run_subcommand(subcommand)
            release_process_group()  # after the summary, whose log_dir lookup is a collective
        except SystemExit:  # Lightning ends an interrupted fit with SystemExit (status 0 for SIGTERM)
            callback = self.trainer.checkpoint_callback
            signum = getattr(callback, "interrupted_by", None)
            if signum is None:
                raise
            if self.trainer.is_global_zero:
                path = callback.last_model_path
                saved = f"state saved to {path} (step {callback.step_of(path)})" if path else "no state saved"
                print(f"normzoo: {signum.name} stopped the fit at step {self.trainer.global_step}; {saved}. "
                      "Continue it with --ckpt_path last.", file=sys.stderr, flush=True)
            raise SystemExit(128 + signum) from None

    def before_fit(self) -> None:
        self.model.overridden_paths = tuple(command_line_paths(self.argv))  # shown first in TensorBoard's HPARAMS

    def after_fit(self) -> None:
        self._print_summary("fit")

    def after_test(self) -> None:
        self._print_summary("test")

    def after_validate(self) -> None:
        self._print_summary("validate")

    def after_predict(self) -> None:
        self._print_summary("predict")

    def _print_summary(self, stage: str) -> None:
        trainer = self.trainer
        log_dir = trainer.log_dir  # a collective under DDP (a broadcast): every rank asks, rank zero prints
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = [f"{name} {float(metrics[name]):.4f}" for name in SUMMARY_METRICS if name in metrics]
        lines = [f"normzoo {stage} finished: {_what_ran(trainer, stage)}"]
        if stage == "predict" and not shown:
            shown = [f"{_count_predictions(trainer.predict_loop.predictions)} predictions"]
        lines.append("  " + ("   ".join(shown) if shown else "no metrics logged"))
        diverged = [cb.diverged_at for cb in trainer.callbacks if isinstance(cb, StopOnDivergence) and
                    cb.diverged_at is not None]
        if stage == "fit" and diverged:
            lines.append(f"  DIVERGED: the training loss became NaN/inf by step {diverged[0]}; the run stopped there")
        if log_dir:
            runs = Path(log_dir).parent.parent
            lines.append(f"  logs: {log_dir}  (view: tensorboard --logdir {runs})")
        callback = trainer.checkpoint_callback
        if stage == "fit" and isinstance(callback, NormZooCheckpoint):
            for label, path in (("best", callback.best_model_path), ("last", callback.last_model_path)):
                if path:
                    step = callback.step_of(path)
                    lines.append(f"  {label} checkpoint{'' if step is None else f' (step {step})'}: {path}")
        print("\n".join(lines), flush=True)


def _what_ran(trainer: Trainer, stage: str) -> str:
    """The summary's subject: the step a fit reached, or the checkpoint (and its step) an evaluation evaluated."""
    if stage == "fit":
        return f"epoch {trainer.current_epoch}, step {trainer.global_step}"
    evaluation: Evaluation | None = next(
        (cb.evaluation for cb in trainer.callbacks if isinstance(cb, EvaluatedCheckpoint) and cb.evaluation), None)
    if evaluation is None:
        return "the model as built, untrained (no --ckpt_path)"
    return f"checkpoint {evaluation.checkpoint} (epoch {evaluation.epoch}, step {evaluation.step})"


def _count_predictions(predictions: Any) -> int:
    """How many samples ``trainer.predict`` returned predictions for (batches of tensors, or lists of them)."""
    if isinstance(predictions, torch.Tensor):
        return len(predictions) if predictions.dim() else 1
    if isinstance(predictions, (list, tuple)):
        return sum(_count_predictions(item) for item in predictions)
    return 0


def release_process_group() -> None:
    """Destroy this process's ``torch.distributed`` process group, if any, before the interpreter exits.

    Lightning never destroys it; a gloo group left to the interpreter's shutdown has its
    threads torn down out of order, and a rank could then abort at exit ("terminate called
    without an active exception", status -6) after a run that finished well.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # every rank is done with collectives
        torch.distributed.destroy_process_group()


class ReleaseProcessGroup(Callback):
    """In workers started by ``ddp_spawn`` (nothing runs in them after fit), release the process group at teardown."""

    @override
    def teardown(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
            release_process_group()


def check_optimization(optimizer: dict[str, Any] | None, lr_scheduler: dict[str, Any] | None) -> None:
    """Build the configured optimizer and LR scheduler on a stand-in parameter, so bad values fail before the run.

    Raises:
        ConfigError: torch refuses a value (a negative learning rate, momentum out of range, ...).
    """
    optimizer = optimizer or DEFAULT_OPTIMIZER
    try:
        built = instantiate_class([torch.zeros(1, requires_grad=True)], optimizer)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"--optimizer ({optimizer['class_path']}): {error}.") from None
    if lr_scheduler:
        try:
            instantiate_class(built, lr_scheduler)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"--lr_scheduler ({lr_scheduler['class_path']}): {error}.") from None


def check_batch_statistics(model: Any, batch_size: int | None) -> None:
    """Refuse a training batch of one sample for a model with batch-statistics layers, before the run starts.

    Raises:
        ConfigError: naming the norm and the fixes (a larger batch, or a batch-independent norm).
    """
    if batch_size is None or batch_size >= MIN_TRAIN_BATCH or bn_batch_size(model, batch_size) is None:
        return
    norm = model.hparams.get("norm", "its")
    raise ConfigError(f"batch_size={batch_size} is too small for norm {norm!r}: BatchNorm-style layers need at least "
                      f"{MIN_TRAIN_BATCH} samples per batch in training. Use batch_size >= {MIN_TRAIN_BATCH}, or a "
                      "batch-independent norm (ln, gn, in, none).")


def sync_batchnorm_plugins(accelerator: Any, plugins: Any) -> list[Any]:
    """The trainer's plugins with normzoo's sync-BN plugin added (unless a LayerSync is there).

    Raises:
        ConfigError: the run would be on CPU, where torch's SyncBatchNorm refuses to run.
    """
    cuda = torch.cuda.is_available()
    if accelerator == "cpu" or (accelerator in (None, "auto") and not cuda):
        raise ConfigError(
            "--trainer.sync_batchnorm=true needs GPUs: torch's SyncBatchNorm refuses CPU tensors"
            + ("" if cuda else " and this machine has no CUDA device")
            + ". Drop sync_batchnorm on CPU (each rank then normalizes its own batch), run with "
            "--trainer.accelerator=gpu, or use a batch-independent norm (--model.norm gn or ln)."
        )
    plugins = _as_list(plugins)
    if not any(isinstance(plugin, LayerSync) for plugin in plugins):
        plugins.append(NormZooSyncBatchNorm())
    return plugins


@contextlib.contextmanager
def own_arguments_only() -> Iterator[None]:
    """Hide this process's command-line arguments while the CLI runs on ``args`` given in Python.

    LightningCLI warns when it is handed ``args`` while ``sys.argv`` has arguments of its own
    (a study script's ``--quick``, pytest's options), which is expected when normzoo builds
    or runs a CLI inside another program.
    """
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def _as_list(value: Any) -> list[Any]:
    """A trainer option that takes one item or several (callbacks, plugins) as a list."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _as_dict(value: Namespace | None) -> dict[str, Any] | None:
    """A parsed ``{class_path, init_args}`` group as the plain dict the model stores."""
    return value.as_dict() if isinstance(value, Namespace) else value


def runs_dir_of(runs_dir: str, default_root_dir: Any) -> str:
    """Where runs go: ``--runs_dir``, or Lightning's ``--trainer.default_root_dir`` when that is given instead.

    Both name the folder a run's logs and checkpoints go under, so a Lightning user's
    ``--trainer.default_root_dir X`` puts runs in ``X/<run_name>/version_N``, as ``--runs_dir X``
    does (Lightning's own layout would be ``X/lightning_logs/version_N``).

    Raises:
        ConfigError: both are given and name different folders.
    """
    if default_root_dir is None or str(default_root_dir) == runs_dir:
        return runs_dir
    if runs_dir != DEFAULT_RUNS_DIR and Path(runs_dir) != Path(str(default_root_dir)):
        raise ConfigError(f"--trainer.default_root_dir {default_root_dir} and --runs_dir {runs_dir} name different "
                          "folders; both set where runs go (<runs_dir>/<run_name>/version_N). Give one of them.")
    return str(default_root_dir)


def _run_name(config: Namespace) -> str:
    if config.get("run_name"):
        return config.run_name
    config_files = config.get("config") or []
    if config_files:
        last = config_files[-1]
        return Path(str(getattr(last, "relative", last))).stem
    return "default"


def main(args: Any = None) -> None:
    """Entry point of the ``normzoo`` console script and of ``python -m normzoo``.

    ``normzoo report RUN_DIR...`` goes to ``normzoo.report``, ``normzoo study ...`` to
    ``normzoo.studies.command``, ``normzoo sweep ...`` to ``normzoo.studies.sweep``; every
    other subcommand to ``NormZooCLI``. A mistake in the
    user's input (see ``normzoo.errors``) is printed as one message and exits with status 2;
    other errors keep their traceback.
    """
    argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else None
    try:
        if argv and argv[0] == "report":
            from normzoo.report import main as report_main

            report_main(argv[1:])
            return
        if argv and argv[0] in ("study", "sweep"):
            from normzoo.studies.command import main as study_main
            from normzoo.studies.sweep import main as sweep_main

            status = (study_main if argv[0] == "study" else sweep_main)(argv[1:])
            if status:
                raise SystemExit(status)
            return
        NormZooCLI(args=args)
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None and isinstance(error, MisconfigurationException):  # Lightning's word for bad input
            user_error = error
        if user_error is None or os.environ.get("NORMZOO_TRACEBACK"):
            raise
        print(f"normzoo: error: {user_error}", file=sys.stderr)
        raise SystemExit(2) from None
