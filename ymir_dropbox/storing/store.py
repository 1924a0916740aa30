"""Writing a package into YMIR's model store: ``<models>/<sha1 of the file>``, atomically.

The stored file is a standard gzip tar that YMIR reads with ``tarfile.open(path, 'r')``:
``<stage>/<file>`` for every stage file, ``attachments/<section>/<file>``, then the normalized
``ymir-info.yaml``. Member order (the document's: see ``stored_files``), times, owners and the
YAML are fixed, so the same files, packed in any order, always yield the same bytes and the
same model hash.

The store is written in the pass that validates the package (:class:`StreamedStore`, a sink
of the scan): each member goes straight into the stored archive when its turn comes, or, if
it comes before its turn (or is stored twice), into a spool file in the work folder, written
out at its turn. Members before ``ymir-info.yaml`` wait in the spool too, up to
``SPOOL_BEFORE_INFO`` bytes. Past that, or when the package turns out other than the pass
assumed (a stage's file at the root, then under the stage's folder), the pass gives up, and a
package that validation accepts is read once more from the same open file, with its plan
known (:func:`write_tar`). Memory does not grow with the package.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from isal import igzip

from ymir_dropbox.reading.archive import (
    CHUNK,
    INFO_NAME,
    ISAL_ERROR,
    THREAD_ABOVE_BYTES,
    FileIdentity,
    GzipReader,
    Member,
)
from ymir_dropbox.reading.normalization import dump_info
from ymir_dropbox.reading.validation import (
    ATTACHMENTS,
    InfoJudgement,
    ValidationReport,
    stored_files,
)
from ymir_dropbox.storing.durable import finish_file, temporary_file
from ymir_dropbox.storing.gzip_output import GzipOutput

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
# Members that come before ymir-info.yaml wait in the spool up to this; past it, the package
# is stored in a second pass instead.
SPOOL_BEFORE_INFO = 256 * 1024 * 1024


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


class _Spool:
    """A temporary file in the work folder, created only if a member has to wait its turn;
    members are appended, and read back from where each starts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.spool: BinaryIO | None = None
        self.bytes = 0

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def _file(self) -> BinaryIO:
        if self.spool is None:
            self.spool = tempfile.TemporaryFile(dir=self.folder, prefix="spool-")  # noqa: SIM115
        return self.spool

    def end(self) -> int:
        """Where the next bytes appended will start."""
        return self._file().seek(0, os.SEEK_END)

    def write(self, data: memoryview) -> None:
        self._file().write(data)
        self.bytes += len(data)

    def append(self, readinto: Callable[[memoryview], int], size: int) -> int:
        """Append ``size`` bytes from ``readinto``; where they start."""
        start = self.end()
        scratch = memoryview(bytearray(min(CHUNK, size)))
        left = size
        while left:
            count = readinto(scratch[: min(CHUNK, left)])
            if not count:
                raise PackageChanged("the package ends inside a member that validation read whole")
            self.write(scratch[:count])
            left -= count
        return start

    def reader_at(self, position: int) -> Callable[[memoryview], int]:
        spool = self._file()
        spool.flush()
        spool.seek(position)
        return spool.readinto  # type: ignore[attr-defined, no-any-return]


@dataclass(slots=True)
class _Slot:
    """One file of the stored archive: its name, the member its bytes come from once known,
    and where they wait in the spool, if they do."""

    name: str
    source: Member | None = None
    spooled_at: int | None = None


class _Builder:
    """The stored tar, file after file in the stored order, from members given in the
    package's order."""

    def __init__(self, output: GzipOutput, spool: _Spool, slots: list[_Slot]) -> None:
        self.tar = _TarLayout(output)
        self.spool = spool
        self.slots = slots
        self.done = 0  # how many slots are written
        self.ahead: list[Member] = []  # written before the stored order was known

    def write_ahead(self, member: Member, readinto: Callable[[memoryview], int]) -> None:
        """Write a member under its own name before the stored order is known, betting that
        it is the next stored file (see :meth:`plan`)."""
        self.tar.add(member.name, member.size, readinto)
        self.ahead.append(member)

    def plan(self, slots: list[_Slot]) -> bool:
        """Take the stored order; whether the members written ahead are its first files."""
        self.slots = slots
        if [slot.name for slot in slots[: len(self.ahead)]] != [m.name for m in self.ahead]:
            return False
        for slot, member in zip(slots, self.ahead, strict=False):
            slot.source = member
        self.done = len(self.ahead)
        return True

    @property
    def complete(self) -> bool:
        return self.done == len(self.slots)

    def give(
        self, member: Member, readinto: Callable[[memoryview], int], takers: list[_Slot]
    ) -> None:
        """Write the member for every slot that takes it: straight out if one of them is the
        next to write, into the spool for the others."""
        if not takers:
            return
        following = self.slots[self.done] if not self.complete else None
        now = any(slot is following for slot in takers)
        later = [slot for slot in takers if slot is not following]
        for slot in takers:
            slot.source = member
        if later:
            start = self.spool.end()
            for slot in later:
                slot.spooled_at = start
        if following is not None and now:
            tee = self.spool.write if later else None
            self.tar.add(following.name, member.size, readinto, tee)
            self.done += 1
        else:
            self.spool.append(readinto, member.size)
        self.drain()

    def drain(self) -> None:
        """Write every slot, from the next on, whose bytes wait in the spool."""
        while not self.complete and (slot := self.slots[self.done]).spooled_at is not None:
            assert slot.source is not None
            self.tar.add(slot.name, slot.source.size, self.spool.reader_at(slot.spooled_at))
            self.done += 1

    def finish(self, normalized: dict[str, object]) -> None:
        info = dump_info(normalized)
        self.tar.add(INFO_NAME, len(info), io.BytesIO(info).readinto)
        self.tar.close()


class _PackageStream:
    """The package decompressed again, read forward only."""

    def __init__(self, opened: BinaryIO | io.RawIOBase) -> None:
        self.reader = GzipReader(cast(BinaryIO, opened), CHUNK)
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


class _Hashed(io.RawIOBase):
    """The package file read again, its sha256 computed on the way."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count: int = self.source.readinto(buffer)  # type: ignore[attr-defined]
        self.digest.update(memoryview(buffer)[:count])
        return count

    def rest(self) -> str:
        """Read what the gzip stream left (nothing, or trailing zeros) and give the sha256."""
        while chunk := self.source.read(CHUNK):
            self.digest.update(chunk)
        return self.digest.hexdigest()


@contextmanager
def _as_validated(source: BinaryIO, identity: FileIdentity | None) -> Iterator[BinaryIO]:
    """The package file, from its start, checked to be in the state validated (no write since)
    before and after it is read again. Not by its ctime: the path may have been deleted or
    replaced meanwhile, and what is read is hashed again (:class:`_Hashed`)."""
    if identity is not None and not identity.unchanged(source.fileno(), by_ctime=False):
        raise PackageChanged("the package was written to after it was validated")
    source.seek(0)
    try:
        yield source
    except (EOFError, zlib.error, ISAL_ERROR, igzip.BadGzipFile) as error:
        raise PackageChanged(f"the package does not decompress as it did: {error}") from error
    if identity is not None and not identity.unchanged(source.fileno(), by_ctime=False):
        raise PackageChanged("the package was written to while it was stored")


def write_tar(
    report: ValidationReport, source: BinaryIO, target: BinaryIO, level: int, spool_folder: Path
) -> str:
    """Write the stored form of the validated package, open as ``source`` (the file validated:
    see ``validated``), to ``target`` in one more pass over it; return its SHA-1.

    Raises :class:`PackageChanged` (an ``OSError``) when the file was written to meanwhile.
    """
    assert report.normalized is not None
    output = GzipOutput(target, level, threaded=report.unpacked_bytes > THREAD_ABOVE_BYTES)
    try:
        with _as_validated(source, report.identity) as package, _Spool(spool_folder) as spool:
            slots = [_Slot(stored.name) for stored in report.files]
            takers: dict[Member, list[_Slot]] = {}
            for stored, slot in zip(report.files, slots, strict=True):
                takers.setdefault(stored.source, []).append(slot)
            builder = _Builder(output, spool, slots)
            hashed = _Hashed(package)
            stream = _PackageStream(hashed)
            for member in sorted(takers, key=lambda member: member.offset):
                stream.skip_to(member.offset)
                builder.give(member, stream.readinto, takers[member])
            stream.check_to_the_end()
            if report.sha256 is not None and hashed.rest() != report.sha256:
                # Written back to the state validated (size and mtime restored through a
                # hidden hard link, say): never store other bytes under the judged sha256.
                raise PackageChanged("the package's bytes are not the ones validated")
            assert builder.complete, "every stored file has its turn"
            builder.finish(report.normalized)
        return output.finish()
    finally:
        output.stop()


class StreamedStore:
    """The stored archive, written while validation reads the package (a ``PackageSink``)
    into a temporary file in the model store; :meth:`commit` gives it its name.

    It judges nothing: it writes what the package would store if valid, and :meth:`commit`
    keeps it only if it is exactly what the validation report plans.
    """

    def __init__(
        self,
        models: Path,
        target: BinaryIO,
        temporary: Path,
        level: int,
        spool_folder: Path,
        package_bytes: int,
    ) -> None:
        self.models = models
        self.target = target
        self.temporary = temporary
        self.level = level
        self.spool_folder = spool_folder
        self.output = GzipOutput(target, level, threaded=package_bytes > THREAD_ABOVE_BYTES)
        self.spool = _Spool(spool_folder)
        self.builder = _Builder(self.output, self.spool, [])
        self.planned = False
        self.by_candidate: dict[str, list[tuple[int, _Slot]]] = {}
        self.early: list[tuple[Member, int]] = []  # members before ymir-info.yaml, spooled
        self.ahead_key: tuple[int, str] = (0, "")
        self.gave_up: str | None = None

    def info(self, judged: InfoJudgement) -> None:
        if self.gave_up is not None:
            return
        if judged.info is None or judged.errors:
            self._give_up(f"{INFO_NAME} is not valid")
            return
        slots = []
        for planned in stored_files(judged.info):
            slot = _Slot(planned.name)
            slots.append(slot)
            for rank, candidate in enumerate(planned.candidates):
                self.by_candidate.setdefault(candidate, []).append((rank, slot))
        self.planned = True
        if not self.builder.plan(slots):
            self._give_up("the files written ahead do not begin the stored order")
            return
        for early, start in self.early:
            takers = self._takers(early)
            if takers is None:
                self._give_up(f"{early.name!r} comes after the root file that took its place")
                return
            for slot in takers:
                slot.source, slot.spooled_at = early, start
        self.early.clear()
        try:
            self.builder.drain()
        except OSError as error:
            self._give_up(f"the store cannot be written: {error}")

    def member(self, member: Member, readinto: Callable[[memoryview], int]) -> None:
        if self.gave_up is not None:
            return
        failed_read: list[OSError] = []

        def read(view: memoryview) -> int:
            try:
                return readinto(view)
            except OSError as error:
                failed_read.append(error)
                raise

        try:
            self._take(member, read)
        except OSError as error:
            if failed_read:
                raise  # the package cannot be read: the import cannot go on
            # The store cannot be written (full, read-only): validation goes on, and the
            # package's own faults are still its verdict. A valid one is stored again after.
            self._give_up(f"the store cannot be written: {error}")

    def _take(self, member: Member, readinto: Callable[[memoryview], int]) -> None:
        if not self.planned:
            key = _stored_order_key(member.name)
            if key is not None and key >= self.ahead_key:
                self.ahead_key = key
                self.builder.write_ahead(member, readinto)
                return
            if self.spool.bytes + member.size > SPOOL_BEFORE_INFO:
                self._give_up(f"more than {SPOOL_BEFORE_INFO} bytes come before {INFO_NAME}")
                return
            self.early.append((member, self.spool.append(readinto, member.size)))
            return
        takers = self._takers(member)
        if takers is None:
            self._give_up(f"{member.name!r} comes after the root file that took its place")
            return
        self.builder.give(member, readinto, takers)

    def _takers(self, member: Member) -> list[_Slot] | None:
        """The slots the member fills: each it is the first candidate of, and each it is the
        second candidate of (a stage's file at the root) while no first candidate was seen.
        None when the member is the first candidate of a slot a second one already took."""
        takers = []
        for rank, slot in self.by_candidate.get(member.name, ()):
            if slot.source is None:
                takers.append(slot)
            elif rank == 0:
                return None
        return takers

    def _give_up(self, reason: str) -> None:
        """Write no more; free the space written so far (the disk may be full)."""
        self.gave_up = reason
        self.close()
        with contextlib.suppress(OSError):  # commit writes it again from the start anyway
            os.ftruncate(self.target.fileno(), 0)

    def commit(
        self,
        report: ValidationReport,
        source: BinaryIO,
        before_rename: Callable[[str], None] = lambda model_hash: None,
    ) -> tuple[str, Path]:
        """Give the stored file its name, ``<models>/<sha1>``, once ``before_rename`` has
        learnt it; return both. The archive written in the pass is kept if it is the one the
        (valid) ``report`` plans; if not, it is written again, from ``source``."""
        assert report.ok and report.normalized is not None
        if self._as_planned(report):
            self.builder.finish(report.normalized)
            model_hash = self.output.finish()
            # Hashed and stored from two reads of the file: no write between them, not even
            # one that set the mtime back (the file sits in processing/ under its one name).
            if report.identity is not None and not report.identity.unchanged(
                source.fileno(), by_ctime=True
            ):
                raise PackageChanged("the package was written to while it was stored")
        else:  # write_tar checks the file itself
            self.close()
            self.target.seek(0)
            self.target.truncate()
            model_hash = write_tar(report, source, self.target, self.level, self.spool_folder)
        before_rename(model_hash)
        stored = self.models / model_hash
        finish_file(self.target, self.temporary, stored)
        return model_hash, stored

    def _as_planned(self, report: ValidationReport) -> bool:
        if self.gave_up is not None or not self.planned or not self.builder.complete:
            return False
        written = [(slot.name, slot.source) for slot in self.builder.slots]
        return written == [(stored.name, stored.source) for stored in report.files]

    def close(self) -> None:
        self.spool.close()
        self.output.stop()


def _stored_order_key(name: str) -> tuple[int, str] | None:
    """Where a member would come in the stored order if it is stored under its own name (a
    stage's file in the stage's folder, an attachment): stages by name, then attachments by
    section; None for a member that cannot be (at the root, deeper in folders)."""
    parts = name.split("/")
    if len(parts) == 2 and parts[0] != ATTACHMENTS:
        return (0, parts[0])
    if len(parts) == 3 and parts[0] == ATTACHMENTS:
        return (1, parts[1])
    return None


@contextmanager
def streamed_store(
    models: Path, level: int, spool_folder: Path, package_bytes: int
) -> Iterator[StreamedStore | None]:
    """A :class:`StreamedStore` for one package of ``package_bytes``, or None when the store
    cannot be written now (validation goes on without it); its temporary file is removed
    unless committed."""
    with ExitStack() as stack:
        try:
            target, temporary = stack.enter_context(temporary_file(models))
        except OSError:
            yield None
            return
        stack.callback(temporary.unlink, missing_ok=True)  # gone already once committed
        try:
            store = StreamedStore(models, target, temporary, level, spool_folder, package_bytes)
        except OSError:
            yield None
            return
        try:
            yield store
        finally:
            store.close()


def store_package(
    report: ValidationReport,
    source: BinaryIO,
    models: Path,
    level: int,
    spool_folder: Path,
    before_rename: Callable[[str], None] = lambda model_hash: None,
) -> tuple[str, Path]:
    """Write the stored file of a validated package under a temporary name, in one more pass
    over ``source``; fsync, and rename it to its hash.

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
