"""Every error normzoo raises on purpose, each with a message that tells the user what to fix.

The CLI reports a ``NormZooError`` as one line and exit status 2, without a traceback
(``NORMZOO_TRACEBACK=1`` shows it). Each class also derives from the builtin type a
plain-Python caller would catch (``ValueError``, ``RuntimeError``, ``OSError``).

- ``ConfigError``: a setting that cannot work (an unknown name, an impossible shape or size),
  found before or while the run is built;
- ``DataError``: the data a run reads cannot be used (NaN/inf values, images of the wrong
  type, a layer left with one value per statistic), found while it runs;
- ``CheckpointWriteError``, ``DatasetUnavailableError``: a file that cannot be written or read;
- ``RunPreempted``: a study's or sweep's run was ended by a signal, so its executor starts it again.
"""

from __future__ import annotations

__all__ = [
    "BatchStatisticsError",
    "CheckpointWriteError",
    "ConfigError",
    "DataError",
    "DatasetUnavailableError",
    "DiagnosticError",
    "NormZooError",
    "RunPreempted",
    "UnknownNormError",
    "find_user_error",
]


class NormZooError(Exception):
    """Base of the errors whose message tells the user what to fix."""


class ConfigError(NormZooError, ValueError):
    """An argument value that cannot work: an unknown name, an impossible shape or size."""


class UnknownNormError(ConfigError):
    """An unregistered norm name; the message lists the registered ones."""


class DiagnosticError(ConfigError):
    """A diagnostics callback cannot measure this model as configured; the message names the option to change."""


class DataError(NormZooError, ValueError):
    """The data a run reads cannot be used: NaN/inf values, images of the wrong type, one value per statistic."""


class BatchStatisticsError(DataError):
    """A norm layer got a single value to compute each of its statistics from."""


class DatasetUnavailableError(NormZooError, RuntimeError):
    """A dataset is neither on disk nor downloadable; the message says how to provide it."""


class CheckpointWriteError(NormZooError, OSError):
    """A checkpoint could not be written; the file it would have replaced is untouched."""


class RunPreempted(NormZooError, RuntimeError):
    """A run's process was ended by a signal (a scheduler's preemption): its executor retries it from ``last.ckpt``."""


def find_user_error(error: BaseException | None) -> NormZooError | None:
    """The first ``NormZooError`` in ``error``'s chain of causes (parsers wrap them), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, NormZooError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
