"""Durable files: written under a temporary name, fsynced, renamed, the folder fsynced.

A temporary file carries its writer's pid in its name and is flocked by its writer while it
is written, so that a daemon starting beside a running ``ymir-dropbox import`` removes only
the leftovers of writers that are gone, never a file still being written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".ymir-dropbox-"
TEMP_SUFFIX = ".tmp"
BUFFER_BYTES = 1024 * 1024


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def temporary_file(folder: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A new temporary file in ``folder``, locked as ours until closed; removed on error.

    The caller renames it into place before the block ends (or leaves it to be removed).
    """
    fd, name = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=TEMP_SUFFIX, dir=folder
    )
    path = Path(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(fd, "wb", buffering=BUFFER_BYTES) as stream:
            yield stream, path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@functools.cache
def file_mode() -> int:
    """The mode ``open`` would give a new file under this process's umask (``UMask=0027``
    under systemd: group-readable, not world-readable); a temporary file starts at 0600."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def finish_file(stream: BinaryIO, temporary: Path, target: Path, mode: int | None = None) -> None:
    """Flush, fsync and rename a temporary file to ``target`` (replacing it); fsync the folder.
    Its mode: ``mode``, else what the umask gives (:func:`file_mode`)."""
    stream.flush()
    os.fchmod(stream.fileno(), file_mode() if mode is None else mode)
    os.fsync(stream.fileno())
    os.replace(temporary, target)
    fsync_folder(target.parent)


def write_atomically_at(folder: int, name: str, data: bytes) -> None:
    """``write_atomically`` for a name in an open folder: no path is resolved, so nothing
    written ever goes through a symlink put in the way (the error files of failed/)."""
    temporary = f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}{TEMP_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600, dir_fd=folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, file_mode())
        os.fsync(fd)
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        raise
    finally:
        os.close(fd)
    os.fsync(folder)


def write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` afterwards, or its old content after any crash."""
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_atomically_at(folder, path.name, data)
    finally:
        os.close(folder)


def _writer_gone(path: Path, by_lock: bool = False) -> bool:
    """Whether the process that wrote this temporary file is gone (or, for our own pid after
    a re-exec, for names without a pid and ``by_lock``, whether nobody holds its lock)."""
    pid_text = path.name[len(TEMP_PREFIX) :].partition("-")[0]
    if not by_lock and pid_text.isdigit() and int(pid_text) != os.getpid():
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return True
        return False  # alive (ours to judge or not): never take a file from a live writer
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False  # its writer is at work
        raise
    finally:
        os.close(fd)
    return True


def remove_temporaries(folder: Path, recursive: bool = False, by_lock: bool = False) -> list[Path]:
    """Remove our own leftover temporary files from a crash (never anything else, and never
    one whose writer is still at work). ``by_lock``: judge by the lock alone, never by the
    pid, for a folder other machines' daemons may write too (a pid is this machine's)."""
    removed = []
    pattern = f"{TEMP_PREFIX}*{TEMP_SUFFIX}"
    for path in folder.rglob(pattern) if recursive else folder.glob(pattern):
        if path.is_file() and not path.is_symlink() and _writer_gone(path, by_lock):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
