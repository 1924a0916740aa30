"""Two Linux system calls the standard library does not wrap, through ctypes."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_SYNC_FILE_RANGE_WRITE = 2


def rename_noreplace(source: Path, target: Path) -> None:
    """``rename`` that fails with FileExistsError instead of replacing ``target``, atomically
    where the kernel and filesystem offer ``renameat2(RENAME_NOREPLACE)``."""
    rename_noreplace_at(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target))


def rename_noreplace_at(source_dir: int, source: bytes, target_dir: int, target: bytes) -> None:
    """The same, for names relative to open folders (``renameat2``): no path is resolved
    again, so no folder swapped for a symlink meanwhile is ever followed."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(source_dir, source, target_dir, target, _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), os.fsdecode(source), None, os.fsdecode(target))
    try:
        os.stat(
            target, dir_fd=target_dir if target_dir != _AT_FDCWD else None, follow_symlinks=False
        )
    except FileNotFoundError:
        os.rename(
            source,
            target,
            src_dir_fd=source_dir if source_dir != _AT_FDCWD else None,
            dst_dir_fd=target_dir if target_dir != _AT_FDCWD else None,
        )
        return
    raise FileExistsError(errno.EEXIST, "not replacing an existing file", os.fsdecode(target))


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range of a file to disk, without waiting: the final
    fsync of a large file then finds most of it written. Does nothing where unsupported."""
    sync_file_range = getattr(_libc, "sync_file_range", None)
    if sync_file_range is not None:
        sync_file_range(
            ctypes.c_int(fd),
            ctypes.c_longlong(offset),
            ctypes.c_longlong(length),
            ctypes.c_uint(_SYNC_FILE_RANGE_WRITE),
        )
