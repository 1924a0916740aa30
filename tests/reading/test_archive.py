"""Reading a package safely: member names, the one streaming pass, the spool, opening the file."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from factory import Entry, gzip_bytes, seed_entries, seed_package, tar_bytes, write_package
from hostile import CASES, Hostile, member_bytes, params

from ymir_dropbox.config import DEFAULTS
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.archive import (
    INFO_NAME,
    PackageUnreadable,
    clean_member_name,
    file_sha256,
    open_package,
    package_sha256,
    scan_file,
    scan_package,
)

LIMITS = Limits(**DEFAULTS["limits"])

ACCEPTED = {
    "plain": ("model-1000.params", "model-1000.params"),
    "dot-slash": ("./model-1000.params", "model-1000.params"),
    "trailing-slash": ("stage_1000/", "stage_1000"),
    "double-slash": ("stage_1000//model.params", "stage_1000/model.params"),
    "inner-dot": ("stage_1000/./model.params", "stage_1000/model.params"),
    "dots-inside-a-name": ("a..b", "a..b"),
    "leading-dots": ("..hidden", "..hidden"),
    "trailing-dots": ("name..", "name.."),
    "three-dots": ("...", "..."),
    "unicode": ("modèle/权重.params", "modèle/权重.params"),
    "component-of-255-bytes": ("x" * 255, "x" * 255),
    "colon-after-two-letters": ("ab:c", "ab:c"),
}


@pytest.mark.parametrize(("raw", "cleaned"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_member_names(raw: str, cleaned: str) -> None:
    assert clean_member_name(raw) == (cleaned, None)


REFUSED = {
    "empty": ("", "tar.bad_name"),
    "dotdot": ("..", "tar.path_traversal"),
    "dotdot-slash": ("../x", "tar.path_traversal"),
    "dotdot-at-end": ("a/..", "tar.path_traversal"),
    "dotdot-inside": ("a/../b", "tar.path_traversal"),
    "absolute": ("/x", "tar.absolute_path"),
    "absolute-double-slash": ("//x", "tar.absolute_path"),
    "windows-drive": ("c:x", "tar.absolute_path"),
    "windows-drive-fullwidth-colon": ("c\uff1ax", "tar.absolute_path"),
    "backslash-dotdot": ("a\\..\\..\\x", "tar.path_traversal"),
    "backslash": ("a\\b", "tar.bad_name"),
    "two-dot-leader": ("\u2025/x", "tar.path_traversal"),
    "one-dot-leaders": ("\u2024\u2024/x", "tar.path_traversal"),
    "fullwidth-full-stops": ("\uff0e\uff0e/x", "tar.path_traversal"),
    "small-full-stops": ("\ufe52\ufe52/x", "tar.path_traversal"),
    "division-slash": ("a\u2215b", "tar.path_traversal"),
    "fraction-slash": ("a\u2044b", "tar.path_traversal"),
    "big-solidus": ("a\u29f8b", "tar.path_traversal"),
    "fullwidth-solidus": ("a\uff0fb", "tar.path_traversal"),
    "newline": ("a\nb", "tar.bad_name"),
    "nul": ("a\x00b", "tar.bad_name"),
    "delete": ("a\x7fb", "tar.bad_name"),
    "c1-csi": ("a\x9b2Jb", "tar.bad_name"),
    "right-to-left-override": ("model\u202ezg.rat.tar.gz", "tar.bad_name"),
    "isolate": ("a\u2066b", "tar.bad_name"),
    "not-utf8": ("a\udcffb", "tar.bad_name"),
    "name-over-4096-bytes": ("a/" * 2049, "tar.bad_name"),
    "component-over-255-bytes": ("x" * 256, "tar.bad_name"),
    "multibyte-component-over-255-bytes": ("é" * 128, "tar.bad_name"),
    "only-slashes": ("///", "tar.absolute_path"),
}


@pytest.mark.parametrize(("raw", "code"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_member_names(raw: str, code: str) -> None:
    cleaned, reason = clean_member_name(raw)

    assert cleaned is None
    assert reason is not None and reason[0] == code


@pytest.mark.parametrize("raw", [".", "./"])
def test_the_dot_folder_is_harmless(tmp_path: Path, raw: str) -> None:
    """`tar -czf package.tar.gz .` writes the folder `.` first."""
    package = write_package(
        tmp_path / "p.tar.gz", [Entry(raw, kind=tarfile.DIRTYPE), *seed_entries()]
    )

    assert scan_package(package, LIMITS).problems == []


# -- the pass over the archive ----------------------------------------------------------------


def test_scan_lists_the_regular_members_with_their_sizes(tmp_path: Path) -> None:
    scan = scan_package(seed_package(tmp_path / "p.tar.gz"), LIMITS)

    assert scan.problems == []
    assert {name: m.size for name, m in scan.members.items()} == {
        entry.name: len(entry.data) for entry in seed_entries()
    }


def test_scan_keeps_the_info_bytes(tmp_path: Path) -> None:
    scan = scan_package(seed_package(tmp_path / "p.tar.gz"), LIMITS)

    info = next(entry for entry in seed_entries() if entry.name == INFO_NAME)
    assert scan.info == info.data
    assert scan.info_member is not None and scan.info_member.mtime == info.mtime


def test_scan_skips_folders(tmp_path: Path) -> None:
    entries = [Entry("stage_1000", kind=tarfile.DIRTYPE), *seed_entries()]

    scan = scan_package(write_package(tmp_path / "p.tar.gz", entries), LIMITS)

    assert "stage_1000" not in scan.members
    assert scan.problems == []


def test_scan_counts_the_package_and_unpacked_bytes(tmp_path: Path) -> None:
    package = seed_package(tmp_path / "p.tar.gz")

    scan = scan_package(package, LIMITS)

    assert scan.package_bytes == package.stat().st_size
    assert scan.unpacked_bytes == sum(len(entry.data) for entry in seed_entries())


def test_scan_computes_the_package_sha256(tmp_path: Path) -> None:
    package = seed_package(tmp_path / "p.tar.gz")

    scan = scan_package(package, LIMITS)

    assert scan.sha256 == hashlib.sha256(package.read_bytes()).hexdigest()


def test_scan_hashes_even_a_broken_package(tmp_path: Path) -> None:
    package = tmp_path / "p.tar.gz"
    package.write_bytes(b"not a gzip at all" * 1000)

    scan = scan_package(package, LIMITS)

    assert scan.sha256 == hashlib.sha256(package.read_bytes()).hexdigest()


def test_a_scan_that_stores_nothing_need_not_hash(tmp_path: Path) -> None:
    """`ymir-dropbox validate` shows no sha256: its pass is not held up by the hash."""
    package = seed_package(tmp_path / "p.tar.gz")

    with open_package(package) as opened:
        scan = scan_file(opened, LIMITS, hashed=False)

    assert scan.sha256 is None
    assert scan.members == scan_package(package, LIMITS).members
    assert not scan.problems


def test_scan_with_a_known_sha256_does_not_hash_again(tmp_path: Path) -> None:
    package = seed_package(tmp_path / "p.tar.gz")

    scan = scan_package(package, LIMITS, sha256="0" * 64)

    assert scan.sha256 == "0" * 64
    assert scan.problems == []


def test_package_sha256_is_the_file_sha256(tmp_path: Path) -> None:
    package = tmp_path / "p.tar.gz"
    package.write_bytes(os.urandom(5 * 1024 * 1024 + 7))  # more than one read

    assert package_sha256(package) == hashlib.sha256(package.read_bytes()).hexdigest()


def test_a_sha256_of_the_first_bytes_ignores_what_a_writer_appends(tmp_path: Path) -> None:
    package = tmp_path / "p.tar.gz"
    first = os.urandom(3 * 1024 * 1024 + 5)  # more than one read, not a whole one
    package.write_bytes(first)

    with open_package(package) as opened:
        with package.open("ab") as writer:
            writer.write(b"appended after it was looked at")
        digest = file_sha256(opened, len(first))

    assert digest == hashlib.sha256(first).hexdigest()


def test_package_sha256_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "link.tar.gz").symlink_to(seed_package(tmp_path / "real.tar.gz"))

    with pytest.raises(OSError):
        package_sha256(tmp_path / "link.tar.gz")


def test_a_large_package_is_hashed_while_it_is_read(tmp_path: Path) -> None:
    """Above 8 MiB the sha256 is computed in a second thread: still the file's sha256."""
    entries = [*seed_entries(), Entry("weights.bin", os.urandom(12 * 1024 * 1024))]
    package = write_package(tmp_path / "p.tar.gz", entries)

    scan = scan_package(package, LIMITS)

    assert scan.sha256 == hashlib.sha256(package.read_bytes()).hexdigest()
    assert scan.members["weights.bin"].size == 12 * 1024 * 1024


def test_member_offsets_point_at_their_data(tmp_path: Path) -> None:
    package = seed_package(tmp_path / "p.tar.gz")
    unpacked = gzip.decompress(package.read_bytes())

    scan = scan_package(package, LIMITS)

    for entry in seed_entries():
        member = scan.members[entry.name]
        assert unpacked[member.offset : member.offset + member.size] == entry.data


def test_long_names_and_pax_headers_are_read_as_tarfile_reads_them(tmp_path: Path) -> None:
    long_name = "stage_1000/" + "n" * 150 + ".params"
    entries = [Entry(long_name, b"long"), Entry("modèle.params", b"pax"), *seed_entries()]
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        package = tmp_path / f"p{fmt}.tar.gz"
        package.write_bytes(gzip_bytes(tar_bytes(entries, fmt=fmt)))
        unpacked = gzip.decompress(package.read_bytes())

        scan = scan_package(package, LIMITS)

        assert scan.problems == []
        assert sorted(scan.members) == sorted(entry.name for entry in entries)
        with tarfile.open(package) as tar:
            for info in tar:
                member = scan.members[info.name]
                assert (member.offset, member.size) == (info.offset_data, info.size)
                assert unpacked[member.offset : member.offset + member.size] == (
                    tar.extractfile(info).read()  # type: ignore[union-attr]
                )


# -- memory: a header may claim a lot; nothing is read before it is judged ---------------------

# The peak is the process's own high-water mark (VmHWM): getrusage's ru_maxrss also counts
# the parent's resident memory at the time of the fork, a pytest worker's 90 MB.
PEAK_SCRIPT = r"""
import json, re, resource, sys
from pathlib import Path
from ymir_dropbox.config import DEFAULTS
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.validation import validate_package

# A runaway fails here (MemoryError) rather than take the machine down.
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
report = validate_package(Path(sys.argv[1]), Limits(**DEFAULTS["limits"]))
status = Path("/proc/self/status").read_text()
peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
print(json.dumps({"codes": [problem.code for problem in report.errors], "peak_kib": peak_kib}))
"""
MEMORY_CEILING_MIB = 64
HEADER_BOMBS = [case for case in CASES if case.code == "tar.header_too_large"]


@pytest.mark.parametrize("case", params(HEADER_BOMBS))
def test_header_bombs_are_refused_in_bounded_memory(case: Hostile, tmp_path: Path) -> None:
    package = case.build(tmp_path / "bomb.tar.gz")

    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(package)],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert case.code in result["codes"]
    assert result["peak_kib"] < MEMORY_CEILING_MIB * 1024


def test_header_bombs_are_small_packages() -> None:
    """They are bombs because they are small: a few hundred kB claim a quarter of a GiB."""
    assert len(HEADER_BOMBS) >= 5


def test_zero_padding_after_the_tar_is_fine(tmp_path: Path) -> None:
    package = tmp_path / "p.tar.gz"
    package.write_bytes(gzip_bytes(tar_bytes(seed_entries()) + bytes(100_000)))

    assert scan_package(package, LIMITS).problems == []


def test_a_second_gzip_member_of_zeros_is_fine(tmp_path: Path) -> None:
    package = tmp_path / "p.tar.gz"
    package.write_bytes(gzip_bytes(tar_bytes(seed_entries())) + gzip_bytes(bytes(10_240)))

    assert scan_package(package, LIMITS).problems == []


def test_truncation_inside_a_member_is_reported(tmp_path: Path) -> None:
    data = tar_bytes(seed_entries())
    package = tmp_path / "p.tar.gz"
    package.write_bytes(gzip_bytes(data[:1500]))

    codes = [problem.code for problem in scan_package(package, LIMITS).problems]

    assert codes == ["container.truncated"]


FIRST_MEMBER = 512 + 2048  # header and data of model-1000.params in seed_entries()
GARBAGE_BLOCK = b"garbage!" * 64


def test_garbage_after_a_member_is_trailing_data(tmp_path: Path) -> None:
    data = tar_bytes(seed_entries())
    package = tmp_path / "p.tar.gz"
    package.write_bytes(gzip_bytes(data[:FIRST_MEMBER] + GARBAGE_BLOCK * 2 + data[FIRST_MEMBER:]))

    codes = [problem.code for problem in scan_package(package, LIMITS).problems]

    assert codes == ["container.trailing_data"]


def test_a_damaged_last_header_is_reported(tmp_path: Path) -> None:
    members = b"".join(member_bytes(entry.name, entry.data) for entry in seed_entries())
    package = tmp_path / "p.tar.gz"
    package.write_bytes(gzip_bytes(members + GARBAGE_BLOCK + bytes(10240)))

    assert scan_package(package, LIMITS).problems != []


def test_members_without_an_end_marker_are_fine(tmp_path: Path) -> None:
    members = b"".join(member_bytes(entry.name, entry.data) for entry in seed_entries())
    package = tmp_path / "p.tar.gz"
    package.write_bytes(gzip_bytes(members + bytes(1024)))

    scan = scan_package(package, LIMITS)

    assert scan.problems == []
    assert sorted(scan.members) == sorted(entry.name for entry in seed_entries())


def test_ratio_is_not_judged_below_one_mib(tmp_path: Path) -> None:
    entries = [*seed_entries(), Entry("zeros.bin", bytes(900_000))]

    scan = scan_package(write_package(tmp_path / "p.tar.gz", entries), LIMITS)

    assert scan.problems == []


def test_a_limit_stops_the_pass_early(tmp_path: Path) -> None:
    entries = [Entry(f"file-{n}", b"x") for n in range(100)]
    limits = Limits(**{**DEFAULTS["limits"], "max_members": 10})

    scan = scan_package(write_package(tmp_path / "p.tar.gz", entries), limits)

    assert [problem.code for problem in scan.problems] == ["tar.too_many_members"]
    assert len(scan.members) == 10


# -- opening the file -------------------------------------------------------------------------


def test_open_package_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "link.tar.gz").symlink_to(seed_package(tmp_path / "real.tar.gz"))

    with pytest.raises(OSError), open_package(tmp_path / "link.tar.gz"):
        pass


def test_open_package_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.tar.gz")

    with pytest.raises(PackageUnreadable), open_package(tmp_path / "pipe.tar.gz"):
        pass


def test_open_package_refuses_a_folder(tmp_path: Path) -> None:
    (tmp_path / "folder.tar.gz").mkdir()

    with pytest.raises(OSError), open_package(tmp_path / "folder.tar.gz"):
        pass


def test_scan_of_a_fifo_raises_rather_than_hangs(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.tar.gz")

    with pytest.raises(OSError):
        scan_package(tmp_path / "pipe.tar.gz", LIMITS)
