"""A table of hostile and malformed packages, each with the one problem it must be refused for.

Every case has an id, a builder that writes the package file at a given path, the code and
the field that ``validate_package`` must report, and optional small limits (the ``[limits]``
of the config used for it). The builders start from the seed's example and change one thing,
so the expected problem is the package's only fault unless the case says otherwise.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import random
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from factory import (
    Entry,
    file_bytes,
    gzip_bytes,
    info_yaml,
    seed_entries,
    seed_info,
    tar_bytes,
    write_package,
)
from isal import isal_zlib

from ymir_dropbox.config import DEFAULTS
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.problems import MAX_FIELD, shortened

Builder = Callable[[Path], Path]
DELETE = object()
INFO = "ymir-info.yaml"


@dataclass(frozen=True)
class Hostile:
    """One hostile package: how to build it and the problem it must be refused for."""

    id: str
    build: Builder
    code: str
    field: str | Callable[[Path], str]
    limits: dict[str, int | float] = dataclasses.field(default_factory=dict)

    def expected_field(self, package: Path) -> str:
        """The field to expect for the package built at ``package``."""
        return self.field(package) if callable(self.field) else self.field

    @property
    def limits_object(self) -> Limits:
        return Limits(**{**DEFAULTS["limits"], **self.limits})

    def limits_toml(self) -> str:
        """The ``[limits]`` section of a config file for this case (empty when default)."""
        if not self.limits:
            return ""
        lines = [f"{key} = {value!r}" for key, value in self.limits.items()]
        return "[limits]\n" + "\n".join(lines) + "\n"


def params(cases: Iterable[Hostile]) -> list[Any]:
    """The cases as pytest params with readable ids."""
    return [pytest.param(case, id=case.id) for case in cases]


# -- builders ---------------------------------------------------------------------------------


def raw(make: Callable[[], bytes]) -> Builder:
    """A package of exactly these bytes."""

    def build(path: Path) -> Path:
        path.write_bytes(make())
        return path

    return build


def members(make: Callable[[], list[Entry]]) -> Builder:
    """A gzip tar of these members."""

    def build(path: Path) -> Path:
        return write_package(path, make())

    return build


def with_members(*extra: Entry, drop: Iterable[str] = (), first: bool = False) -> Builder:
    """The seed's example without the members in ``drop`` and with ``extra`` added."""
    dropped = set(drop)

    def make() -> list[Entry]:
        kept = [entry for entry in seed_entries() if entry.name not in dropped]
        return [*extra, *kept] if first else [*kept, *extra]

    return members(make)


def with_info_text(text: bytes | Callable[[Path], bytes]) -> Builder:
    """The seed's files with this exact ``ymir-info.yaml`` text."""

    def build(path: Path) -> Path:
        data = text(path) if callable(text) else text
        entries = [entry for entry in seed_entries() if entry.name != INFO]
        return write_package(path, [*entries, Entry(INFO, data)])

    return build


def edited(*changes: tuple[str, Any], base: Callable[[], dict[str, Any]] = seed_info) -> Builder:
    """The seed's example with ``ymir-info.yaml`` edited: (dotted path, value or DELETE)."""

    def build(path: Path) -> Path:
        info = base()
        for dotted, value in changes:
            set_dotted(info, dotted, value)
        entries = [entry for entry in seed_entries() if entry.name != INFO]
        return write_package(path, [*entries, Entry(INFO, info_yaml(info))])

    return build


def set_dotted(document: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    target = document
    for part in parents:
        target = target.setdefault(part, {})
    if value is DELETE:
        del target[last]
    else:
        target[last] = copy.deepcopy(value)


def rename_stage(old: str, new: str) -> Builder:
    """The seed's example with a stage under another key (and stage_name matching it)."""

    def build(path: Path) -> Path:
        info = seed_info()
        stage = info["stages"].pop(old)
        stage["stage_name"] = new
        info["stages"][new] = stage
        entries = [entry for entry in seed_entries() if entry.name != INFO]
        return write_package(path, [*entries, Entry(INFO, info_yaml(info))])

    return build


def legacy(*changes: tuple[str, Any], files: Iterable[str] | None = None) -> Builder:
    """A legacy 1.1.0 package (``models:``), edited."""

    def build(path: Path) -> Path:
        info: dict[str, Any] = {
            "package_version": "1.1.0",
            "executor_config": {"class_names": ["person"]},
            "models": ["model-1000.params", "model-symbol.json"],
            "task_context": {"mAP": 0.42},
        }
        for dotted, value in changes:
            set_dotted(info, dotted, value)
        names = info.get("models", []) if files is None else files
        entries = [Entry(name, file_bytes(name)) for name in names]
        return write_package(path, [Entry(INFO, info_yaml(info)), *entries])

    return build


def seed_tar() -> bytes:
    return tar_bytes(seed_entries())


def seed_gzip() -> bytes:
    return gzip_bytes(seed_tar())


def flipped(data: bytes, at: int) -> bytes:
    """``data`` with the bytes at ``at`` (negative: from the end) inverted."""
    mutable = bytearray(data)
    for index in range(at, at + 4):
        mutable[index] ^= 0xFF
    return bytes(mutable)


def tar_gnu_raw_names(entries: list[Entry]) -> bytes:
    """A GNU tar whose names are written byte for byte (invalid UTF-8 survives)."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT, errors="surrogateescape"
    ) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data))
    return buffer.getvalue()


def member_bytes(name: str, data: bytes) -> bytes:
    """One regular member (header, data, padding) with no end-of-archive marker after it."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1655975300
    padding = -len(data) % tarfile.BLOCKSIZE
    return info.tobuf(tarfile.PAX_FORMAT) + data + b"\0" * padding


def lying_size_tar() -> bytes:
    """A member whose header claims 200 GiB, followed by a few bytes and nothing else."""
    info = tarfile.TarInfo("model-1000.params")
    info.size = 200 * 1024**3
    return member_bytes(INFO, info_yaml(seed_info())) + info.tobuf(tarfile.PAX_FORMAT) + bytes(512)


@functools.cache
def zeros_bomb() -> bytes:
    """A gzip tar holding 50 MB of zeros: about 50 kB packed (ratio about 1000)."""
    size = 50 * 1024 * 1024
    header = tarfile.TarInfo("model-1000.params")
    header.size = size
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunks = [compressor.compress(member_bytes(INFO, info_yaml(seed_info())))]
    chunks.append(compressor.compress(header.tobuf(tarfile.PAX_FORMAT)))
    zeros = bytes(1024 * 1024)
    chunks += [compressor.compress(zeros) for _ in range(size // len(zeros))]
    chunks.append(compressor.compress(bytes(2 * tarfile.BLOCKSIZE)))
    chunks.append(compressor.flush())
    return b"".join(chunks)


# Tar headers that claim a great deal: tarfile reads a GNU long name or a PAX header in one
# read, and a few hundred kB of gzip inflate to a quarter of a GiB.
HUGE_HEADER = 256 * 1024 * 1024


def header_block(name: str, kind: bytes, size: int) -> bytes:
    """A tar header of type ``kind`` (b"L", b"x", b"g"...) announcing ``size`` bytes of data."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


def pax_record(key: str, value: bytes) -> bytes:
    """One PAX record, ``<length> <key>=<value>\\n``, its length counting itself."""
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    length += len(str(length)) - len(str(len(body)))
    return str(length).encode() + body


@functools.cache
def huge_header(kind: bytes, name: str, record_key: str | None) -> bytes:
    """A gzip tar whose first header is ``HUGE_HEADER`` bytes long (all there, letters),
    followed by the seed's members: about 300 kB packed."""
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    chunks = [compressor.compress(header_block(name, kind, HUGE_HEADER))]
    left = HUGE_HEADER
    if record_key is not None:
        start = f"{HUGE_HEADER} {record_key}=".encode()
        chunks.append(compressor.compress(start))
        left -= len(start) + 1
    letters = b"a" * (1024 * 1024)
    while left:
        chunks.append(compressor.compress(letters[: min(left, len(letters))]))
        left -= min(left, len(letters))
    if record_key is not None:
        chunks.append(compressor.compress(b"\n"))
    chunks.append(compressor.compress(seed_tar()))
    chunks.append(compressor.flush())
    return b"".join(chunks)


def many_pax_headers() -> bytes:
    """Thousands of PAX headers in a row before one member (tarfile follows them by recursion)."""
    headers = b"".join(
        header_block("././@PaxHeader", b"x", 512) + pax_record("comment", b"x" * 499)
        for _ in range(5000)
    )
    return gzip_bytes(headers + seed_tar())


def many_global_headers() -> bytes:
    """A global PAX header before each of many members, each with new keys: tarfile gathers
    them all and copies the whole lot into every later member."""
    parts = []
    for index in range(2000):
        records = b"".join(pax_record(f"k{index}.{key}", b"v") for key in range(40))
        header = header_block("pax_global_header", b"g", len(records))
        parts.append(header + records + bytes(-len(records) % 512))
        parts.append(member_bytes(f"notes/{index}.txt", b""))
    return gzip_bytes(b"".join(parts) + seed_tar())


def info_over_1mib(path: Path) -> bytes:
    """A valid document padded past 1 MiB with a comment that does not compress much."""
    padding = random.Random(7).randbytes(600 * 1024).hex()
    return info_yaml(seed_info()) + f"# {padding}\n".encode()


def billion_laughs() -> bytes:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        refs = ",".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return (info_yaml(seed_info()).decode() + "\n".join(lines) + "\n").encode()


def nested_lists(depth: int) -> bytes:
    return info_yaml(seed_info()) + b"deep: " + b"[" * depth + b"]" * depth + b"\n"


def python_tag(path: Path) -> bytes:
    """Would run a command that leaves a file next to the package, if a loader obeyed it."""
    marker = path.parent / "pwned-by-yaml"
    document = (
        info_yaml(seed_info())
        .decode()
        .replace(
            "executor_config:\n",
            f'executor_config: !!python/object/apply:os.system ["touch {marker}"]\nignored:\n',
        )
    )
    return document.encode()


def invalid_utf8_name(path: Path) -> Path:
    entries = [*seed_entries(), Entry("bad\udcff.bin", b"x")]
    path.write_bytes(gzip_bytes(tar_gnu_raw_names(entries)))
    return path


def absolute_next_to(path: Path) -> Path:
    """A member named with an absolute path next to the package (the canary would see it)."""
    name = str(path.parent / "escaped-absolute")
    return write_package(path, [*seed_entries(), Entry(name, b"escaped")])


def sparse_member(path: Path) -> Path:
    """A GNU sparse member: tarfile calls it a file, though the archive holds fewer bytes."""
    sparse = tarfile.TarInfo("model-9000.params")
    sparse.type = tarfile.GNUTYPE_SPARSE
    sparse.size = 4096
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in seed_entries():
            info = tarfile.TarInfo(entry.name)
            info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data))
        tar.addfile(sparse, io.BytesIO(bytes(4096)))
    path.write_bytes(gzip_bytes(buffer.getvalue()))
    return path


def pax_mtime(value: str) -> Builder:
    """The seed's files, the first with a PAX mtime of ``value``; its info lists a missing file
    so that the case has a problem to report once the mtime is read safely."""

    def build(path: Path) -> Path:
        info = seed_info()
        info["stages"]["stage_1000"]["files"][0] = "absent.params"
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for entry in seed_entries(info):
                member = tarfile.TarInfo(entry.name)
                member.size = len(entry.data)
                if entry.name == "model-1000.params":
                    member.pax_headers = {"mtime": value}
                tar.addfile(member, io.BytesIO(entry.data))
        path.write_bytes(gzip_bytes(buffer.getvalue()))
        return path

    return build


# The first node past info_yaml.MAX_DEPTH (64) in `deep: [[[...]]]`: the root is at depth 0,
# the value of `deep` at 1, each nested list one deeper, so the culprit is 64 lists down.
DEEP_FIELD = "deep" + "[0]" * 64


def _seed_stage(name: str) -> dict[str, Any]:
    return copy.deepcopy(seed_info()["stages"][name])


def q(name: str) -> str:
    """The field a member-name problem is reported under: the member name itself (a long
    one shortened, as every problem's field is)."""
    return shortened(name, MAX_FIELD)


# -- the table --------------------------------------------------------------------------------

SEED_STAGE = "stages.stage_1000"
DOTS = "\u2025"  # TWO DOT LEADER, NFKC '..'
FULLWIDTH_DOT = "\uff0e"
DIVISION_SLASH = "\u2215"

CASES: list[Hostile] = [
    # member names that climb out of the archive
    Hostile("traversal-dotdot", with_members(Entry("../x", b"x")), "tar.path_traversal", q("../x")),
    Hostile(
        "traversal-inner",
        with_members(Entry("a/../../x", b"x")),
        "tar.path_traversal",
        q("a/../../x"),
    ),
    Hostile(
        "traversal-dot-slash",
        with_members(Entry("./../x", b"x")),
        "tar.path_traversal",
        q("./../x"),
    ),
    Hostile(
        "traversal-deep",
        with_members(Entry("../../../../../../../../tmp/x", b"x")),
        "tar.path_traversal",
        q("../../../../../../../../tmp/x"),
    ),
    Hostile("absolute-etc", with_members(Entry("/etc/x", b"x")), "tar.absolute_path", q("/etc/x")),
    Hostile(
        "absolute-next-to-package",
        absolute_next_to,
        "tar.absolute_path",
        lambda path: q(str(path.parent / "escaped-absolute")),
    ),
    Hostile(
        "traversal-backslash", with_members(Entry("..\\x", b"x")), "tar.path_traversal", q("..\\x")
    ),
    Hostile(
        "absolute-windows-drive",
        with_members(Entry("C:\\x", b"x")),
        "tar.absolute_path",
        q("C:\\x"),
    ),
    Hostile(
        "traversal-two-dot-leader",
        with_members(Entry(f"{DOTS}/x", b"x")),
        "tar.path_traversal",
        q(f"{DOTS}/x"),
    ),
    Hostile(
        "traversal-fullwidth-dots",
        with_members(Entry(f"{FULLWIDTH_DOT * 2}/x", b"x")),
        "tar.path_traversal",
        q(f"{FULLWIDTH_DOT * 2}/x"),
    ),
    Hostile(
        "traversal-division-slash",
        with_members(Entry(f"..{DIVISION_SLASH}x", b"x")),
        "tar.path_traversal",
        q(f"..{DIVISION_SLASH}x"),
    ),
    Hostile(
        "traversal-fraction-slash",
        with_members(Entry("..\u2044x", b"x")),
        "tar.path_traversal",
        q("..\u2044x"),
    ),
    Hostile(
        "traversal-fullwidth-solidus",
        with_members(Entry("..\uff0fx", b"x")),
        "tar.path_traversal",
        q("..\uff0fx"),
    ),
    Hostile(
        "absolute-division-slash",
        with_members(Entry(f"{DIVISION_SLASH}etc{DIVISION_SLASH}x", b"x")),
        "tar.absolute_path",
        q(f"{DIVISION_SLASH}etc{DIVISION_SLASH}x"),
    ),
    # links
    Hostile(
        "symlink-absolute",
        with_members(
            Entry("model-1000.params", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
            drop=["model-1000.params"],
        ),
        "tar.link_member",
        "model-1000.params",
    ),
    Hostile(
        "symlink-climbing",
        with_members(Entry("evil", kind=tarfile.SYMTYPE, linkname="../../../etc/passwd")),
        "tar.link_member",
        "evil",
    ),
    Hostile(
        "symlink-to-member",
        with_members(Entry("alias.params", kind=tarfile.SYMTYPE, linkname="model-1000.params")),
        "tar.link_member",
        "alias.params",
    ),
    Hostile(
        "symlink-folder-then-file-through-it",
        with_members(
            Entry("stage_1000", kind=tarfile.SYMTYPE, linkname="/tmp"),
            Entry("stage_1000/model-1000.params", b"through the link"),
        ),
        "tar.link_member",
        "stage_1000",
    ),
    Hostile(
        "symlink-as-info",
        with_members(Entry(INFO, kind=tarfile.SYMTYPE, linkname="/etc/passwd"), drop=[INFO]),
        "tar.link_member",
        INFO,
    ),
    Hostile(
        "hardlink-absolute",
        with_members(
            Entry("model-2000.params", kind=tarfile.LNKTYPE, linkname="/etc/shadow"),
            drop=["model-2000.params"],
        ),
        "tar.link_member",
        "model-2000.params",
    ),
    Hostile(
        "hardlink-to-member",
        with_members(Entry("copy.params", kind=tarfile.LNKTYPE, linkname="model-1000.params")),
        "tar.link_member",
        "copy.params",
    ),
    Hostile(
        "symlinks-at-each-other",
        with_members(
            Entry("a", kind=tarfile.SYMTYPE, linkname="b"),
            Entry("b", kind=tarfile.SYMTYPE, linkname="a"),
        ),
        "tar.link_member",
        "a",
    ),
    Hostile(
        "symlink-and-hardlink-at-each-other",
        with_members(
            Entry("a", kind=tarfile.SYMTYPE, linkname="b"),
            Entry("b", kind=tarfile.LNKTYPE, linkname="a"),
        ),
        "tar.link_member",
        "b",
    ),
    # special files
    Hostile(
        "char-device",
        with_members(Entry("null", kind=tarfile.CHRTYPE)),
        "tar.special_member",
        "null",
    ),
    Hostile(
        "block-device",
        with_members(Entry("sda", kind=tarfile.BLKTYPE)),
        "tar.special_member",
        "sda",
    ),
    Hostile(
        "fifo", with_members(Entry("pipe", kind=tarfile.FIFOTYPE)), "tar.special_member", "pipe"
    ),
    # names
    Hostile("empty-name", with_members(Entry("", b"x"), first=True), "tar.bad_name", q("")),
    Hostile(
        "name-over-4096-bytes",
        with_members(Entry("x" * 5000, b"x")),
        "tar.bad_name",
        q("x" * 5000),
    ),
    Hostile(
        "component-over-255-bytes",
        with_members(Entry("stage_1000/" + "x" * 256, b"x")),
        "tar.bad_name",
        q("stage_1000/" + "x" * 256),
    ),
    Hostile(
        "name-invalid-utf8",
        invalid_utf8_name,
        "tar.bad_name",
        q("bad\ufffd.bin"),
    ),
    Hostile(
        "name-control-character",
        with_members(Entry("model\n1000.params", b"x")),
        "tar.bad_name",
        q("model\n1000.params"),
    ),
    Hostile(
        "name-backslash",
        with_members(Entry("stage_1000\\model-1000.params", b"x")),
        "tar.bad_name",
        q("stage_1000\\model-1000.params"),
    ),
    # duplicates
    Hostile(
        "second-info",
        with_members(Entry(INFO, info_yaml({"stages": {}}))),
        "tar.duplicate_member",
        INFO,
    ),
    Hostile(
        "duplicate-through-dot-slash",
        with_members(Entry("./model-1000.params", b"other bytes")),
        "tar.duplicate_member",
        "model-1000.params",
    ),
    Hostile(
        "duplicate-through-double-slash",
        with_members(
            Entry("stage_1000/model-1000.params", b"one"),
            Entry("stage_1000//model-1000.params", b"two"),
        ),
        "tar.duplicate_member",
        "stage_1000/model-1000.params",
    ),
    # limits
    Hostile(
        "too-many-members",
        with_members(),
        "tar.too_many_members",
        "",
        limits={"max_members": 3},
    ),
    Hostile(
        "too-many-unpacked-bytes",
        with_members(),
        "tar.too_large_unpacked",
        "",
        limits={"max_unpacked_bytes": 4096},
    ),
    Hostile(
        "member-header-claims-200-GiB",
        raw(lambda: gzip_bytes(lying_size_tar())),
        "tar.too_large_unpacked",
        "",
    ),
    Hostile("gzip-bomb-50MB-of-zeros", raw(zeros_bomb), "tar.compression_ratio", ""),
    # tar headers that claim more than any member needs: refused before they are read
    Hostile(
        "huge-gnu-long-name",
        raw(lambda: huge_header(b"L", "././@LongLink", None)),
        "tar.header_too_large",
        "././@LongLink",
    ),
    Hostile(
        "huge-pax-record",
        raw(lambda: huge_header(b"x", "././@PaxHeader", "path")),
        "tar.header_too_large",
        "././@PaxHeader",
    ),
    Hostile(
        "huge-global-pax-header",
        raw(lambda: huge_header(b"g", "pax_global_header", "comment")),
        "tar.header_too_large",
        "pax_global_header",
    ),
    Hostile("many-pax-headers", raw(many_pax_headers), "tar.header_too_large", "././@PaxHeader"),
    Hostile(
        "many-global-pax-headers",
        raw(many_global_headers),
        "tar.header_too_large",
        "pax_global_header",
    ),
    Hostile(
        "compression-ratio-over-small-limit",
        with_members(Entry("zeros.bin", bytes(2 * 1024 * 1024))),
        "tar.compression_ratio",
        "",
        limits={"max_ratio": 10.0},
    ),
    Hostile(
        "package-over-max-package-bytes",
        with_members(),
        "package.too_large",
        "",
        limits={"max_package_bytes": 100},
    ),
    # the container
    Hostile(
        "truncated-gzip",
        raw(lambda: seed_gzip()[: len(seed_gzip()) // 2]),
        "container.truncated",
        "",
    ),
    Hostile("gzip-header-only", raw(lambda: seed_gzip()[:10]), "container.truncated", ""),
    Hostile(
        "corrupt-gzip-data",
        raw(lambda: flipped(seed_gzip(), 40)),
        "container.corrupt",
        "",
    ),
    Hostile(
        "corrupt-gzip-crc",
        raw(lambda: flipped(seed_gzip(), len(seed_gzip()) - 8)),
        "container.corrupt",
        "",
    ),
    Hostile(
        "concatenated-gzip-with-second-tar",
        raw(lambda: seed_gzip() + gzip_bytes(tar_bytes([Entry("../evil", b"x")]))),
        "container.trailing_data",
        "",
    ),
    Hostile("plain-tar-not-gzip", raw(seed_tar), "container.not_gzip", ""),
    Hostile("empty-file", raw(lambda: b""), "container.not_gzip", ""),
    Hostile("zip-file", raw(lambda: b"PK\x03\x04" + bytes(100)), "container.not_gzip", ""),
    Hostile(
        "gzip-of-text",
        raw(lambda: gzip_bytes(b"this is not a tar archive\n" * 40)),
        "container.not_tar",
        "",
    ),
    Hostile("empty-tar", raw(lambda: gzip_bytes(tar_bytes([]))), "container.empty", ""),
    # ymir-info.yaml as a document
    Hostile("info-missing", with_members(drop=[INFO]), "info.missing", INFO),
    Hostile(
        "info-in-sub-folder",
        with_members(Entry(f"model/{INFO}", info_yaml(seed_info())), drop=[INFO]),
        "info.not_at_root",
        f"model/{INFO}",
    ),
    Hostile("info-over-1MiB", with_info_text(info_over_1mib), "info.too_large", INFO),
    Hostile("info-invalid-yaml", with_info_text(b"stages: [unclosed\n"), "info.invalid_yaml", INFO),
    Hostile(
        "info-two-documents",
        with_info_text(info_yaml(seed_info()) + b"---\nsecond: document\n"),
        "info.invalid_yaml",
        INFO,
    ),
    Hostile("info-alias-bomb", with_info_text(billion_laughs()), "info.yaml_bomb", INFO),
    Hostile(
        "info-recursive-alias",
        with_info_text(info_yaml(seed_info()) + b"loop: &loop [*loop]\n"),
        "info.too_deep",
        "loop" + "[0]" * 64,
    ),
    Hostile("info-python-tag", with_info_text(python_tag), "info.yaml_tag", "executor_config"),
    Hostile(
        "info-python-name-tag",
        with_info_text(b"!!python/name:os.system\n"),
        "info.yaml_tag",
        INFO,
    ),
    Hostile(
        "info-set-tag",
        with_info_text(info_yaml(seed_info()) + b"extra: !!set {a, b}\n"),
        "info.yaml_tag",
        "extra",
    ),
    Hostile("info-deep-nesting", with_info_text(nested_lists(100)), "info.too_deep", DEEP_FIELD),
    Hostile(
        "info-nesting-past-recursion-limit",
        with_info_text(nested_lists(800)),
        "info.too_deep",
        INFO,
    ),
    Hostile(
        "info-a-list", with_info_text(b"- stage_1000\n- stage_2000\n"), "info.not_mapping", INFO
    ),
    Hostile("info-a-string", with_info_text(b"just some text\n"), "info.not_mapping", INFO),
    Hostile("info-empty", with_info_text(b""), "info.not_mapping", INFO),
    Hostile(
        "info-number-keys",
        with_info_text(info_yaml(seed_info()) + b"1: one\n"),
        "info.not_mapping",
        INFO,
    ),
    Hostile(
        "info-duplicate-key",
        with_info_text(info_yaml(seed_info()) + b"best_stage_name: stage_1000\n"),
        "info.duplicate_key",
        "best_stage_name",
    ),
    Hostile(
        "info-duplicate-nested-key",
        with_info_text(
            info_yaml(seed_info()).replace(b"    mAP: 0.3\n", b"    mAP: 0.3\n    mAP: 0.9\n")
        ),
        "info.duplicate_key",
        "stages.stage_1000.mAP",
    ),
    Hostile(
        "info-invalid-utf8",
        with_info_text(info_yaml(seed_info()) + b"producer: \xff\xfe\n"),
        "info.invalid_yaml",
        INFO,
    ),
    Hostile(
        "info-control-character",
        with_info_text(info_yaml(seed_info()) + b"producer: fenrir\x1fz\n"),
        "info.invalid_yaml",
        INFO,
    ),
    Hostile(
        "info-nul-byte",
        with_info_text(info_yaml(seed_info()) + b"\x00"),
        "info.invalid_yaml",
        INFO,
    ),
    Hostile(
        "info-utf16",
        with_info_text(info_yaml(seed_info()).decode().encode("utf-16")),
        "info.invalid_yaml",
        INFO,
    ),
    # the schema: wrong types and values
    Hostile(
        "class-names-not-a-list",
        edited(("executor_config.class_names", "person")),
        "info.wrong_type",
        "executor_config.class_names",
    ),
    Hostile(
        "class-name-an-int",
        edited(("executor_config.class_names", ["person", 7])),
        "info.wrong_type",
        "executor_config.class_names[1]",
    ),
    Hostile(
        "class-names-empty",
        edited(("executor_config.class_names", [])),
        "info.empty",
        "executor_config.class_names",
    ),
    Hostile(
        "class-names-duplicated",
        edited(("executor_config.class_names", ["person", "cat", "person"])),
        "info.not_unique",
        "executor_config.class_names",
    ),
    Hostile(
        "class-name-blank",
        edited(("executor_config.class_names", ["person", "   "])),
        "info.empty",
        "executor_config.class_names[1]",
    ),
    Hostile(
        "executor-config-not-a-mapping",
        edited(("executor_config", ["person"])),
        "info.wrong_type",
        "executor_config",
    ),
    Hostile(
        "mAP-a-string",
        edited((f"{SEED_STAGE}.mAP", "0.5")),
        "info.wrong_type",
        f"{SEED_STAGE}.mAP",
    ),
    Hostile(
        "mAP-a-bool", edited((f"{SEED_STAGE}.mAP", True)), "info.wrong_type", f"{SEED_STAGE}.mAP"
    ),
    Hostile(
        "mAP-null", edited((f"{SEED_STAGE}.mAP", None)), "info.wrong_type", f"{SEED_STAGE}.mAP"
    ),
    Hostile(
        "mAP-over-1",
        edited((f"{SEED_STAGE}.mAP", 1.5)),
        "info.out_of_range",
        f"{SEED_STAGE}.mAP",
    ),
    Hostile(
        "mAP-negative",
        edited((f"{SEED_STAGE}.mAP", -0.1)),
        "info.out_of_range",
        f"{SEED_STAGE}.mAP",
    ),
    Hostile(
        "mAP-nan",
        edited((f"{SEED_STAGE}.mAP", float("nan"))),
        "info.out_of_range",
        f"{SEED_STAGE}.mAP",
    ),
    Hostile(
        "mAP-inf",
        edited((f"{SEED_STAGE}.mAP", float("inf"))),
        "info.out_of_range",
        f"{SEED_STAGE}.mAP",
    ),
    Hostile(
        "mAR-over-1",
        edited((f"{SEED_STAGE}.mAR", 2)),
        "info.out_of_range",
        f"{SEED_STAGE}.mAR",
    ),
    Hostile(
        "timestamp-a-bool",
        edited((f"{SEED_STAGE}.timestamp", True)),
        "info.wrong_type",
        f"{SEED_STAGE}.timestamp",
    ),
    Hostile(
        "timestamp-a-float",
        edited((f"{SEED_STAGE}.timestamp", 1655975204.5)),
        "info.wrong_type",
        f"{SEED_STAGE}.timestamp",
    ),
    Hostile(
        "timestamp-a-date",
        with_info_text(info_yaml(seed_info()).replace(b"1655975204", b"2022-06-23")),
        "info.wrong_type",
        f"{SEED_STAGE}.timestamp",
    ),
    Hostile(
        "timestamp-negative",
        edited((f"{SEED_STAGE}.timestamp", -1)),
        "info.out_of_range",
        f"{SEED_STAGE}.timestamp",
    ),
    Hostile(
        "tp-negative",
        edited(("stages.stage_2000.tp", -1)),
        "info.out_of_range",
        "stages.stage_2000.tp",
    ),
    Hostile(
        "TP-negative",
        edited((f"{SEED_STAGE}.TP", -1)),
        "info.out_of_range",
        f"{SEED_STAGE}.TP",
    ),
    Hostile(
        "fn-a-float",
        edited(("stages.stage_2000.fn", 1.5)),
        "info.wrong_type",
        "stages.stage_2000.fn",
    ),
    Hostile(
        "files-empty", edited((f"{SEED_STAGE}.files", [])), "info.empty", f"{SEED_STAGE}.files"
    ),
    Hostile(
        "files-a-string",
        edited((f"{SEED_STAGE}.files", "model-1000.params")),
        "info.wrong_type",
        f"{SEED_STAGE}.files",
    ),
    Hostile(
        "file-climbing",
        edited((f"{SEED_STAGE}.files", ["../x"])),
        "info.bad_file_name",
        f"{SEED_STAGE}.files[0]",
    ),
    Hostile(
        "file-with-slash",
        edited((f"{SEED_STAGE}.files", ["a/b"])),
        "info.bad_file_name",
        f"{SEED_STAGE}.files[0]",
    ),
    Hostile(
        "file-listed-twice",
        edited((f"{SEED_STAGE}.files", ["model-1000.params", "model-1000.params"])),
        "info.not_unique",
        f"{SEED_STAGE}.files",
    ),
    Hostile(
        "stage-key-with-slash",
        rename_stage("stage_1000", "stage/1000"),
        "info.bad_file_name",
        "stages.stage/1000",
    ),
    Hostile(
        "stage-key-dotdot",
        rename_stage("stage_1000", ".."),
        "info.bad_file_name",
        "stages...",
    ),
    Hostile("stages-empty", edited(("stages", {})), "info.empty", "stages"),
    Hostile("stages-a-list", edited(("stages", ["stage_1000"])), "info.wrong_type", "stages"),
    Hostile("stage-not-a-mapping", edited((SEED_STAGE, 5)), "info.wrong_type", SEED_STAGE),
    Hostile("object-type-7", edited(("object_type", 7)), "info.invalid_value", "object_type"),
    Hostile("object-type-a-string", edited(("object_type", "2")), "info.wrong_type", "object_type"),
    Hostile(
        "attachment-section-dotdot",
        edited(("attachments", {"..": ["a.txt"]})),
        "info.bad_file_name",
        "attachments...",
    ),
    Hostile(
        "attachment-file-climbing",
        edited(("attachments", {"images": ["../x"]})),
        "info.bad_file_name",
        "attachments.images[0]",
    ),
    Hostile(
        "attachments-not-a-mapping",
        edited(("attachments", ["a.txt"])),
        "info.wrong_type",
        "attachments",
    ),
    Hostile(
        "evaluate-config-not-a-number",
        edited(("evaluate_config", {"iou_thr": "high"})),
        "info.wrong_type",
        "evaluate_config.iou_thr",
    ),
    Hostile(
        "evaluate-config-nan",
        edited(("evaluate_config", {"iou_thr": float("nan")})),
        "info.out_of_range",
        "evaluate_config.iou_thr",
    ),
    Hostile(
        "task-context-a-list", edited(("task_context", [1])), "info.wrong_type", "task_context"
    ),
    Hostile(
        "best-stage-name-an-int",
        edited(("best_stage_name", 2000)),
        "info.wrong_type",
        "best_stage_name",
    ),
    # the schema: missing fields
    Hostile(
        "missing-executor-config",
        edited(("executor_config", DELETE)),
        "info.missing_field",
        "executor_config",
    ),
    Hostile(
        "missing-class-names",
        edited(("executor_config.class_names", DELETE)),
        "info.missing_field",
        "executor_config.class_names",
    ),
    Hostile("missing-stages", edited(("stages", DELETE)), "info.missing_field", "stages"),
    Hostile(
        "missing-best-stage-name",
        edited(("best_stage_name", DELETE)),
        "info.missing_field",
        "best_stage_name",
    ),
    Hostile(
        "missing-stage-files",
        edited((f"{SEED_STAGE}.files", DELETE)),
        "info.missing_field",
        f"{SEED_STAGE}.files",
    ),
    Hostile(
        "missing-mAP",
        edited((f"{SEED_STAGE}.mAP", DELETE)),
        "info.missing_field",
        f"{SEED_STAGE}.mAP",
    ),
    Hostile(
        "missing-timestamp",
        edited((f"{SEED_STAGE}.timestamp", DELETE)),
        "info.missing_field",
        f"{SEED_STAGE}.timestamp",
    ),
    Hostile(
        "missing-stage-name",
        edited((f"{SEED_STAGE}.stage_name", DELETE)),
        "info.missing_field",
        f"{SEED_STAGE}.stage_name",
    ),
    # versions
    Hostile(
        "package-version-3.0.0",
        edited(("package_version", "3.0.0")),
        "info.unknown_version",
        "package_version",
    ),
    Hostile(
        "package-version-2.0.3",
        edited(("package_version", "2.0.3")),
        "info.unknown_version",
        "package_version",
    ),
    Hostile(
        "package-version-a-yaml-float",
        with_info_text(b"package_version: 2.0\n" + info_yaml(seed_info())),
        "info.wrong_type",
        "package_version",
    ),
    # meaning across the package
    Hostile(
        "best-stage-not-a-stage",
        edited(("best_stage_name", "stage_3000")),
        "info.unknown_stage",
        "best_stage_name",
    ),
    Hostile(
        "stage-name-differs-from-key",
        edited((f"{SEED_STAGE}.stage_name", "stage_2000")),
        "info.stage_name_mismatch",
        f"{SEED_STAGE}.stage_name",
    ),
    Hostile(
        "stage-file-missing",
        with_members(drop=["model-2000.params"]),
        "package.missing_file",
        "stages.stage_2000.files[0]",
    ),
    Hostile(
        "stage-file-only-in-another-stage-folder",
        with_members(
            Entry("stage_1000/model-2000.params", b"wrong folder"), drop=["model-2000.params"]
        ),
        "package.missing_file",
        "stages.stage_2000.files[0]",
    ),
    Hostile(
        "attachment-missing",
        edited(("attachments", {"images": ["sample.jpg"]})),
        "package.missing_attachment",
        "attachments.images[0]",
    ),
    # legacy 1.1.0
    Hostile("legacy-without-models", legacy(("models", DELETE)), "info.missing_field", "models"),
    Hostile("legacy-models-empty", legacy(("models", [])), "info.empty", "models"),
    Hostile(
        "legacy-model-file-missing",
        legacy(files=["model-1000.params"]),
        "package.missing_file",
        "stages.default_best_stage.files[1]",
    ),
    # found in review: each crashed validation or stored wrong bytes before
    Hostile("sparse-member", sparse_member, "tar.special_member", "model-9000.params"),
    Hostile(
        "mtime-infinite",
        pax_mtime("1e400"),
        "package.missing_file",
        "stages.stage_1000.files[0]",
    ),
    Hostile(
        "class-name-a-mapping",
        edited(("executor_config.class_names", [{"a": 1}])),
        "info.wrong_type",
        "executor_config.class_names[0]",
    ),
    Hostile(
        "stage-key-fullwidth-dots",
        rename_stage("stage_1000", "\uff0e\uff0e"),
        "info.bad_file_name",
        "stages.\uff0e\uff0e",
    ),
    Hostile(
        "file-with-division-slash",
        edited(("stages.stage_1000.files", ["a\u2215b"])),
        "info.bad_file_name",
        "stages.stage_1000.files[0]",
    ),
    # What real mir 2.3.0 refuses although the format allows it.
    Hostile(
        "timestamp-past-2038",
        edited((f"{SEED_STAGE}.timestamp", 2**31)),
        "info.too_large_for_ymir",
        f"{SEED_STAGE}.timestamp",
    ),
    Hostile(
        "count-past-int32",
        edited((f"{SEED_STAGE}.TP", 2**31)),
        "info.too_large_for_ymir",
        f"{SEED_STAGE}.TP",
    ),
    Hostile(
        "stage-named-like-mirs-model",
        rename_stage("stage_1000", "model.tar.gz"),
        "info.reserved_stage_name",
        "stages.model.tar.gz",
    ),
]


BY_ID = {case.id: case for case in CASES}
assert len(BY_ID) == len(CASES), "hostile case ids must be unique"
