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
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is not None:
        done = renameat2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
        )
        if done == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), str(source), None, str(target))
    if target.exists() or target.is_symlink():
        raise FileExistsError(errno.EEXIST, "not replacing an existing file", str(target))
    os.rename(source, target)


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
