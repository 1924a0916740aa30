"""Where ``push`` delivers a package: an inbox folder (local, or a mounted share), or
``[user@]host:path`` reached with ``rsync`` over ssh.

Either way the daemon never sees a partial file and an existing file is never overwritten:

- into a folder, the package is written as ``.NAME.XXXXXXXX`` (a hidden name the daemon
  skips), fsynced, and renamed to NAME with ``renameat2(RENAME_NOREPLACE)``; the folder is
  fsynced;
- over ssh, ``rsync --ignore-existing`` writes its own hidden ``.NAME.XXXXXX`` and renames
  it; a name it did not transfer was there already, and is reported so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ymir_dropbox.core.errors import DropboxError, UsageError
from ymir_dropbox.core.linux import rename_noreplace_at

# rsync's rule: a colon before any slash names a host (``host:path``, ``user@host:path``,
# ``[::1]:path``); ``./a:b`` and ``/a:b`` are local paths.
REMOTE = re.compile(
    r"(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^@/:\s\[\]]+):(?P<path>.*)"
)
RSYNC_TIMEOUT_SECONDS = 60  # rsync --timeout: no byte moved for this long ends the transfer


class DeliveryError(DropboxError):
    """A package could not be delivered (the name is taken, rsync or the disk failed)."""


@dataclass(frozen=True, slots=True)
class Folder:
    """An inbox folder on this machine (or mounted on it)."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True, slots=True)
class Remote:
    """An inbox on another host, reached by rsync over ssh."""

    user: str | None
    host: str
    path: str  # as rsync takes it ("" is the remote user's home)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.path}"

    def target(self, name: str) -> str:
        folder = self.path if not self.path or self.path.endswith("/") else self.path + "/"
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{folder}{name}"


Destination = Folder | Remote


def parse_destination(text: str) -> Destination:
    """``[user@]host:path`` is a remote inbox (rsync's rule); anything else a folder here."""
    if not text:
        raise UsageError("DEST: empty")
    found = None if text.startswith(("/", ".", "~")) else REMOTE.fullmatch(text)
    if found is None:
        return Folder(Path(text).expanduser())
    return Remote(found["user"], found["host"], found["path"])


def check_destination(destination: Destination, names: list[str]) -> None:
    """Before anything is written: a local DEST must be a folder where none of ``names``
    exists yet. (A remote one is asked by the transfer itself.)"""
    if isinstance(destination, Remote):
        return
    folder = destination.path
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"DEST {folder} {state}")
    for name in names:
        target = folder / name
        if target.exists() or target.is_symlink():
            raise UsageError(f"{target} already exists; push never overwrites a file")


def deliver(package: Path, name: str, destination: Destination, rsh: str | None = None) -> str:
    """Put ``package`` into ``destination`` as ``name``; return where it went. Raises
    :class:`DeliveryError` (the name taken meanwhile, the transfer failed)."""
    if isinstance(destination, Folder):
        return _into_folder(package, name, destination.path)
    return _over_ssh(package, name, destination, rsh)


def _into_folder(package: Path, name: str, folder: Path) -> str:
    target = folder / name
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
    except OSError as error:
        raise DeliveryError(f"cannot write into {folder}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as stream, package.open("rb") as source:
            shutil.copyfileobj(source, stream, 1024 * 1024)
            stream.flush()
            os.fchmod(stream.fileno(), 0o666 & ~umask)  # as cp makes it: the daemon reads it
            os.fsync(stream.fileno())
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            rename_noreplace_at(
                folder_fd, os.fsencode(Path(temporary).name), folder_fd, os.fsencode(name)
            )
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)
    except FileExistsError:
        Path(temporary).unlink(missing_ok=True)
        raise DeliveryError(f"{target} appeared meanwhile; push never overwrites a file") from None
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise DeliveryError(f"cannot write {target}: {error.strerror or error}") from None
    return str(target)


def _over_ssh(package: Path, name: str, remote: Remote, rsh: str | None) -> str:
    target = remote.target(name)
    rsync = shutil.which("rsync")
    if rsync is None:
        raise DeliveryError("rsync is not installed here (apt-get install rsync)")
    command = [
        rsync,
        "--ignore-existing",  # never overwrite: a name not transferred was there already
        "--chmod=F644",
        f"--timeout={RSYNC_TIMEOUT_SECONDS}",
        "--out-format=sent %n",
        *(["--rsh", rsh] if rsh else []),
        "--",
        str(package),
        target,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        detail = said[-1] if said else f"exit code {done.returncode}"
        raise DeliveryError(f"rsync to {target} failed ({done.returncode}): {detail}")
    if not any(line.startswith("sent ") for line in done.stdout.splitlines()):
        raise DeliveryError(f"{target} already exists; push never overwrites a file")
    return target
