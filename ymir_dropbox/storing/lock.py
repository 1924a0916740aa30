"""One daemon per set of folders: an exclusive flock on a file beside the ledger (which
``status`` asks), and one on processing/ itself, so that two daemons with two ledgers never
share the folders either."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.settings import Config

INHERITED_ENV_VAR = "YMIR_DROPBOX_LOCK_FD"
FOLDER_ENV_VAR = "YMIR_DROPBOX_FOLDER_LOCK_FD"


@dataclass(slots=True)
class DaemonLock:
    """The locks a daemon holds until it exits (and keeps across a reload's exec)."""

    stream: IO[str]  # beside the ledger, holding the daemon's pid
    folder: int  # processing/ itself

    def inherited_by_exec(self) -> dict[str, str]:
        """Keep both across an exec: the variables that tell the new process where."""
        os.set_inheritable(self.stream.fileno(), True)
        os.set_inheritable(self.folder, True)
        return {INHERITED_ENV_VAR: str(self.stream.fileno()), FOLDER_ENV_VAR: str(self.folder)}

    def close(self) -> None:
        self.stream.close()
        os.close(self.folder)


def lock_path(config: Config) -> Path:
    return config.paths.ledger.with_name(config.paths.ledger.name + ".lock")


def acquire_lock(config: Config) -> DaemonLock:
    """One daemon per set of folders: exclusive flocks beside the ledger and on processing/,
    held until exit."""
    stream = _lock_beside_the_ledger(config)
    try:
        folder = _lock_the_folders(config.paths.processing)
    except BaseException:
        stream.close()
        raise
    return DaemonLock(stream, folder)


def _lock_the_folders(processing: Path) -> int:
    fd = _inherited(FOLDER_ENV_VAR, processing)
    if fd is None:
        fd = os.open(processing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DropboxError(
            f"another ymir-dropbox is already running on these folders ({processing} is "
            "locked), with another ledger; refusing to start a second one"
        ) from None
    return fd


def _lock_beside_the_ledger(config: Config) -> IO[str]:
    path = lock_path(config)
    inherited = _inherited(INHERITED_ENV_VAR, path)
    stream = os.fdopen(inherited, "a+") if inherited is not None else path.open("a+")
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


def _inherited(variable: str, path: Path) -> int | None:
    """The descriptor of ``path`` a re-executed daemon inherited from itself, named by the
    environment ``variable``; None if there is none, or it is not that file any more."""
    text = os.environ.pop(variable, "")
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
    return fd


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


IMPORT_LOCK = ".import-{attempt}.lock"


@contextmanager
def import_lock(work: Path, attempt_id: int) -> Iterator[None]:
    """Held by ``ymir-dropbox import`` while it imports attempt ``attempt_id``: a daemon that
    starts meanwhile leaves the attempt to it, and takes it up once the lock is free (the
    command killed)."""
    path = work / IMPORT_LOCK.format(attempt=attempt_id)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def import_gone(work: Path, attempt_id: int) -> bool:
    """Whether the ``ymir-dropbox import`` of attempt ``attempt_id`` is gone (killed) without
    finishing it: its lock file is there, and nobody holds it (it is removed then). No lock
    file: the command has not taken it yet, or is of a release without it; it is left alone."""
    path = work / IMPORT_LOCK.format(attempt=attempt_id)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    path.unlink(missing_ok=True)
    os.close(fd)
    return True
