"""Folders that a command will write into, checked before it starts, so a mistake is one line, not a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

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
