"""Reading a package safely: a streaming pass over the gzip tar, nothing extracted.

The pass checks the container and every member header against the limits and keeps the
bytes of ``ymir-info.yaml`` (at most 1 MiB). Every read is bounded: the decompressed stream
is read in 1 MiB pieces at most, tar headers through :mod:`tar_headers`, whose extended
headers are capped before they are read. The package's sha256 is computed in a second thread
while the first decompresses, unless the caller already knows it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import math
import os
import re
import stat
import threading
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, cast

from isal import igzip, isal_zlib

from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.hints import HEAD_BYTES, what_the_file_is
from ymir_dropbox.reading.names import SLASH_LOOKALIKES, is_control
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.reading.tar_headers import TarEntry, TarReader, TarStop

# isal raises its own error for bad deflate data where zlib raises zlib.error
ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]
# The gzip reader igzip's own GzipFile is built on; its readinto fills a caller's buffer.
GzipReader = isal_zlib._GzipReader

INFO_NAME = "ymir-info.yaml"
MAX_INFO_BYTES = 1024 * 1024
MAX_MEMBER_NAME_BYTES = 4096
MAX_PROBLEMS_PER_CODE = 20
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1024 * 1024
HASH_CHUNK = 4 * 1024 * 1024
# Below this a second thread costs more than it saves.
THREAD_ABOVE_BYTES = 8 * 1024 * 1024
# Ratios are only judged once this many bytes are unpacked: a tiny package always has a high
# ratio (tar headers and padding compress well) and cannot hurt anyone.
RATIO_GRACE_BYTES = 1024 * 1024
DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True, slots=True)
class Member:
    """A regular file in the archive: its cleaned name, size and where its data starts."""

    name: str
    size: int
    offset: int
    mtime: int


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What tells one state of an open file from another: a write changes its size or its
    mtime, and its ctime, which no one can set back (``utime`` moves it too). The ctime also
    moves when the file is renamed, linked or unlinked, without a byte changed: so it is
    looked at only where nothing of the kind happens (see :meth:`unchanged`)."""

    device: int
    inode: int
    size: int
    modified_ns: int
    changed_ns: int

    @classmethod
    def of(cls, fd: int) -> FileIdentity:
        found = os.fstat(fd)
        return cls(found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)

    def unchanged(self, fd: int, by_ctime: bool) -> bool:
        """Whether the open file ``fd`` is still in this state: by its size and mtime, and,
        ``by_ctime``, by its ctime (a write whose mtime was set back shows there), unless the
        file has lost its last name (an unlink moves the ctime: what it held is still read)."""
        found = os.fstat(fd)
        if (found.st_size, found.st_mtime_ns) != (self.size, self.modified_ns):
            return False
        return not by_ctime or found.st_nlink == 0 or found.st_ctime_ns == self.changed_ns


class Holder(StrEnum):
    """What problems call the package's files: an archive's members, or (``validate DIR``,
    ``pack DIR``) the files of the folder the archive scanned was packed from."""

    ARCHIVE = "archive"
    FOLDER = "folder"

    @property
    def items(self) -> str:
        return "members" if self is Holder.ARCHIVE else "files"


@dataclass(slots=True)
class ArchiveScan:
    """What one pass over a package found."""

    holder: Holder = Holder.ARCHIVE
    package_bytes: int = 0
    unpacked_bytes: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    info: bytes | None = None
    sha256: str | None = None
    identity: FileIdentity | None = None
    info_member: Member | None = None
    problems: list[Problem] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)

    def has(self, code: str) -> bool:
        return code in self._counts

    def add(self, code: str, field_name: str, message: str) -> None:
        """Record a problem; past a few of one kind, only count them (a tar of 10,000 links)."""
        seen = self._counts.get(code, 0)
        self._counts[code] = seen + 1
        if seen < MAX_PROBLEMS_PER_CODE:
            self.problems.append(Problem(code, field_name, message))
        elif seen == MAX_PROBLEMS_PER_CODE:
            self.problems.append(Problem(code, "", f"more members with the same problem ({code})"))


class MemberSink(Protocol):
    """Takes the members' bytes as the scan reads them, so that a package can be stored in the
    same pass that validates it. It is given every member the checks let through (a plain
    file, with a safe name, seen once), in archive order. It decides nothing: the report does.
    """

    def info(self, member: Member, data: bytes) -> None:
        """``ymir-info.yaml`` was read (at most ``MAX_INFO_BYTES``)."""

    def member(self, member: Member, readinto: Callable[[memoryview], int]) -> None:
        """Another member: ``readinto`` reads its data on from where it is, returning 0 at
        its end. The sink may read all of it, part or none; the scan passes over the rest."""


class _Stop(Exception):
    """The scan has seen enough: a limit was hit and reading on would only cost."""


class PackageUnreadable(OSError):
    """The package could not be opened; not a fault of its content."""


@contextmanager
def open_package(path: Path, dir_fd: int | None = None) -> Iterator[io.BufferedReader]:
    """Open a package without following a symlink and without blocking on a fifo (``path``
    relative to the open folder ``dir_fd``, if given)."""
    with opened_package(path, dir_fd) as stream:
        yield stream


def opened_package(path: Path, dir_fd: int | None = None) -> io.BufferedReader:
    """:func:`open_package`, for a caller that closes the file itself (it may outlive the
    block that opened it)."""
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise PackageUnreadable(f"{path} is a symlink; it is never followed") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PackageUnreadable(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return cast(io.BufferedReader, open(fd, "rb", buffering=CHUNK))
    except BaseException:
        os.close(fd)
        raise


def package_sha256(path: Path) -> str:
    """The sha256 of the package file, as fast as hashlib goes (see :func:`file_sha256`)."""
    with open_package(path) as opened:
        return file_sha256(opened)


def file_sha256(opened: io.BufferedReader, size: int | None = None) -> str:
    """The sha256 of an open package file, from its start (of its first ``size`` bytes, if
    given: what it held when it was looked at, however a writer extends it), in large reads
    into one buffer; the file's position moves along, for whoever shows progress.

    Enough to recognise a package already imported before validating it: then give it to
    :func:`scan_file` (or ``validate_file``) as ``sha256`` and it is not hashed again.
    """
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    opened.seek(0)
    left = size
    while count := opened.readinto(buffer if left is None else view[: min(left, HASH_CHUNK)]):
        digest.update(view[:count])
        if left is not None:
            left -= count
    return digest.hexdigest()


class _Sha256Reader:
    """Reads a file on its own (``pread``: the file's position is left to others) and hashes
    it; run in a second thread while the first decompresses, it costs little time on two
    cores: hashlib and the reads release the GIL, and the bytes it hashes were read into its
    own core's cache rather than copied there from the other's."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = hashlib.sha256()
        self.stopped = False
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def run(self) -> str:
        buffer = bytearray(HASH_CHUNK)
        view = memoryview(buffer)
        offset = 0
        while not self.stopped and (count := os.preadv(self.fd, [buffer], offset)):
            self.digest.update(view[:count])
            offset += count
        return self.digest.hexdigest()

    def start(self) -> _Sha256Reader:
        self.thread = threading.Thread(target=self._run_caught, name="package-sha256", daemon=True)
        self.thread.start()
        return self

    def _run_caught(self) -> None:
        try:
            self.run()
        except BaseException as error:
            self.error = error

    def stop(self) -> None:
        self.stopped = True
        if self.thread is not None:
            self.thread.join()

    def hexdigest(self) -> str:
        """Wait for the thread; the sha256 of the whole file."""
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()


class _Inflated:
    """The decompressed stream, read forward only and never more than 1 MiB at a time, with
    the ratio enforced as it goes."""

    def __init__(self, reader: GzipReader, ceiling: int) -> None:
        self.reader = reader
        self.ceiling = ceiling
        self.position = 0
        self.buffer = bytearray(CHUNK)
        self.scratch = memoryview(self.buffer)

    def _advance(self, count: int) -> None:
        self.position += count
        if self.position > self.ceiling:
            raise _Stop("ratio")

    def read(self, size: int) -> bytes:
        if size > MAX_INFO_BYTES:
            raise ValueError(f"reads are bounded: {size} bytes asked")
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size and (count := self.reader.readinto(view[got:])):
            got += count
        self._advance(got)
        return bytes(view[:got])

    def readinto(self, view: memoryview) -> int:
        count: int = self.reader.readinto(view[:CHUNK])
        self._advance(count)
        return count

    def skip(self, size: int) -> int:
        left = size
        while left and (count := self.reader.readinto(self.scratch[: min(left, CHUNK)])):
            left -= count
            self._advance(count)
        return size - left

    def rest_is_zeros(self) -> bool:
        """Read to the end of the gzip stream (which checks its CRC); whether only zeros came."""
        while count := self.reader.readinto(self.scratch):
            self._advance(count)
            if self.buffer.count(0, 0, count) != count:
                return False
        return True


def clean_member_name(raw: str) -> tuple[str | None, tuple[str, str] | None]:
    """The member's name without ``./`` and trailing ``/``, or why it is unsafe (code, reason)."""
    if not raw or raw in {".", "./"}:
        return None, ("tar.bad_name", "the member name is empty")
    if len(raw.encode("utf-8", "surrogateescape")) > MAX_MEMBER_NAME_BYTES:
        return None, (
            "tar.bad_name",
            f"the member name is longer than {MAX_MEMBER_NAME_BYTES} bytes",
        )
    if any(0xDC80 <= ord(char) <= 0xDCFF for char in raw):
        return None, ("tar.bad_name", "the member name is not valid UTF-8")
    if any(is_control(char) for char in raw):
        return None, (
            "tar.bad_name",
            "the member name holds control characters or characters that reorder text",
        )
    folded = unicodedata.normalize("NFKC", raw).translate(SLASH_LOOKALIKES)
    if folded.startswith("/") or DRIVE.match(folded):
        return None, ("tar.absolute_path", "the member name is an absolute path")
    if ".." in folded.split("/"):
        return None, ("tar.path_traversal", "the member name climbs out with '..'")
    if folded.count("/") != raw.replace("\\", "/").count("/"):
        return None, ("tar.path_traversal", "the member name uses a look-alike of '/'")
    if "\\" in raw:
        return None, ("tar.bad_name", "the member name holds a backslash")
    parts = [part for part in raw.split("/") if part not in {"", "."}]
    if not parts:
        return None, ("tar.bad_name", "the member name is empty")
    if any(len(part.encode("utf-8")) > 255 for part in parts):
        return None, ("tar.bad_name", "a component of the member name is longer than 255 bytes")
    return "/".join(parts), None


def scan_package(
    path: Path, limits: Limits, *, sha256: str | None = None, holder: Holder = Holder.ARCHIVE
) -> ArchiveScan:
    """Check the package at ``path`` in one streaming pass (see :func:`scan_file`)."""
    with open_package(path) as opened:
        return scan_file(opened, limits, sha256=sha256, holder=holder)


def scan_file(
    opened: io.BufferedReader,
    limits: Limits,
    *,
    sha256: str | None = None,
    sink: MemberSink | None = None,
    hashed: bool = True,
    holder: Holder = Holder.ARCHIVE,
) -> ArchiveScan:
    """Check an open package file, from its start, in one streaming pass. Problems are
    collected, never raised.

    The same pass computes the package's sha256 (of every file, even one over the limits),
    unless ``sha256`` is given (see :func:`file_sha256`): then it is trusted, and the file is
    read no further than the checks need; so it is when not ``hashed`` (the sha256 is then
    None: a check that stores nothing needs none). Each member that passes the checks is
    given to ``sink``, if set, as it is read. Raises ``OSError`` only when the file cannot be
    read (or the sink cannot write). Problems name the package's files as ``holder``'s.
    """
    scan = ArchiveScan(holder)
    opened.seek(0)
    scan.identity = FileIdentity.of(opened.fileno())
    scan.package_bytes = scan.identity.size
    if sha256 is not None or not hashed:
        scan.sha256 = sha256
        _scan_container(opened, scan, limits, sink)
        return scan
    hashing = _Sha256Reader(opened.fileno())
    if scan.package_bytes > THREAD_ABOVE_BYTES:
        hashing.start()
    try:
        _scan_container(opened, scan, limits, sink)
    except BaseException:
        hashing.stop()
        raise
    # The sha256 covers the whole file, even when the checks stopped early.
    scan.sha256 = hashing.hexdigest() if hashing.thread is not None else hashing.run()
    return scan


def _scan_container(
    source: io.BufferedReader, scan: ArchiveScan, limits: Limits, sink: MemberSink | None
) -> None:
    if scan.package_bytes > limits.max_package_bytes:
        scan.add(
            "package.too_large",
            "",
            f"the package is {scan.package_bytes} bytes, over the limit of "
            f"{limits.max_package_bytes} (limits.max_package_bytes)",
        )
        return
    if source.peek(2)[:2] != GZIP_MAGIC:
        reason = "the file is empty" if scan.package_bytes == 0 else "no gzip magic bytes"
        what = what_the_file_is(os.pread(source.fileno(), HEAD_BYTES, 0))
        found = f" ({reason})" if what is None else f": {what}"
        scan.add("container.not_gzip", "", f"the file is not gzip-compressed{found}")
        return
    ceiling = max(int(limits.max_ratio * scan.package_bytes), RATIO_GRACE_BYTES)
    inflated = _Inflated(GzipReader(source, CHUNK), ceiling)
    try:
        _scan_members(TarReader(inflated), scan, limits, sink)
        if not inflated.rest_is_zeros() and not scan.has("container.trailing_data"):
            scan.add(
                "container.trailing_data",
                "",
                "data follows the end of the tar archive (a second archive appended?)",
            )
    except _Stop as stop:
        if str(stop) == "ratio":
            scan.add(
                "tar.compression_ratio",
                "",
                f"the package unpacks to more than {limits.max_ratio:g} times its size "
                f"of {scan.package_bytes} bytes (limits.max_ratio); a compression bomb?",
            )
    except TarStop as stop:
        scan.add(stop.code, stop.field, stop.message)
    except EOFError:
        scan.add("container.truncated", "", "the gzip stream is truncated (ends too early)")
    except (zlib.error, ISAL_ERROR, igzip.BadGzipFile) as error:
        scan.add("container.corrupt", "", f"the gzip stream is corrupt: {error}")


def _scan_members(
    tar: TarReader, scan: ArchiveScan, limits: Limits, sink: MemberSink | None
) -> None:
    seen: set[str] = set()
    try:
        for entry in tar:
            if tar.members > limits.max_members:
                scan.add(
                    "tar.too_many_members",
                    "",
                    f"the {scan.holder} has more than {limits.max_members} "
                    f"{scan.holder.items} (limits.max_members)",
                )
                raise _Stop("members")
            if entry.is_dir and entry.name in {".", "./"}:
                continue  # what `tar -czf package.tar.gz .` writes first
            shown = entry.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            name, reason = clean_member_name(entry.name)
            if reason is not None:
                scan.add(reason[0], shown, f"member {shown!r}: {reason[1]}")
                continue
            assert name is not None
            if not _a_plain_file(entry, name, scan):
                continue
            if name in seen:
                scan.add("tar.duplicate_member", name, f"member {name!r} appears more than once")
                continue
            seen.add(name)
            scan.unpacked_bytes += entry.size
            if scan.unpacked_bytes > limits.max_unpacked_bytes:
                scan.add(
                    "tar.too_large_unpacked",
                    "",
                    f"{_unpacked(scan.holder)} more than {limits.max_unpacked_bytes} bytes "
                    "(limits.max_unpacked_bytes)",
                )
                raise _Stop("unpacked")
            _keep(tar, entry, name, scan, sink)
    except TarStop as stop:
        if stop.code != "container.trailing_data":
            raise
        # A damaged header after the first member ends the archive as tarfile ends it: the
        # rest is read to check the gzip stream, and reported as trailing data.
        scan.add(stop.code, stop.field, stop.message)
    if tar.members == 0:
        scan.add("container.empty", "", f"the {scan.holder} holds no {scan.holder.items}")


def _unpacked(holder: Holder) -> str:
    if holder is Holder.ARCHIVE:
        return "the archive unpacks to"
    return f"the {holder}'s {holder.items} add up to"


def _keep(
    tar: TarReader, entry: TarEntry, name: str, scan: ArchiveScan, sink: MemberSink | None
) -> None:
    """A plain file, in the member list; ymir-info.yaml read (within its limit), any other
    member handed to the sink as it streams by."""
    mtime = int(entry.mtime) if math.isfinite(entry.mtime) else 0
    member = Member(name, entry.size, entry.data_offset, mtime)
    scan.members[name] = member
    if name != INFO_NAME:
        if sink is not None:
            sink.member(member, tar.readinto_data)
        return
    scan.info_member = member
    if entry.size > MAX_INFO_BYTES:
        scan.add(
            "info.too_large",
            INFO_NAME,
            f"{INFO_NAME} is {entry.size} bytes, over the limit of {MAX_INFO_BYTES}",
        )
        return
    scan.info = tar.read_data()
    if sink is not None:
        sink.info(member, scan.info)


def _a_plain_file(entry: TarEntry, name: str, scan: ArchiveScan) -> bool:
    """Whether a member is a file to keep: links and special files are problems, folders
    are skipped (stored names are built from the stage and file names)."""
    if entry.is_link:
        kind = "symbolic" if entry.is_symlink else "hard"
        scan.add(
            "tar.link_member",
            name,
            f"member {name!r} is a {kind} link to {entry.linkname!r}; links are not allowed",
        )
        return False
    if entry.is_dir:
        return False
    if not entry.is_file:
        scan.add(
            "tar.special_member",
            name,
            f"member {name!r} is a device, fifo, sparse or other special file; "
            "only plain files and folders are allowed",
        )
        return False
    return True


def gzip_complete(opened: io.BufferedReader, max_ratio: float) -> bool:
    """Whether the gzip stream of an open file, read from its start, reaches its end marker
    (its writer may still be appending).

    A damaged stream counts as complete: it will not get better by waiting, and validation
    reports it with its reason. So does one that unpacks past ``max_ratio`` times its size
    (a bomb): reading on would only cost, and validation refuses it.
    """
    opened.seek(0)
    if opened.peek(2)[:2] not in (GZIP_MAGIC, GZIP_MAGIC[:1], b""):
        return True
    ceiling = max(int(max_ratio * os.fstat(opened.fileno()).st_size), RATIO_GRACE_BYTES)
    inflated = _Inflated(GzipReader(opened, CHUNK), ceiling)
    try:
        while inflated.skip(CHUNK):
            pass
    except EOFError:
        return False
    except (_Stop, zlib.error, ISAL_ERROR, igzip.BadGzipFile, ValueError):
        return True
    return True
