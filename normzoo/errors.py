"""Errors caused by a user's input, which the CLI reports as one message without a traceback.

Each is also a ``ValueError`` (or ``RuntimeError``) so plain-Python callers can catch the
usual types. Set ``NORMZOO_TRACEBACK=1`` to see the full traceback from the CLI.
"""

from __future__ import annotations


class NormZooError(Exception):
    """Base of the errors whose message tells the user what to fix."""


class ConfigError(NormZooError, ValueError):
    """An argument value that cannot work: an unknown name, an impossible shape or size."""


def find_user_error(error: BaseException | None) -> NormZooError | None:
    """The first ``NormZooError`` in ``error``'s chain of causes (parsers wrap them), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, NormZooError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class DiagnosticError(ConfigError):
    """A diagnostics callback cannot measure this model as configured; the message names the option to change."""
