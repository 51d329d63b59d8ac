"""TensorBoard helpers: hparams that point at the real metrics of a run.

Lightning's ``TensorBoardLogger.log_hyperparams(params, metrics)`` writes the given metric
values as scalars at step 0, which would put a fake first point on curves like
``val/acc``. Here the hparams session only *names* the metrics; TensorBoard's hparams tab
then reads their values from the run's own scalar summaries.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams as hparams_summary


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
def log_hparams_with_metrics(
    logger: TensorBoardLogger, params: Mapping[str, Any], metric_names: Iterable[str]
) -> None:
    """Write ``params`` to the hparams tab with ``metric_names`` as its metric columns.

    Also records ``params`` in ``logger.hparams`` so ``hparams.yaml`` is saved with the run.
    """
    logger.hparams.update(plain(params))
    flat = flatten_for_hparams(params)
    experiment, session_start, session_end = hparams_summary(flat, {name: 0.0 for name in metric_names})
    writer = logger.experiment._get_file_writer()
    for summary in (experiment, session_start, session_end):
        writer.add_summary(summary)
