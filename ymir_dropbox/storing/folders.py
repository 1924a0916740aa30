"""The folders: which inbox files are packages, and the atomic moves between folders.

A package leaves the inbox only by a rename we can name: inbox -> processing -> done or
failed. Names never collide (a taken name gets a ``.1``, ``.2`` ... suffix) and nothing is
ever overwritten or deleted. Relative paths under the inbox are kept in every folder.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from enum import Enum
from pathlib import Path, PurePosixPath

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.linux import rename_noreplace_at
from ymir_dropbox.core.settings import Config, WatchConfig
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.documents import error_document, error_text
from ymir_dropbox.storing.durable import write_atomically_at

COMPOUND_SUFFIXES = (".tar.gz", ".tgz")
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def is_ignored(relative: PurePosixPath, watch: WatchConfig) -> bool:
    """Hidden and temporary files (and anything in a hidden folder) are never touched."""
    ignored = matcher(watch.ignore)
    return any(ignored(part) for part in relative.parts)


def is_package_name(relative: PurePosixPath, watch: WatchConfig) -> bool:
    return matcher(watch.patterns)(relative.name)


class Kind(Enum):
    FOLDER = "folder"
    PACKAGE = "package"  # a regular file named as watch.patterns says
    MISNAMED = "misnamed"  # a regular file named otherwise: never taken
    SPECIAL = "special"  # a symlink, a fifo, a device or a socket: never taken


@functools.cache
def matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """One compiled test for "the name matches one of ``patterns``" (``fnmatchcase``)."""
    if not patterns:
        return lambda name: False
    compiled = re.compile("|".join(fnmatch.translate(pattern) for pattern in patterns))
    return lambda name: compiled.match(name) is not None


WHOLE = PurePosixPath(".")


def scan_inbox(
    inbox: Path, watch: WatchConfig, under: PurePosixPath = WHOLE
) -> Iterator[tuple[str, Kind, os.stat_result | None]]:
    """Every entry under ``inbox/under`` whose name ``watch.ignore`` does not hide, as its
    path relative to the inbox and its kind; an ignored folder is never entered, nor,
    unless ``watch.recursive`` (or ``under`` is given), any other.

    Each folder is opened from the inbox one name at a time, never through a symlink (the
    configured inbox itself may be one), and listed by its descriptor; it is given as a
    ``FOLDER`` with the ``fstat`` of its descriptor (a mount point's root, not the covered
    folder), and only if it could be opened. A package is given with its ``lstat`` (taken
    in its folder's descriptor); nothing else is ``stat``-ed: the kinds come from the
    listing itself (an uploader decides how many entries there are)."""
    ignored, package = matcher(watch.ignore), matcher(watch.patterns)
    deeper = watch.recursive or under != WHOLE
    pending = [under]
    while pending:
        folder = pending.pop()
        prefix = "" if folder == WHOLE else f"{folder}/"
        found: list[tuple[str, Kind, os.stat_result | None]] = []
        try:
            with open_folder(inbox, folder) as fd, os.scandir(fd) as entries:
                found.append((str(folder), Kind.FOLDER, os.fstat(fd)))
                for entry in entries:  # looked at while the folder is open: by its descriptor
                    name = entry.name
                    if ignored(name):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if deeper:
                                pending.append(folder / name)
                        elif not entry.is_file(follow_symlinks=False):
                            found.append((prefix + name, Kind.SPECIAL, None))
                        elif not package(name):
                            found.append((prefix + name, Kind.MISNAMED, None))
                        else:
                            info = entry.stat(follow_symlinks=False)
                            found.append((prefix + name, Kind.PACKAGE, info))
                    except OSError:
                        continue  # gone meanwhile
        except OSError:
            pass  # gone, unreadable, or a symlink by now: what was listed stands
        yield from found


def walk_files(inbox: Path, recursive: bool) -> Iterator[tuple[PurePosixPath, os.stat_result]]:
    """Every entry that is not a folder under ``inbox`` (or any configured folder), relative
    to it, with its lstat; symlinks are never followed, entries that vanish are skipped."""
    pending = [inbox]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as scan:
                entries = list(scan)
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            relative = PurePosixPath(os.path.relpath(entry.path, inbox))
            if stat.S_ISDIR(info.st_mode):
                if recursive:
                    pending.append(Path(entry.path))
                continue
            yield relative, info


def split_suffix(name: str) -> tuple[str, str]:
    for suffix in COMPOUND_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    stem, dot, suffix = name.rpartition(".")
    return (stem, dot + suffix) if stem else (name, "")


NAME_MAX = 255  # bytes in one name, on every filesystem Linux mounts
ROOM = len(".error.json") + len(".99999")  # what a filed name may still grow by


def fitting_name(name: str) -> str:
    """``name``, or, when the names made from it (``.N``, ``.error.json``) would not fit in a
    folder entry, its head, ``~``, ten hex digits of its SHA-1 and its suffix: another name
    for every long one, and short enough (the full name stays in the ledger and the error
    files). A name is any bytes: it is cut as bytes."""
    raw = os.fsencode(name)
    if len(raw) + ROOM <= NAME_MAX:
        return name
    stem, suffix = split_suffix(name)
    tail = f"~{hashlib.sha1(raw).hexdigest()[:10]}{suffix}"  # noqa: S324 - a name, not a secret
    keep = max(NAME_MAX - ROOM - len(os.fsencode(tail)), 1)
    head = os.fsencode(stem)[:keep]
    try:  # a UTF-8 name is cut between characters, not in one
        stem.encode("utf-8")
        return head.decode("utf-8", "ignore") + tail
    except UnicodeEncodeError:  # not UTF-8: bytes as they are
        return os.fsdecode(head) + tail


def free_path(folder: Path, relative: PurePosixPath) -> Path:
    """``folder/relative`` (its name made to fit, see :func:`fitting_name`), or the same name
    with the first free ``.N`` before its suffix. Looked up in the folder opened from
    ``folder`` one name at a time, never through a symlink (OSError ELOOP if one is there)."""
    name = fitting_name(relative.name)
    stem, suffix = split_suffix(name)
    try:
        with open_folder(folder, relative.parent) as parent:
            number = 0
            while _taken(parent, name):
                number += 1
                name = f"{stem}.{number}{suffix}"
    except FileNotFoundError:
        pass  # no such folder yet: every name in it is free
    return folder / relative.parent / name


def _taken(folder: int, name: str) -> bool:
    """A name with an entry of any kind, or the error files of a failed package (names fit,
    see :func:`fitting_name`: testing them never raises for their length)."""
    for taken in (name, name + ".error.json"):
        try:
            os.stat(taken, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            continue
        return True
    return False


@contextmanager
def open_folder(root: Path, relative: PurePosixPath, create: bool = False) -> Iterator[int]:
    """A descriptor of ``root/relative``, walked one name at a time from the configured
    ``root`` without following any symlink (uploaders own the inbox's sub-folders)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in relative.parts:
            inner = _enter(fd, part, create)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


class NotTheFile(OSError):
    """The name no longer holds the regular file that was judged (an uploader swapped in a
    symlink, a folder or another file): nothing was moved, or what was moved went back."""


def move(
    source_root: Path,
    source: PurePosixPath,
    target_root: Path,
    target: PurePosixPath,
    expected: tuple[int, int] | None = None,
) -> None:
    """Rename ``source_root/source`` to ``target_root/target``: within one filesystem, never
    over an existing name, never through a symlink, and durable.

    Raises FileExistsError when the target exists, and OSError (ELOOP, ENOTDIR) when a folder
    on either path is a symlink. The file's bytes are made durable first: its writer may never
    have synced them (``cp``), and what the daemon moves it then announces. One fsync of the
    target folder commits the rename (a single journal transaction on ext4 and XFS): the
    package is never in both folders after a power cut.

    ``expected`` (device, inode): only that regular file is moved. Anything else at the name,
    before the rename or swapped in between the look and the rename, raises
    :class:`NotTheFile`, and what the rename took goes back where it came from.
    """
    with (
        open_folder(source_root, source.parent) as source_folder,
        open_folder(target_root, target.parent, create=True) as target_folder,
    ):
        found = _sync_file(source_folder, source.name)
        if expected is not None and found != expected:
            raise NotTheFile(errno.ESTALE, "not the file that was judged", str(source))
        rename_noreplace_at(
            source_folder, os.fsencode(source.name), target_folder, os.fsencode(target.name)
        )
        if expected is not None:
            moved = os.stat(target.name, dir_fd=target_folder, follow_symlinks=False)
            if (moved.st_dev, moved.st_ino) != expected or not stat.S_ISREG(moved.st_mode):
                _put_back(target_folder, target.name, source_folder, source.name)
                raise NotTheFile(errno.ESTALE, "swapped during the move", str(source))
        os.fsync(target_folder)


def _put_back(folder: int, name: str, home: int, home_name: str) -> None:
    """Return an entry a move took by mistake to where it came from (a hidden name there if
    that name is taken again), so that nothing but judged files stays in our folders."""
    for back in (home_name, f".ymir-dropbox-returned-{os.urandom(4).hex()}-{home_name}"):
        try:
            rename_noreplace_at(folder, os.fsencode(name), home, os.fsencode(fitting_name(back)))
        except FileExistsError:
            continue
        os.fsync(home)
        return


def _enter(folder: int, name: str, create: bool) -> int:
    """A descriptor of the folder ``name`` in ``folder``, made if asked (and made again if a
    prune removed it between the two steps)."""
    for _ in range(3):
        if create:
            with suppress(FileExistsError):
                os.mkdir(name, dir_fd=folder)
                os.fsync(folder)  # the new folder's name, durable before anything goes in it
        try:
            return os.open(name, FOLDER_FLAGS, dir_fd=folder)
        except FileNotFoundError:
            if not create:
                raise
    return os.open(name, FOLDER_FLAGS, dir_fd=folder)


def prune_empty_folders(root: Path, relative: PurePosixPath) -> None:
    """Remove the folders on ``relative``'s way under ``root`` that a move left empty
    (processing/ keeps the inbox's sub-folders only while a package is in them): an empty
    ``processing/run.tar.gz/`` would otherwise stand for ever where a package of that name
    goes. Folders that are not empty, or not folders, stay."""
    for parent in relative.parents:
        if parent == PurePosixPath("."):
            return
        try:
            with open_folder(root, parent.parent) as folder:
                os.rmdir(parent.name, dir_fd=folder)
        except OSError:
            return


def _sync_file(folder: int, name: str) -> tuple[int, int] | None:
    """fsync a regular file by its name in ``folder``, never through a link, never blocking
    on a fifo, and return its (device, inode); None for a name that is gone (the rename says
    so) or holds no regular file."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=folder)  # ELOOP for a symlink: never moved
    except FileNotFoundError:
        return None  # the rename says so
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        os.fsync(fd)
        return info.st_dev, info.st_ino
    finally:
        os.close(fd)


ERROR_SUFFIXES = (".error.json", ".error.txt")


def remove_error_files(root: Path, package: PurePosixPath) -> None:
    """Remove the error files of ``root/package``, in the folder opened from ``root``."""
    try:
        with open_folder(root, package.parent) as folder:
            for suffix in ERROR_SUFFIXES:
                with suppress(FileNotFoundError):
                    os.unlink(package.name + suffix, dir_fd=folder)
    except FileNotFoundError:
        pass


def write_error_files(root: Path, package: PurePosixPath, attempt: Attempt) -> None:
    """``<name>.error.json`` (structured) and ``<name>.error.txt`` (for people) next to
    ``root/package``, written in the folder opened from ``root`` one name at a time: never
    through a symlink, whatever stands in failed/."""
    document = json.dumps(error_document(attempt), indent=2, ensure_ascii=False) + "\n"
    with open_folder(root, package.parent, create=True) as folder:
        write_atomically_at(folder, package.name + ".error.json", document.encode())
        write_atomically_at(folder, package.name + ".error.txt", error_text(attempt).encode())


def check_same_filesystem(config: Config) -> None:
    """Claims and settles are renames: inbox, processing, done and failed share one filesystem."""
    devices = {
        name: os.stat(getattr(config.paths, name)).st_dev
        for name in ("inbox", "processing", "done", "failed")
    }
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name}={getattr(config.paths, name)}" for name in devices)
        raise DropboxError(
            "inbox, processing, done and failed must be on one filesystem so that every move "
            f"is an atomic rename; they are not: {listing}"
        )
