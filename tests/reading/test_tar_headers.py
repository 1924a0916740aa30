"""Tar headers read with every read bounded: the same members as tarfile lists, for whatever
tarfile (or GNU tar) writes, and extended headers judged before they are read."""

from __future__ import annotations

import io
import subprocess
import tarfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hostile import header_block, pax_record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ymir_dropbox.reading.tar_headers import (
    MAX_EXTENDED_BYTES,
    MAX_GLOBAL_BYTES,
    TarEntry,
    TarReader,
    TarStop,
    parse_pax,
)

PROPERTY = settings(
    max_examples=200,
    deadline=timedelta(seconds=5),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Stream:
    """A tar in memory, read as the archive reader reads the decompressed package."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)
        self.position = 0
        self.largest_read = 0

    def read(self, size: int) -> bytes:
        self.largest_read = max(self.largest_read, size)
        data = self.data.read(size)
        self.position += len(data)
        return data

    def skip(self, size: int) -> int:
        data = self.data.read(size)
        self.position += len(data)
        return len(data)


def entries(data: bytes) -> list[TarEntry]:
    return list(TarReader(Stream(data)))


def as_tarfile_sees_it(data: bytes) -> list[tuple[str, bytes, int, int]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", errors="surrogateescape") as tar:
        return [(info.name, info.type, info.size, info.offset_data) for info in tar]


def as_we_see_it(data: bytes) -> list[tuple[str, bytes, int, int]]:
    return [(entry.name, entry.kind, entry.size, entry.data_offset) for entry in entries(data)]


names = st.lists(
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00/"), min_size=1),
    min_size=1,
    max_size=3,
).map("/".join)
kinds = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE])
members = st.lists(
    st.tuples(names, kinds, st.binary(max_size=1500), st.integers(0, 2**40)), max_size=6
)
formats = st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])


def write(members: list[tuple[str, bytes, bytes, int]], fmt: int, **options: Any) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, **options) as tar:
        for name, kind, data, mtime in members:
            info = tarfile.TarInfo(name)
            info.type, info.mtime = kind, mtime
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = "target"
                tar.addfile(info)
    return buffer.getvalue()


@PROPERTY
@given(members=members, fmt=formats)
def test_members_are_those_tarfile_lists(
    members: list[tuple[str, bytes, bytes, int]], fmt: int
) -> None:
    try:
        data = write(members, fmt)
    except ValueError:  # a name USTAR cannot hold
        return

    assert as_we_see_it(data) == as_tarfile_sees_it(data)


@PROPERTY
@given(members=members.filter(bool))
def test_a_global_header_is_read_past(members: list[tuple[str, bytes, bytes, int]]) -> None:
    data = write(members, tarfile.PAX_FORMAT, pax_headers={"comment": "made by git archive"})

    assert as_we_see_it(data) == as_tarfile_sees_it(data)


def test_a_global_header_alone_is_an_empty_archive() -> None:
    """As GNU tar reads it (tarfile refuses it)."""
    data = write([], tarfile.PAX_FORMAT, pax_headers={"comment": "nothing else"})

    assert entries(data) == []


def test_gnu_tar_long_names_and_folders(tmp_path: Path) -> None:
    folder = tmp_path / "source" / ("d" * 120)
    folder.mkdir(parents=True)
    (folder / ("f" * 150)).write_bytes(b"weights")
    (folder / "short").write_bytes(b"x" * 1000)
    for fmt in ("gnu", "posix", "oldgnu"):
        archive = tmp_path / f"{fmt}.tar"
        subprocess.run(
            ["tar", f"--format={fmt}", "-cf", str(archive), "-C", str(tmp_path / "source"), "."],
            check=True,
        )
        data = archive.read_bytes()

        assert as_we_see_it(data) == as_tarfile_sees_it(data)


@pytest.mark.parametrize("options", [[], ["--format=posix", "--sparse-version=1.0"]])
def test_gnu_tar_sparse_files_are_seen_and_passed_over(tmp_path: Path, options: list[str]) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with (source / "sparse.bin").open("wb") as sparse:
        sparse.truncate(10 * 1024 * 1024)
        sparse.seek(5_000_000)
        sparse.write(b"weights")
    (source / "zafter.txt").write_bytes(b"after")
    archive = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", *options, "-S", "-cf", str(archive), "-C", str(source), "sparse.bin", "zafter.txt"],
        check=True,
    )

    found = entries(archive.read_bytes())

    assert [(entry.name, entry.sparse, entry.is_file) for entry in found] == [
        ("sparse.bin", True, False),
        ("zafter.txt", False, True),
    ]


def test_a_pax_mtime_wins_over_the_header() -> None:
    info = tarfile.TarInfo("big.params")
    info.size = 10
    info.pax_headers = {"mtime": "1655975300.5"}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(bytes(10)))
    data = buffer.getvalue()

    (entry,) = entries(data)

    assert entry.size == 10
    assert entry.mtime == 1655975300.5


PAX = {
    "one record": (b"11 path=ab\n", {"path": "ab"}),
    "records kept and dropped": (
        pax_record("path", b"a/b") + pax_record("atime", b"1") + pax_record("size", b"7"),
        {"path": "a/b", "size": "7"},
    ),
    "a sparse record marks the member": (pax_record("GNU.sparse.map", b"0,1"), {"GNU.sparse.": ""}),
    "a sparse file's name": (
        pax_record("GNU.sparse.name", b"w.bin"),
        {"GNU.sparse.name": "w.bin", "GNU.sparse.": ""},
    ),
    "padding after the records": (pax_record("mtime", b"5") + bytes(20), {"mtime": "5"}),
    "an equals sign in the value": (pax_record("path", b"a=b"), {"path": "a=b"}),
}


@pytest.mark.parametrize(("body", "records"), PAX.values(), ids=PAX.keys())
def test_pax_records(body: bytes, records: dict[str, str]) -> None:
    assert parse_pax(body) == records


MALFORMED = {
    "length too long": b"99 path=ab\n",
    "length too short": b"5 path=ab\n",
    "length zero": b"0 path=ab\n",
    "no newline": b"10 path=abc",
    "no equals sign": b"9 pathab\n",
    "no length": b"path=ab\n",
    "a length that never ends": b"9" * 100,
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_pax_records(body: bytes) -> None:
    assert parse_pax(body) is None


def test_a_long_run_of_overlapping_records_is_linear() -> None:
    """tarfile's regular expression rescans the rest of the header for every record."""
    body = b"2 " * 30_000 + b"=\n"

    assert parse_pax(body) is None


BUDGETS = {
    "long name": (b"L", "././@LongLink", MAX_EXTENDED_BYTES),
    "pax header": (b"x", "././@PaxHeader", MAX_EXTENDED_BYTES),
    "global header": (b"g", "pax_global_header", MAX_GLOBAL_BYTES),
}


@pytest.mark.parametrize(("kind", "name", "limit"), BUDGETS.values(), ids=BUDGETS.keys())
def test_an_extended_header_over_the_limit_is_refused_before_it_is_read(
    kind: bytes, name: str, limit: int
) -> None:
    stream = Stream(header_block(name, kind, limit) + bytes(limit) + bytes(1024))

    with pytest.raises(TarStop) as stopped:
        TarReader(stream).next()

    assert stopped.value.code == "tar.header_too_large"
    assert stopped.value.field == name
    assert str(limit) in stopped.value.message
    assert stream.largest_read == 512


@pytest.mark.parametrize(("kind", "name", "limit"), BUDGETS.values(), ids=BUDGETS.keys())
def test_an_extended_header_within_the_limit_is_read(kind: bytes, name: str, limit: int) -> None:
    record = pax_record("comment", b"x" * 100)
    body = record if kind != b"L" else b"long-name.params"
    data = header_block(name, kind, len(body)) + body + bytes(-len(body) % 512)
    data += write([("model.params", tarfile.REGTYPE, b"w", 0)], tarfile.USTAR_FORMAT)

    (entry,) = entries(data)

    assert entry.name == ("long-name.params" if kind == b"L" else "model.params")


def test_global_headers_count_over_the_whole_archive() -> None:
    record = pax_record("comment", b"x" * 1000)
    one = header_block("pax_global_header", b"g", len(record)) + record
    one += bytes(-len(one) % 512)
    member = write([("m", tarfile.REGTYPE, b"", 0)], tarfile.USTAR_FORMAT)[:512]
    reader = TarReader(Stream((one + member) * 100))

    with pytest.raises(TarStop) as stopped:
        list(reader)

    assert stopped.value.code == "tar.header_too_large"
    assert 25 <= reader.members <= MAX_GLOBAL_BYTES // len(one)


def test_a_damaged_header_after_a_member_is_trailing_data() -> None:
    data = write([("a", tarfile.REGTYPE, b"x", 0)], tarfile.USTAR_FORMAT)
    damaged = data[:1024] + b"garbage!" * 64 + data[1024:]

    reader = TarReader(Stream(damaged))
    assert reader.next() is not None
    with pytest.raises(TarStop) as stopped:
        reader.next()

    assert stopped.value.code == "container.trailing_data"


def test_a_damaged_first_header_is_not_a_tar() -> None:
    with pytest.raises(TarStop) as stopped:
        TarReader(Stream(b"garbage!" * 64)).next()

    assert stopped.value.code == "container.not_tar"


def test_a_member_cut_short_is_truncated() -> None:
    data = write([("a", tarfile.REGTYPE, b"x" * 2000, 0)], tarfile.USTAR_FORMAT)

    with pytest.raises(TarStop) as stopped:
        entries(data[:1500])

    assert stopped.value.code == "container.truncated"
