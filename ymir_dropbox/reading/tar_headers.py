"""Tar headers read from a stream with every read bounded: ustar, GNU and PAX.

Python's tarfile reads a GNU long name or a PAX header in one read of whatever size the header
claims (a 1 MB package can claim 1 GiB), follows a chain of PAX headers by recursion, and
copies every global PAX record into every later member. Here the extended headers before one
member may take at most ``MAX_EXTENDED_BYTES`` and the global headers of an archive
``MAX_GLOBAL_BYTES``, checked against the size a header claims before a byte of it is read;
only the PAX records validation uses are kept. Headers are otherwise read the way tarfile
reads them (checksums, base-256 numbers, the ustar prefix, which types carry data), so an
archive lists the same members here as there.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

BLOCK = 512
MAX_EXTENDED_BYTES = 64 * 1024
MAX_GLOBAL_BYTES = 64 * 1024
ENCODING = "utf-8"
ERRORS = "surrogateescape"

REGULAR = frozenset({b"0", b"\0", b"7"})
DIRECTORY = b"5"
LINKS = frozenset({b"1", b"2"})
LONG_NAME = b"L"
LONG_LINK = b"K"
OLD_SPARSE = b"S"
PAX = frozenset({b"x", b"X"})
GLOBAL_PAX = b"g"
# As in tarfile: the data of regular members and of types it does not know is skipped;
# folders, links, devices and fifos have none, whatever their size field says.
KNOWN = frozenset({b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"L", b"K", b"S"})
KEPT_RECORDS = frozenset({"path", "linkpath", "size", "mtime", "GNU.sparse.name"})
SPARSE_RECORD = "GNU.sparse."
EXTENSIONS = {
    LONG_NAME: "GNU long-name header",
    LONG_LINK: "GNU long-link header",
    b"x": "PAX header",
    b"X": "PAX header",
    GLOBAL_PAX: "global PAX header",
}
_UNSIGNED = struct.Struct("148B8x356B")
_SIGNED = struct.Struct("148b8x356b")


class Stream(Protocol):
    """The decompressed tar, read forward only."""

    position: int

    def read(self, size: int) -> bytes:
        """At most ``size`` bytes; fewer only at the end of the stream."""

    def skip(self, size: int) -> int:
        """Pass over ``size`` bytes; returns how many there were."""

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` with the next bytes; returns how many came (0 at the end)."""


@dataclass(frozen=True, slots=True)
class TarEntry:
    """One member as its headers describe it."""

    name: str
    kind: bytes
    size: int
    mtime: float
    linkname: str
    offset: int
    data_offset: int
    sparse: bool

    @property
    def is_dir(self) -> bool:
        return self.kind == DIRECTORY

    @property
    def is_link(self) -> bool:
        return self.kind in LINKS

    @property
    def is_symlink(self) -> bool:
        return self.kind == b"2"

    @property
    def is_file(self) -> bool:
        return self.kind in REGULAR and not self.sparse


class TarStop(Exception):
    """Reading cannot go on: the problem (code, field, message) says why."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class _Header:
    name: str
    kind: bytes
    size: int
    mtime: int
    linkname: str
    sparse_extended: bool


def padded(size: int) -> int:
    """``size`` rounded up to whole blocks."""
    return -(-size // BLOCK) * BLOCK


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode(ENCODING, ERRORS)


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or base-256 (GNU) when its first byte says so."""
    if field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0o377 else value
    return int(field.split(b"\0", 1)[0].decode("ascii").strip() or "0", 8)


def _parse_header(block: bytes) -> _Header | None:
    """The header in one 512-byte block, or None when it is not one (bad checksum, number)."""
    try:
        checksum = _number(block[148:156])
        if checksum not in (256 + sum(_UNSIGNED.unpack(block)), 256 + sum(_SIGNED.unpack(block))):
            return None
        for start, end in ((100, 108), (108, 116), (116, 124), (329, 337), (337, 345)):
            _number(block[start:end])  # mode, uid, gid, devices: only checked, as tarfile does
        size = _number(block[124:136])
        mtime = _number(block[136:148])
    except ValueError:
        return None
    if size < 0:
        return None
    name = _text(block[0:100])
    kind = block[156:157]
    prefix = _text(block[345:500])
    if kind == b"\0" and name.endswith("/"):
        kind = DIRECTORY  # the old V7 way of writing a folder
    if kind == DIRECTORY:
        name = name.rstrip("/")
    if prefix and kind not in (LONG_NAME, LONG_LINK, OLD_SPARSE):
        name = f"{prefix}/{name}"
    linkname = _text(block[157:257])
    return _Header(name, kind, size, mtime, linkname, kind == OLD_SPARSE and block[482] != 0)


def parse_pax(body: bytes) -> dict[str, str] | None:
    """The records of a PAX header that validation uses, or None when one is malformed.

    A record is ``<length> <key>=<value>\\n``, its length counting itself; each is looked
    for only inside its own length, so the work is linear in the size of the header.
    """
    records: dict[str, str] = {}
    position = 0
    while position < len(body) and body[position] != 0:
        space = body.find(b" ", position, position + 20)
        digits = body[position:space]
        if space < 0 or not digits.isdigit():
            return None
        end = position + int(digits)
        if end <= space + 2 or end > len(body) or body[end - 1] != 0x0A:
            return None
        key, equals, value = body[space + 1 : end - 1].partition(b"=")
        if not equals or not key:
            return None
        keyword = key.decode(ENCODING, ERRORS)
        if keyword in KEPT_RECORDS:
            records[keyword] = value.decode(ENCODING, ERRORS)
        if keyword.startswith(SPARSE_RECORD):
            records[SPARSE_RECORD] = ""
        position = end
    return records


class TarReader:
    """The members of a tar stream, in order. Raises :class:`TarStop` when it cannot go on.

    The data of each member is passed over when the next one is asked for, unless read with
    :meth:`read_data` or :meth:`readinto_data` first.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.members = 0
        self.global_records: dict[str, str] = {}
        self.global_bytes = 0
        self._data_left = 0
        self._data_size = 0

    def __iter__(self) -> Iterator[TarEntry]:
        while (entry := self.next()) is not None:
            yield entry

    def read_data(self) -> bytes:
        """The data of the member just returned (the caller bounds its size)."""
        data = self.stream.read(self._data_size)
        if len(data) < self._data_size:
            raise TarStop("container.truncated", "", "the tar archive is truncated inside a member")
        self._data_left -= self._data_size
        self._data_size = 0
        return data

    def readinto_data(self, view: memoryview) -> int:
        """Read the next part of the data of the member just returned into ``view``; returns
        how many bytes came, 0 once its data is all read."""
        wanted = min(len(view), self._data_size)
        if not wanted:
            return 0
        count = self.stream.readinto(view[:wanted])
        if not count:
            raise TarStop("container.truncated", "", "the tar archive is truncated inside a member")
        self._data_size -= count
        self._data_left -= count
        return count

    def next(self) -> TarEntry | None:
        """The next member, or None at the end of the archive."""
        if self.stream.skip(self._data_left) < self._data_left:
            raise TarStop("container.truncated", "", "the tar archive is truncated inside a member")
        self._data_left = self._data_size = 0
        start = self.stream.position
        records: dict[str, str] = {}
        long_name: str | None = None
        long_link: str | None = None
        extended = 0
        pending = False  # a long name, long link or PAX header waits for its member
        while True:
            at = self.stream.position
            header = self._header(at, pending)
            if header is None:
                return None
            if header.kind not in EXTENSIONS:
                break
            pending = pending or header.kind != GLOBAL_PAX
            extended += BLOCK + padded(header.size)
            self._check_budget(header, at, start, extended)
            body = self.stream.read(padded(header.size))
            if len(body) < padded(header.size):
                raise TarStop("container.truncated", "", "the tar archive ends inside a header")
            body = body[: header.size]
            if header.kind == LONG_NAME:
                long_name = _text(body)
            elif header.kind == LONG_LINK:
                long_link = _text(body)
            else:
                parsed = parse_pax(body)
                if parsed is None:
                    raise TarStop(
                        "container.not_tar",
                        "",
                        f"the gzip stream does not hold a valid tar: the {EXTENSIONS[header.kind]} "
                        f"at byte {at} (unpacked) holds a malformed record",
                    )
                if header.kind == GLOBAL_PAX:
                    self.global_records.update(parsed)
                else:
                    records.update(parsed)
        while header.sparse_extended:  # the old GNU sparse map continues in extra blocks
            extended += BLOCK
            self._check_budget(header, start, start, extended)
            block = self.stream.read(BLOCK)
            if len(block) < BLOCK:
                raise TarStop("container.truncated", "", "the tar archive ends inside a header")
            header = replace(header, sparse_extended=block[504] != 0)
        return self._entry(header, start, {**self.global_records, **records}, long_name, long_link)

    def _header(self, at: int, pending: bool) -> _Header | None:
        """The next header block; None at the end of the archive."""
        block = self.stream.read(BLOCK)
        if block.count(0) == len(block) and not pending and (block or at):
            return None  # the end-of-archive marker, or the stream ends between members
        header = _parse_header(block) if len(block) == BLOCK else None
        if header is not None:
            return header
        if pending or self.members == 0:
            reason = "it is empty" if not block else f"no valid tar header at byte {at}"
            raise TarStop(
                "container.not_tar", "", f"the gzip stream does not hold a valid tar: {reason}"
            )
        raise TarStop(
            "container.trailing_data",
            "",
            f"data that is not a tar header follows member {self.members} "
            f"(at byte {at} unpacked): damaged, or another archive appended",
        )

    def _check_budget(self, header: _Header, at: int, start: int, extended: int) -> None:
        what = EXTENSIONS.get(header.kind, "GNU sparse map")
        shown = header.name.encode(ENCODING, ERRORS).decode(ENCODING, "replace")
        if header.kind == GLOBAL_PAX:
            self.global_bytes += BLOCK + padded(header.size)
            if self.global_bytes > MAX_GLOBAL_BYTES:
                raise TarStop(
                    "tar.header_too_large",
                    shown,
                    f"the {what} {shown!r} at byte {at} (unpacked) brings the archive's global "
                    f"headers to {self.global_bytes} bytes, over the limit of {MAX_GLOBAL_BYTES}",
                )
        if extended > MAX_EXTENDED_BYTES:
            claims = BLOCK + padded(header.size)
            detail = (
                f"claims {header.size} bytes"
                if claims > MAX_EXTENDED_BYTES
                else f"brings the headers of the member at byte {start} to {extended} bytes"
            )
            raise TarStop(
                "tar.header_too_large",
                shown,
                f"the {what} {shown!r} at byte {at} (unpacked) {detail}, over the limit of "
                f"{MAX_EXTENDED_BYTES} bytes for the headers of one member",
            )

    def _entry(
        self,
        header: _Header,
        start: int,
        records: dict[str, str],
        long_name: str | None,
        long_link: str | None,
    ) -> TarEntry:
        name = header.name if long_name is None else long_name
        linkname = header.linkname if long_link is None else long_link
        size = header.size
        mtime: float = header.mtime
        if "path" in records:
            name = records["path"].rstrip("/")
        if "GNU.sparse.name" in records:  # the name GNU tar gives a sparse file's real path
            name = records["GNU.sparse.name"]
        if "linkpath" in records:
            linkname = records["linkpath"]
        if "size" in records:
            try:
                size = int(records["size"])
            except ValueError:
                size = -1
            if size < 0:
                raise TarStop(
                    "container.not_tar",
                    "",
                    f"the gzip stream does not hold a valid tar: the PAX size "
                    f"{records['size'][:40]!r} of the member at byte {start} is not a size",
                )
        if "mtime" in records:
            try:
                mtime = float(records["mtime"])
            except ValueError:
                mtime = 0
        if header.kind == DIRECTORY:
            name = name.rstrip("/")
        data_offset = self.stream.position
        if header.kind in REGULAR or header.kind == OLD_SPARSE or header.kind not in KNOWN:
            self._data_size = size
            self._data_left = padded(size)
        self.members += 1
        sparse = header.kind == OLD_SPARSE or SPARSE_RECORD in records
        return TarEntry(name, header.kind, size, mtime, linkname, start, data_offset, sparse)
