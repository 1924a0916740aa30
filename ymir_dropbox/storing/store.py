"""Writing a package into YMIR's model store: ``<models>/<sha1 of the file>``, atomically.

The stored file is a standard gzip tar that YMIR reads with ``tarfile.open(path, 'r')``:
``<stage>/<file>`` for every stage file, ``attachments/<section>/<file>``, then the normalized
``ymir-info.yaml``. Member order, times, owners and the YAML are fixed, so the same package
content always yields the same bytes and the same model hash.

It takes one more pass over the package file, kept open since its validation, decompressed
again: each member goes straight into the new archive when its turn comes. The stored order is
by stage, the package's is its packer's, so a member that comes before its turn (or is stored
twice) waits in a spool file in the work folder; usually none does. Memory does not grow with
the package.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from isal import igzip

from ymir_dropbox.reading.archive import (
    CHUNK,
    INFO_NAME,
    ISAL_ERROR,
    FileIdentity,
    GzipReader,
    Member,
)
from ymir_dropbox.reading.normalization import dump_info
from ymir_dropbox.reading.validation import StoredFile, ValidationReport
from ymir_dropbox.storing.durable import finish_file, temporary_file
from ymir_dropbox.storing.gzip_output import GzipOutput

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
# Below this, a second thread for hashing and writing costs more than it saves.
THREAD_ABOVE_BYTES = 8 * 1024 * 1024


class PackageChanged(OSError):
    """The package file was written to between its validation and its storing: the import is
    retried, and validates it again."""


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _TarLayout:
    """The stored tar, member after member, exactly as ``tarfile`` (PAX format) writes it."""

    def __init__(self, output: GzipOutput) -> None:
        self.output = output
        self.offset = 0

    def add(
        self,
        name: str,
        size: int,
        readinto: Callable[[memoryview], int],
        tee: Callable[[memoryview], object] | None = None,
    ) -> None:
        header = _member(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self.output.write(header)
        if self.output.fill(readinto, size, tee) < size:
            raise PackageChanged(f"the package ends inside {name!r}, which validation read whole")
        padding = -size % BLOCK
        self.output.write(bytes(padding))
        self.offset += len(header) + size + padding

    def close(self) -> None:
        end = 2 * BLOCK
        end += -(self.offset + end) % RECORD
        self.output.write(bytes(end))


class _PackageStream:
    """The package decompressed again, read forward only."""

    def __init__(self, opened: BinaryIO) -> None:
        self.reader = GzipReader(opened, CHUNK)
        self.position = 0
        self.scratch = memoryview(bytearray(CHUNK))

    def readinto(self, view: memoryview) -> int:
        count: int = self.reader.readinto(view)
        self.position += count
        return count

    def skip_to(self, offset: int) -> None:
        while self.position < offset:
            if not self.readinto(self.scratch[: min(CHUNK, offset - self.position)]):
                raise PackageChanged("the package ends before a member that validation found")

    def check_to_the_end(self) -> None:
        """Read the rest: the gzip stream's CRC, at its end, covers the bytes just copied."""
        while self.readinto(self.scratch):
            pass

    def copy_to(self, target: BinaryIO, size: int) -> None:
        left = size
        while left:
            count = self.readinto(self.scratch[: min(CHUNK, left)])
            if not count:
                raise PackageChanged("the package ends inside a member that validation read whole")
            target.write(self.scratch[:count])
            left -= count


@contextmanager
def _as_validated(source: BinaryIO, identity: FileIdentity | None) -> Iterator[BinaryIO]:
    """The package file, from its start, checked to be in the state validated (no write since)
    before and after it is read again."""
    if identity is not None and FileIdentity.of(source.fileno()) != identity:
        raise PackageChanged("the package was written to after it was validated")
    source.seek(0)
    try:
        yield source
    except (EOFError, zlib.error, ISAL_ERROR, igzip.BadGzipFile) as error:
        raise PackageChanged(f"the package does not decompress as it did: {error}") from error
    if identity is not None and FileIdentity.of(source.fileno()) != identity:
        raise PackageChanged("the package was written to while it was stored")


def write_tar(
    report: ValidationReport, source: BinaryIO, target: BinaryIO, level: int, spool_folder: Path
) -> str:
    """Write the stored form of the validated package, open as ``source`` (the file validated:
    see ``validated``), to ``target``; return its SHA-1.

    Raises :class:`PackageChanged` (an ``OSError``) when the file was written to meanwhile.
    """
    assert report.normalized is not None
    output = GzipOutput(target, level, threaded=report.unpacked_bytes > THREAD_ABOVE_BYTES)
    try:
        with _as_validated(source, report.identity) as package:
            tar = _TarLayout(output)
            stream = _PackageStream(package)
            _copy_members(report.files, stream, tar, spool_folder)
            stream.check_to_the_end()
            info = dump_info(report.normalized)
            tar.add(INFO_NAME, len(info), io.BytesIO(info).readinto)
            tar.close()
        return output.finish()
    finally:
        output.stop()


def _copy_members(
    files: tuple[StoredFile, ...], package: _PackageStream, tar: _TarLayout, spool_folder: Path
) -> None:
    """Every stored file in its turn, in one forward pass over the package."""
    turns: dict[int, list[int]] = {}
    for index, stored in enumerate(files):
        turns.setdefault(stored.source.offset, []).append(index)
    sources: dict[int, Member] = {stored.source.offset: stored.source for stored in files}
    spooled: dict[int, int] = {}  # member offset -> where its bytes start in the spool
    done = 0
    with _LazySpool(spool_folder) as spool:
        for offset in sorted(sources):
            member = sources[offset]
            package.skip_to(offset)
            now = turns[offset][0] == done
            keep = len(turns[offset]) > 1 or not now
            if keep:
                spooled[offset] = spool.append_at()
            if now:
                tee = spool.file().write if keep else None
                tar.add(files[done].name, member.size, package.readinto, tee)
                done += 1
            else:
                package.copy_to(spool.file(), member.size)
            while done < len(files) and files[done].source.offset in spooled:
                stored = files[done]
                reader = spool.reader_at(spooled[stored.source.offset])
                tar.add(stored.name, stored.source.size, reader)
                done += 1
    assert done == len(files), "every stored file has its turn"


class _LazySpool:
    """A temporary file in the work folder, created only if a member has to wait."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.spool: BinaryIO | None = None

    def __enter__(self) -> _LazySpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.spool is not None:
            self.spool.close()

    def file(self) -> BinaryIO:
        if self.spool is None:
            self.spool = tempfile.TemporaryFile(dir=self.folder, prefix="spool-")  # noqa: SIM115
        return self.spool

    def append_at(self) -> int:
        return self.file().seek(0, os.SEEK_END)

    def reader_at(self, position: int) -> Callable[[memoryview], int]:
        spool = self.file()
        spool.flush()
        spool.seek(position)
        return spool.readinto  # type: ignore[attr-defined, no-any-return]


def store_package(
    report: ValidationReport,
    source: BinaryIO,
    models: Path,
    level: int,
    spool_folder: Path,
    before_rename: Callable[[str], None] = lambda model_hash: None,
) -> tuple[str, Path]:
    """Write the stored file under a temporary name, fsync, and rename it to its hash.

    A crash leaves at most a temporary file (removed by ``remove_temporaries`` at start),
    never a half file under a hash name. ``before_rename`` learns the hash before the file
    takes its name (the ledger records it: nothing in the store is unaccounted for). Returns
    the model hash and the stored path.
    """
    with temporary_file(models) as (target, temporary):
        model_hash = write_tar(report, source, target, level, spool_folder)
        before_rename(model_hash)
        stored = models / model_hash
        finish_file(target, temporary, stored)
    return model_hash, stored
