"""Write a package as a stream: ``ymir-info.yaml`` first, then each file read straight into
the gzip chunks, so a 1.5 GB ``best.pt`` costs a chunk or two of memory, never its size.

The gzip stream is the daemon's own (:class:`~ymir_dropbox.storing.gzip_output.GzipOutput`):
chunks of weights that would not shrink are stored, not compressed, which is what a package
of weights is mostly made of.
"""

from __future__ import annotations

import os
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.reading.archive import INFO_NAME, THREAD_ABOVE_BYTES
from ymir_dropbox.storing.gzip_output import GzipOutput

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


class SourceChanged(DropboxError):
    """A file changed while it was packed (a training that is still running)."""


class _TarStream:
    """Tar members (PAX format, as ``tarfile`` writes them) into a gzip stream."""

    def __init__(self, output: GzipOutput) -> None:
        self.output = output
        self.offset = 0

    def _header(self, name: str, size: int, mtime: int) -> None:
        member = tarfile.TarInfo(name)
        member.size, member.mtime, member.mode = size, mtime, 0o644
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        header = member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self.output.write(header)
        self.offset += len(header)

    def _pad(self, size: int) -> None:
        padding = -size % BLOCK
        self.output.write(bytes(padding))
        self.offset += size + padding

    def add_bytes(self, name: str, data: bytes, mtime: int) -> None:
        self._header(name, len(data), mtime)
        self.output.write(data)
        self._pad(len(data))

    def add_file(self, name: str, path: Path) -> None:
        """The file's bytes as they are now; refused if it changes while it is read."""
        with path.open("rb", buffering=0) as source:
            before = os.fstat(source.fileno())
            self._header(name, before.st_size, int(before.st_mtime))

            def readinto(view: memoryview) -> int:
                return source.readinto(view) or 0

            read = self.output.fill(readinto, before.st_size)
            after = os.fstat(source.fileno())
        if read < before.st_size or (after.st_size, after.st_mtime_ns) != (
            before.st_size,
            before.st_mtime_ns,
        ):
            raise SourceChanged(
                f"{path} changed while it was packed (is the training still writing it?); "
                "nothing written"
            )
        self._pad(before.st_size)

    def close(self) -> None:
        end = 2 * BLOCK
        end += -(self.offset + end) % RECORD
        self.output.write(bytes(end))


def write_package(
    target: BinaryIO, info: bytes, members: Sequence[tuple[str, Path]], level: int
) -> None:
    """``ymir-info.yaml`` (``info``) then each ``(member name, file)``, as a gzip tar."""
    total = sum(path.stat().st_size for _, path in members)
    output = GzipOutput(target, level, threaded=total > THREAD_ABOVE_BYTES)
    try:
        tar = _TarStream(output)
        tar.add_bytes(INFO_NAME, info, int(time.time()))
        for name, path in members:
            tar.add_file(name, path)
        tar.close()
        output.finish()
    finally:
        output.stop()
