"""Files and folders a command writes: folders checked before it starts (a mistake is one line, not a
traceback), and records written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from normzoo.errors import ConfigError


def writable_folder(path: str | Path, option: str) -> Path:
    """``path`` as a folder that exists (created if need be) and takes new files.

    Args:
        path: the folder.
        option: the argument it came from (``--runs_dir``, ``--out``), named in the error.

    Raises:
        ConfigError: it is a file, or it cannot be created or written into.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} is a file, not a folder. Pass a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigError(f"{option} {folder} cannot be written into ({error.strerror or error}). Pass a folder "
                          "you can write to.") from None
    return folder


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success, ``fsync`` it and rename it onto ``path``.

    A reader sees the old file or the new one, never a half-written one, whatever kills the
    writer in between; on an error the temporary file is removed and ``path`` is untouched.
    The file gets the permissions a plain ``open`` would give (``mkstemp``'s 0600 would hide
    it from the group).
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` with ``atomic_file``; returns the path."""
    with atomic_file(path) as file:
        file.write(text)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
