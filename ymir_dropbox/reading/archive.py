"""Reading a package safely: one streaming pass over the gzip tar, nothing extracted.

The pass checks the container and every member header against the limits, keeps the bytes of
``ymir-info.yaml`` (at most 1 MiB), and can copy the decompressed tar into a spool file so that
the import can later copy members out in any order without decompressing twice.
"""

from __future__ import annotations

import errno
import hashlib
import io
import math
import os
import re
import stat
import tarfile
import unicodedata
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from isal import igzip, isal_zlib

from ymir_dropbox.reading.limits import Limits
from ymir_dropbox.reading.names import SLASH_LOOKALIKES
from ymir_dropbox.reading.problems import Problem

# isal raises its own error for bad deflate data where zlib raises zlib.error
ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]

INFO_NAME = "ymir-info.yaml"
MAX_INFO_BYTES = 1024 * 1024
MAX_MEMBER_NAME_BYTES = 4096
MAX_PROBLEMS_PER_CODE = 20
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1024 * 1024
BLOCK = tarfile.BLOCKSIZE
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


@dataclass(slots=True)
class ArchiveScan:
    """What one pass over a package found."""

    package_bytes: int = 0
    unpacked_bytes: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    info: bytes | None = None
    sha256: str | None = None
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


class _Stop(Exception):
    """The scan has seen enough: a limit was hit and reading on would only cost."""


class PackageUnreadable(OSError):
    """The package could not be opened; not a fault of its content."""


@contextmanager
def open_package(path: Path) -> Iterator[io.BufferedReader]:
    """Open a package without following a symlink and without blocking on a fifo."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise PackageUnreadable(f"{path} is a symlink; it is never followed") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PackageUnreadable(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        stream = cast(io.BufferedReader, open(fd, "rb", buffering=CHUNK))  # noqa: SIM115
    except BaseException:
        os.close(fd)
        raise
    with stream:
        yield stream


class _HashingSource:
    """The raw package bytes as gzip reads them, hashed on the way (the package's sha256)."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def peek(self, size: int) -> bytes:
        return self.raw.peek(size)

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha256.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self.raw.readinto(buffer)
        self.sha256.update(memoryview(buffer)[:count])
        return count

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return self.sha256.hexdigest()


class _Reader:
    """The decompressed stream for tarfile: forward-only, copied to a spool, ratio enforced.

    ``seek`` only goes forward (reading and discarding in large chunks), which lets tarfile
    skip member data quickly without ever reading a member into memory.
    """

    def __init__(self, source: BinaryIO, spool: BinaryIO | None, ceiling: int) -> None:
        self.source = source
        self.spool = spool
        self.ceiling = ceiling
        self.position = 0
        self.last_read = b""

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size if size >= 0 else CHUNK)
        self.position += len(data)
        if self.position > self.ceiling:
            raise _Stop("ratio")
        if self.spool is not None and data:
            self.spool.write(data)
        self.last_read = data if len(data) <= BLOCK else b""
        return data

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self.position + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target < self.position:
            raise OSError("the package stream is read forward only")
        while self.position < target:
            if not self.read(min(CHUNK, target - self.position)):
                raise tarfile.ReadError("unexpected end of data")
        return self.position


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
    if any(ord(char) < 32 or ord(char) == 127 for char in raw):
        return None, ("tar.bad_name", "the member name holds control characters")
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


def scan_package(path: Path, limits: Limits, spool: BinaryIO | None = None) -> ArchiveScan:
    """Check a package in one streaming pass. Problems are collected, never raised.

    The same pass computes the package's sha256 (of every file, even one over the limits).
    Raises ``OSError`` only when the file itself cannot be opened or read.
    """
    scan = ArchiveScan()
    with open_package(path) as opened:
        scan.package_bytes = os.fstat(opened.fileno()).st_size
        raw = _HashingSource(opened)
        try:
            _scan_container(raw, scan, limits, spool)
        finally:
            scan.sha256 = raw.drain()
    return scan


def _scan_container(
    raw: _HashingSource, scan: ArchiveScan, limits: Limits, spool: BinaryIO | None
) -> None:
    if scan.package_bytes > limits.max_package_bytes:
        scan.add(
            "package.too_large",
            "",
            f"the package is {scan.package_bytes} bytes, over the limit of "
            f"{limits.max_package_bytes} (limits.max_package_bytes)",
        )
        return
    if raw.peek(2)[:2] != GZIP_MAGIC:
        reason = "the file is empty" if scan.package_bytes == 0 else "no gzip magic bytes"
        scan.add("container.not_gzip", "", f"the file is not gzip-compressed ({reason})")
        return
    ceiling = max(int(limits.max_ratio * scan.package_bytes), RATIO_GRACE_BYTES)
    decompressed: BinaryIO = igzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call, assignment]
    reader = _Reader(decompressed, spool, ceiling)
    try:
        _scan_members(reader, scan, limits)
        _check_tail(reader, scan)
    except _Stop as stop:
        if str(stop) == "ratio":
            scan.add(
                "tar.compression_ratio",
                "",
                f"the package unpacks to more than {limits.max_ratio:g} times its size "
                f"of {scan.package_bytes} bytes (limits.max_ratio); a compression bomb?",
            )
    except EOFError:
        scan.add("container.truncated", "", "the gzip stream is truncated (ends too early)")
    except tarfile.ReadError as error:
        if "unexpected end of data" in str(error):
            scan.add("container.truncated", "", "the tar archive is truncated inside a member")
        else:
            scan.add("container.not_tar", "", f"the gzip stream does not hold a valid tar: {error}")
    except (zlib.error, ISAL_ERROR, igzip.BadGzipFile) as error:
        scan.add("container.corrupt", "", f"the gzip stream is corrupt: {error}")


def _scan_members(reader: _Reader, scan: ArchiveScan, limits: Limits) -> None:
    seen: set[str] = set()
    count = 0
    with tarfile.open(fileobj=reader, mode="r:", errors="surrogateescape") as tar:  # type: ignore[call-overload]
        for info in tar:
            count += 1
            if count > limits.max_members:
                scan.add(
                    "tar.too_many_members",
                    "",
                    f"the archive has more than {limits.max_members} members (limits.max_members)",
                )
                raise _Stop("members")
            if info.isdir() and info.name in {".", "./"}:
                continue  # what `tar -czf package.tar.gz .` writes first
            shown = info.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            name, reason = clean_member_name(info.name)
            if reason is not None:
                scan.add(reason[0], shown, f"member {shown!r}: {reason[1]}")
                continue
            assert name is not None
            if info.issym() or info.islnk():
                kind = "symbolic" if info.issym() else "hard"
                scan.add(
                    "tar.link_member",
                    name,
                    f"member {name!r} is a {kind} link to {info.linkname!r}; links are not allowed",
                )
                continue
            if info.isdir():
                continue
            if not info.isreg() or info.sparse is not None or info.type == tarfile.GNUTYPE_SPARSE:
                scan.add(
                    "tar.special_member",
                    name,
                    f"member {name!r} is a device, fifo, sparse or other special file; "
                    "only plain files and folders are allowed",
                )
                continue
            if name in seen:
                scan.add("tar.duplicate_member", name, f"member {name!r} appears more than once")
                continue
            seen.add(name)
            scan.unpacked_bytes += info.size
            if scan.unpacked_bytes > limits.max_unpacked_bytes:
                scan.add(
                    "tar.too_large_unpacked",
                    "",
                    f"the archive unpacks to more than {limits.max_unpacked_bytes} bytes "
                    "(limits.max_unpacked_bytes)",
                )
                raise _Stop("unpacked")
            mtime = int(info.mtime) if math.isfinite(info.mtime) else 0
            member = Member(name, info.size, info.offset_data, mtime)
            scan.members[name] = member
            if name == INFO_NAME:
                scan.info_member = member
                if info.size > MAX_INFO_BYTES:
                    scan.add(
                        "info.too_large",
                        INFO_NAME,
                        f"{INFO_NAME} is {info.size} bytes, over the limit of {MAX_INFO_BYTES}",
                    )
                else:
                    extracted = tar.extractfile(info)
                    assert extracted is not None
                    scan.info = extracted.read()
        if count == 0:
            scan.add("container.empty", "", "the archive holds no members")
        elif reader.last_read.count(0) != len(reader.last_read):
            # tarfile ends quietly at a damaged header after the first member
            scan.add(
                "container.trailing_data",
                "",
                f"data that is not a tar header follows member {count} "
                f"(at byte {tar.offset} unpacked): damaged, or another archive appended",
            )


def _check_tail(reader: _Reader, scan: ArchiveScan) -> None:
    """Read to the end of the gzip stream: checks its CRC, and that only zeros follow the tar."""
    while True:
        chunk = reader.read(CHUNK)
        if not chunk:
            return
        if chunk.count(0) != len(chunk) and not scan.has("container.trailing_data"):
            scan.add(
                "container.trailing_data",
                "",
                "data follows the end of the tar archive (a second archive appended?)",
            )
            return


def gzip_complete(path: Path, max_ratio: float) -> bool:
    """Whether the gzip stream reaches its end marker (a writer may still be appending).

    A damaged stream counts as complete: it will not get better by waiting, and validation
    reports it with its reason. So does one that unpacks past ``max_ratio`` times its size
    (a bomb): reading on would only cost, and validation refuses it.
    """
    with open_package(path) as raw:
        head = raw.read(2)
        if len(head) == 2 and head != GZIP_MAGIC:
            return True
        raw.seek(0)
        ceiling = max(max_ratio * os.fstat(raw.fileno()).st_size, RATIO_GRACE_BYTES)
        stream = igzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call]
        unpacked = 0
        try:
            while chunk := stream.read(CHUNK):
                unpacked += len(chunk)
                if unpacked > ceiling:
                    return True
        except EOFError:
            return False
        except (OSError, zlib.error, ISAL_ERROR, ValueError):
            return True
    return True
