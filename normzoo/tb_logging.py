"""TensorBoard helpers: hparams that point at the real metrics of a run.

Lightning's ``TensorBoardLogger.log_hyperparams(params, metrics)`` writes the given metric
values as scalars at step 0, which would put a fake first point on curves like
``val/acc``. Here the hparams session only *names* the metrics; TensorBoard's hparams tab
then reads their values from the run's own scalar summaries.

The session starts when fit starts (``log_hparams_session``). The experiment, which decides
what the HPARAMS tab shows, is written when fit ends (``log_hparams_experiment``): its metric
columns are only those the run logged (a declared metric that a run never logged leaves the
parallel-coordinates and scatter-matrix views empty), and its key hyperparameters
(``normzoo.key_hparams``) come first and ticked. TensorBoard keeps the first experiment of a
run and uses one run's experiment for all runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams as hparams_summary

from normzoo.key_hparams import TICKED, key_hparams


def tensorboard_loggers(loggers: Iterable[Any]) -> list[Any]:
    """The TensorBoard loggers among ``loggers``, from ``lightning.pytorch`` or ``pytorch_lightning``.

    The two packages define separate ``TensorBoardLogger`` classes; a tutorial written with
    ``import pytorch_lightning as pl`` passes the other one, and an ``isinstance`` test against
    one class alone would silently skip its layout and figures.
    """
    classes: tuple[type, ...] = (TensorBoardLogger,)
    if "pytorch_lightning" in sys.modules:  # only imported where the user's code did
        classes += (sys.modules["pytorch_lightning"].loggers.TensorBoardLogger,)
    return [logger for logger in loggers if isinstance(logger, classes)]


def plain(value: Any) -> Any:
    """``value`` with tuples turned into lists and mappings into dicts, for plain YAML."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def flatten(params: Mapping[str, Any], separator: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested mappings flattened to ``a<separator>b`` keys; the leaf values are kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, separator, f"{name}{separator}"))
        else:
            flat[name] = value
    return flat


def flatten_for_hparams(params: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten nested dicts to ``a/b`` keys with values TensorBoard's hparams tab accepts."""
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value)
            for key, value in flatten(params).items()}


@rank_zero_only
def log_hparams_session(logger: TensorBoardLogger, params: Mapping[str, Any]) -> None:
    """Start the run's session in the hparams tab with ``params``.

    Also records ``params`` in ``logger.hparams`` so ``hparams.yaml`` is saved with the run.
    """
    logger.hparams.update(plain(params))
    _, session_start, _ = hparams_summary(flatten_for_hparams(params), {})
    logger.experiment._get_file_writer().add_summary(session_start)


@rank_zero_only
def log_hparams_experiment(
    logger: TensorBoardLogger, params: Mapping[str, Any], overridden_paths: Iterable[str],
    metric_names: Iterable[str],
) -> None:
    """End the run's session and write the experiment: ``metric_names`` as its metric columns, and
    the key hyperparameters of ``params`` (those of ``overridden_paths``, then the core ones) first.
    """
    flat = flatten_for_hparams(params)
    experiment, _, session_end = hparams_summary(flat, {name: 0.0 for name in metric_names})
    writer = logger.experiment._get_file_writer()
    writer.add_summary(keys_first(experiment, key_hparams(list(flat), overridden_paths)))
    writer.add_summary(session_end)


def keys_first(experiment: Summary, keys: list[str]) -> Summary:
    """The experiment summary with ``keys`` first and the first ``TICKED`` of them marked ``differs``.

    TensorBoard lists the hyperparameters marked ``differs`` first, by name, and ticks the
    first ``TICKED``; one run cannot know which values differ from other runs, so the key
    ones are marked instead.
    """
    (value,) = experiment.value
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    rank = {name: index for index, name in enumerate(keys)}
    infos = sorted(data.experiment.hparam_infos, key=lambda info: rank.get(info.name, len(rank)))
    for info in infos:
        info.differs = rank.get(info.name, TICKED) < TICKED
    data.experiment.ClearField("hparam_infos")
    data.experiment.hparam_infos.extend(infos)
    value.metadata.plugin_data.content = data.SerializeToString()
    return experiment


def logged_metrics(trainer: Trainer, names: Iterable[str]) -> list[str]:
    """The metrics among ``names`` that ``trainer`` wrote to its loggers, in the order of ``names``.

    ``trainer.logged_metrics`` also holds the step metrics of the last step, which Lightning
    writes only every ``log_every_n_steps`` steps; a run shorter than that wrote none
    (normzoo's step metrics are the ``train/`` ones).
    """
    wrote_steps = trainer.global_step >= trainer.log_every_n_steps > 0 or bool(trainer.fast_dev_run)
    return [name for name in names
            if name in trainer.logged_metrics and (wrote_steps or not name.startswith("train/"))]
