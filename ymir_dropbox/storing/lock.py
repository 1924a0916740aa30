"""One daemon per set of folders: an exclusive flock on a file beside the ledger."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.settings import Config

INHERITED_ENV_VAR = "YMIR_DROPBOX_LOCK_FD"


def lock_path(config: Config) -> Path:
    return config.paths.ledger.with_name(config.paths.ledger.name + ".lock")


def acquire_lock(config: Config) -> IO[str]:
    """One daemon per set of folders: an exclusive flock beside the ledger, held until exit."""
    path = lock_path(config)
    stream = _inherited(path) or path.open("a+")
    try:
        fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        stream.seek(0)
        holder = stream.read().strip() or "unknown"
        stream.close()
        raise DropboxError(
            f"another ymir-dropbox (pid {holder}) is already running on these folders "
            f"(lock {path} is held); refusing to start a second one"
        ) from None
    stream.seek(0)
    stream.truncate()
    stream.write(f"{os.getpid()}\n")
    stream.flush()
    return stream


def _inherited(path: Path) -> IO[str] | None:
    """The lock a re-executed daemon inherited from itself (``YMIR_DROPBOX_LOCK_FD``)."""
    text = os.environ.pop(INHERITED_ENV_VAR, "")
    if not text.isdigit():
        return None
    fd = int(text)
    try:
        held, wanted = os.fstat(fd), os.stat(path)
    except OSError:
        return None
    if (held.st_dev, held.st_ino) != (wanted.st_dev, wanted.st_ino):
        return None
    os.set_inheritable(fd, False)
    return os.fdopen(fd, "a+")


def lock_held(config: Config) -> bool:
    """Whether a daemon holds the lock now (for ``status``)."""
    path = lock_path(config)
    if not path.exists():
        return False
    with path.open("r") as stream:
        try:
            fcntl.flock(stream, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(stream, fcntl.LOCK_UN)
    return False
