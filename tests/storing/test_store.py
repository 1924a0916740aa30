"""The embedded store: deterministic model hashes, the stored layout, and atomic writes."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import re
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from factory import (
    VALID_PACKAGES,
    Entry,
    attachments_package,
    file_bytes,
    gzip_bytes,
    legacy_package,
    seed_entries,
    seed_info,
    seed_package,
    seed_package_with,
    tar_bytes,
    write_config,
    write_package,
    ymir_layout_package,
)

from ymir_dropbox.config import DEFAULTS, load_config
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.archive import open_package
from ymir_dropbox.reading.validation import validate_file, validated
from ymir_dropbox.storing import importer as importer_module
from ymir_dropbox.storing import store as store_module
from ymir_dropbox.storing.durable import TEMP_PREFIX, TEMP_SUFFIX, remove_temporaries
from ymir_dropbox.storing.importer import import_file
from ymir_dropbox.storing.lifecycle import Status
from ymir_dropbox.storing.store import PackageChanged, store_package, streamed_store

LIMITS = Limits(**DEFAULTS["limits"])
HASH_NAME = re.compile(r"[0-9a-f]{40}")


def store(package: Path, models: Path, level: int = 1) -> tuple[str, Path]:
    """Validate and store ``package`` into ``models`` (created if needed)."""
    models.mkdir(parents=True, exist_ok=True)
    with validated(package, LIMITS) as (report, source):
        assert report.ok and source is not None, report.errors
        return store_package(report, source, models, level, models.parent)


def members(stored: Path) -> list[str]:
    with tarfile.open(stored, "r") as tar:
        return tar.getnames()


def member_bytes(stored: Path, name: str) -> bytes:
    with tarfile.open(stored, "r") as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read()


# -- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALID_PACKAGES))
def test_same_package_in_two_fresh_stores_has_the_same_hash(name: str, tmp_path: Path) -> None:
    package = VALID_PACKAGES[name](tmp_path / "package.tar.gz")

    first, _ = store(package, tmp_path / "store-1" / "models")
    second, _ = store(package, tmp_path / "store-2" / "models")

    assert first == second


def _reordered(entries: list[Entry]) -> list[Entry]:
    return list(reversed(entries))


def _other_times(entries: list[Entry]) -> list[Entry]:
    return [Entry(e.name, e.data, mtime=e.mtime + 86400 * 365) for e in entries]


def _dot_slash(entries: list[Entry]) -> list[Entry]:
    return [Entry(f"./{e.name}", e.data, mtime=e.mtime) for e in entries]


def _gnu(path: Path) -> Path:
    path.write_bytes(gzip_bytes(tar_bytes(seed_entries(), fmt=tarfile.GNU_FORMAT)))
    return path


REPACKINGS: dict[str, Callable[[Path], Path]] = {
    "members-reversed": lambda path: write_package(path, _reordered(seed_entries())),
    "info-first": lambda path: write_package(path, seed_entries(info_last=False)),
    "other-mtimes": lambda path: write_package(path, _other_times(seed_entries())),
    "dot-slash-names": lambda path: write_package(path, _dot_slash(seed_entries())),
    "gnu-tar-format": lambda path: _gnu(path),
    "unlisted-extra-file": lambda path: seed_package_with(
        path, seed_info(), [Entry("notes.txt", b"not stored")]
    ),
}


@pytest.mark.parametrize("repack", REPACKINGS.values(), ids=REPACKINGS.keys())
def test_same_files_packed_differently_have_the_same_hash(
    repack: Callable[[Path], Path], tmp_path: Path
) -> None:
    original, _ = store(seed_package(tmp_path / "a.tar.gz"), tmp_path / "a")

    repacked, _ = store(repack(tmp_path / "b.tar.gz"), tmp_path / "b")

    assert repacked == original


def test_different_content_has_a_different_hash(tmp_path: Path) -> None:
    info = seed_info()
    info["stages"]["stage_2000"]["mAP"] = 0.61

    original, _ = store(seed_package(tmp_path / "a.tar.gz"), tmp_path / "a")
    changed, _ = store(seed_package(tmp_path / "b.tar.gz", info), tmp_path / "b")

    assert changed != original


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_stored_file_sha1_is_its_name(level: int, tmp_path: Path) -> None:
    model_hash, stored = store(seed_package(tmp_path / "p.tar.gz"), tmp_path / "models", level)

    assert stored == tmp_path / "models" / model_hash
    assert HASH_NAME.fullmatch(model_hash)
    assert hashlib.sha1(stored.read_bytes()).hexdigest() == model_hash


# -- what is stored ---------------------------------------------------------------------------

SEED_MEMBERS = [
    "stage_1000/model-1000.params",
    "stage_1000/model-symbol.json",
    "stage_2000/model-2000.params",
    "stage_2000/model-symbol.json",
    "ymir-info.yaml",
]


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param(seed_package, SEED_MEMBERS, id="seed"),
        pytest.param(
            ymir_layout_package,
            [*SEED_MEMBERS[:4], "attachments/images/sample.jpg", "ymir-info.yaml"],
            id="ymir-layout",
        ),
        pytest.param(
            attachments_package,
            [
                *SEED_MEMBERS[:4],
                "attachments/configs/infer.yaml",
                "attachments/images/a.jpg",
                "attachments/images/b.jpg",
                "ymir-info.yaml",
            ],
            id="attachments",
        ),
        pytest.param(
            legacy_package,
            [
                "default_best_stage/model-1000.params",
                "default_best_stage/model-symbol.json",
                "ymir-info.yaml",
            ],
            id="legacy",
        ),
    ],
)
def test_stored_members_are_stage_files_attachments_then_info(
    build: Callable[[Path], Path], expected: list[str], tmp_path: Path
) -> None:
    _, stored = store(build(tmp_path / "p.tar.gz"), tmp_path / "models")

    assert members(stored) == expected


def test_stored_files_hold_the_package_bytes(tmp_path: Path) -> None:
    _, stored = store(seed_package(tmp_path / "p.tar.gz"), tmp_path / "models")

    for name in SEED_MEMBERS[:4]:
        assert member_bytes(stored, name) == file_bytes(name.split("/")[1])


def test_stage_folder_copy_is_stored_rather_than_the_root_copy(tmp_path: Path) -> None:
    package = seed_package_with(
        tmp_path / "p.tar.gz", seed_info(), [Entry("stage_1000/model-1000.params", b"stage's")]
    )

    _, stored = store(package, tmp_path / "models")

    assert member_bytes(stored, "stage_1000/model-1000.params") == b"stage's"


def test_stored_info_is_the_normalized_2_0_0_document(tmp_path: Path) -> None:
    _, stored = store(seed_package(tmp_path / "p.tar.gz"), tmp_path / "models")

    info = yaml.safe_load(member_bytes(stored, "ymir-info.yaml"))

    assert info["package_version"] == "2.0.0"
    assert info["object_type"] == 2
    assert info["best_stage_name"] == "stage_2000"
    assert info["stages"]["stage_1000"]["tp"] == 60
    assert "TP" not in info["stages"]["stage_1000"]
    assert info["task_context"]["producer"] == "fenrir-z"


def test_stored_members_are_plain_files_with_fixed_metadata(tmp_path: Path) -> None:
    _, stored = store(seed_package(tmp_path / "p.tar.gz"), tmp_path / "models")

    with tarfile.open(stored, "r") as tar:
        described = {(m.isreg(), m.mtime, m.uid, m.gid, m.mode) for m in tar.getmembers()}
    assert described == {(True, 0, 0, 0, 0o644)}


def test_stored_file_is_readable_by_others(tmp_path: Path) -> None:
    _, stored = store(seed_package(tmp_path / "p.tar.gz"), tmp_path / "models")

    assert stat.S_IMODE(stored.stat().st_mode) == 0o644


def test_no_temporary_file_is_left_in_models(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for name in ("seed", "legacy-1.1.0", "ymir-layout"):
        store(VALID_PACKAGES[name](tmp_path / f"{name}.tar.gz"), models)

    assert all(HASH_NAME.fullmatch(name) for name in os.listdir(models))
    assert len(os.listdir(models)) == 3


def test_the_stored_tar_is_what_tarfile_writes(tmp_path: Path) -> None:
    """Byte for byte the layout ``tarfile`` (PAX format) writes: headers, padding, the end."""
    package = attachments_package(tmp_path / "p.tar.gz")
    with validated(package, LIMITS) as (report, _):
        pass
    _, stored = store(package, tmp_path / "models")

    expected = io.BytesIO()
    with (
        tarfile.open(package) as source,
        tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in [
            *((f.name, source.extractfile(f.source.name).read()) for f in report.files),  # type: ignore[union-attr]
            ("ymir-info.yaml", member_bytes(stored, "ymir-info.yaml")),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    assert gzip.decompress(stored.read_bytes()) == expected.getvalue()


def test_gnu_gzip_accepts_the_stored_file(tmp_path: Path) -> None:
    _, stored = store(big_package(tmp_path / "big.tar.gz"), tmp_path / "models")

    done = subprocess.run(["gzip", "-t", str(stored)], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr


# -- one more pass over the package -----------------------------------------------------------

ORDERS: dict[str, Callable[[list[Entry]], list[Entry]]] = {
    "as-packed": lambda entries: entries,
    "reversed": lambda entries: list(reversed(entries)),
    "info-first": lambda entries: entries[-1:] + entries[:-1],
}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_members_out_of_their_turn_are_stored_in_order_and_leave_nothing(
    order: Callable[[list[Entry]], list[Entry]], tmp_path: Path
) -> None:
    """The stored order is by stage; whatever the package's order, the spool leaves no trace."""
    package = write_package(tmp_path / "p.tar.gz", order(seed_entries()))
    work = tmp_path / "models"
    work.mkdir()

    _, stored = store(package, work)

    assert members(stored) == SEED_MEMBERS
    for name in SEED_MEMBERS[:4]:
        assert member_bytes(stored, name) == file_bytes(name.split("/")[1])
    assert os.listdir(work) == [stored.name]


def test_a_package_deleted_after_validation_is_stored_from_the_open_file(tmp_path: Path) -> None:
    package = seed_package(tmp_path / "p.tar.gz")
    models = tmp_path / "models"
    models.mkdir()

    with validated(package, LIMITS) as (report, source):
        assert source is not None
        package.unlink()
        model_hash, _ = store_package(report, source, models, 1, tmp_path)

    assert model_hash == store(seed_package(tmp_path / "again.tar.gz"), tmp_path / "again")[0]


def test_a_package_replaced_after_validation_stores_the_bytes_validated(tmp_path: Path) -> None:
    package = seed_package(tmp_path / "p.tar.gz")
    models = tmp_path / "models"
    models.mkdir()

    with validated(package, LIMITS) as (report, source):
        assert source is not None
        other = {**seed_info(), "best_stage_name": "stage_1000"}
        os.replace(seed_package(tmp_path / "other.tar.gz", other), package)
        _, stored = store_package(report, source, models, 1, tmp_path)

    assert yaml.safe_load(member_bytes(stored, "ymir-info.yaml"))["best_stage_name"] == (
        "stage_2000"
    )


def test_a_package_written_to_after_validation_is_not_stored(tmp_path: Path) -> None:
    package = seed_package(tmp_path / "p.tar.gz")
    models = tmp_path / "models"
    models.mkdir()

    with validated(package, LIMITS) as (report, source):
        assert source is not None
        with package.open("r+b") as writer:
            writer.seek(100)
            writer.write(b"x")
        os.utime(package, ns=(0, 10**18))  # a write moves the mtime, even within a clock tick
        with pytest.raises(PackageChanged):
            store_package(report, source, models, 1, tmp_path)

    assert os.listdir(models) == []


def rewrite_through_a_hidden_link(link: Path) -> None:
    """Other bytes (the gzip header's OS byte: the same members, a valid stream), with the
    size and the mtime put back as they were."""
    before = os.stat(link)
    with link.open("r+b") as writer:
        writer.seek(9)
        os_byte = writer.read(1)
        writer.seek(9)
        writer.write(bytes([os_byte[0] ^ 1]))
    os.utime(link, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_other_bytes_restored_to_the_validated_size_and_mtime_are_not_stored(
    tmp_path: Path,
) -> None:
    """Through a hard link the daemon does not see, an uploader rewrites the package after
    validation and puts its mtime back: the pass that stores it hashes what it reads again."""
    package = seed_package(tmp_path / "p.tar.gz")
    models = tmp_path / "models"
    models.mkdir()
    link = tmp_path / ".keep"
    os.link(package, link)

    with validated(package, LIMITS) as (report, source):
        assert source is not None
        rewrite_through_a_hidden_link(link)
        with pytest.raises(PackageChanged, match="not the ones validated"):
            store_package(report, source, models, 1, tmp_path)

    assert os.listdir(models) == []


def test_a_package_that_no_longer_decompresses_is_not_stored(tmp_path: Path) -> None:
    """Were a write to keep the file's size and mtime, the pass itself would notice it."""
    package = big_package(tmp_path / "big.tar.gz")
    models = tmp_path / "models"
    models.mkdir()

    with validated(package, LIMITS) as (report, source):
        assert source is not None
        scribble_keeping_size_and_mtime(package)()
        with pytest.raises(PackageChanged):
            store_package(report, source, models, 1, tmp_path)

    assert os.listdir(models) == []


# -- stored in the pass that validates -------------------------------------------------------


def store_streamed(
    package: Path, models: Path, after_validation: Callable[[], None] = lambda: None
) -> tuple[str, Path]:
    """Validate ``package`` with a streamed store as its sink, run ``after_validation``, then
    commit (as the importer does)."""
    models.mkdir(parents=True, exist_ok=True)
    with (
        open_package(package) as source,
        streamed_store(models, 1, models.parent, package.stat().st_size) as streamed,
    ):
        assert streamed is not None
        report = validate_file(package.name, source, LIMITS, sink=streamed)
        assert report.ok, report.errors
        after_validation()
        return streamed.commit(report, source)


def scribble_keeping_size_and_mtime(package: Path) -> Callable[[], None]:
    """Overwrite the middle of the package, leaving what tells a write (size, mtime) as it
    was: a pass that read the file again would find it broken."""

    def scribble() -> None:
        before = package.stat()
        with package.open("r+b") as writer:
            writer.seek(before.st_size // 2)
            writer.write(bytes(min(4096, before.st_size // 4)))
        os.utime(package, ns=(before.st_atime_ns, before.st_mtime_ns))

    return scribble


def ymir_layout_entries(weights: bytes = b"") -> list[Entry]:
    """YMIR's own layout, ``ymir-info.yaml`` last, the files in the stored order (as ``mir``
    packs them); ``weights`` as the stage files' bytes if given."""
    entries = ymir_layout_package_entries()
    info, files = entries[0], entries[1:]
    if weights:
        files = [Entry(e.name, weights if e.name.endswith(".params") else e.data) for e in files]
    return [*files, info]


def ymir_layout_package_entries() -> list[Entry]:
    with tarfile.open(ymir_layout_package(Path(tempfile.mkdtemp()) / "p.tar.gz")) as tar:
        return [
            Entry(member.name, tar.extractfile(member).read())  # type: ignore[union-attr]
            for member in tar.getmembers()
        ]


def swapped_stage_folders(entries: list[Entry]) -> list[Entry]:
    """stage_2000's files before stage_1000's: not the stored order."""
    first = [e for e in entries if e.name.startswith("stage_1000/")]
    second = [e for e in entries if e.name.startswith("stage_2000/")]
    rest = [e for e in entries if e not in first and e not in second]
    return [*second, *first, *rest]


STREAMED_CASES: dict[str, Callable[[Path], Path]] = {
    **{f"valid-{name}": build for name, build in VALID_PACKAGES.items()},
    **{f"repacked-{name}": build for name, build in REPACKINGS.items()},
    "ymir-layout-info-last": lambda path: write_package(path, ymir_layout_entries()),
    "stage-folders-swapped-info-last": lambda path: write_package(
        path, swapped_stage_folders(ymir_layout_entries())
    ),
    "unlisted-file-in-a-stage-folder": lambda path: write_package(
        path, [Entry("stage_1000/notes.txt", b"not stored"), *ymir_layout_entries()]
    ),
    "root-copy-then-stage-copy": lambda path: write_package(
        path,
        [
            *seed_entries(info_last=False),
            Entry("stage_1000/model-1000.params", b"the stage's own copy"),
        ],
    ),
}


@pytest.mark.parametrize("build", STREAMED_CASES.values(), ids=STREAMED_CASES.keys())
def test_stored_in_the_validating_pass_as_in_a_pass_of_its_own(
    build: Callable[[Path], Path], tmp_path: Path
) -> None:
    package = build(tmp_path / "p.tar.gz")

    streamed, stored = store_streamed(package, tmp_path / "streamed")
    separate, _ = store(package, tmp_path / "separate")

    assert streamed == separate
    assert os.listdir(tmp_path / "streamed") == [streamed]
    assert hashlib.sha1(stored.read_bytes()).hexdigest() == streamed


READ_ONCE: dict[str, tuple[Callable[[Path], Path], int]] = {
    "info-first": (
        lambda path: big_package(path, info_first=True),
        store_module.SPOOL_BEFORE_INFO,
    ),
    # What mir packs: every stage's folder, in order, then ymir-info.yaml. The files are
    # written ahead, before the stored order is known (none may wait in the tiny spool).
    "stage-folders-before-the-info": (
        lambda path: write_package(
            path, ymir_layout_entries(random.Random(4).randbytes(4 * FILE_SIZE_LIMIT))
        ),
        1000,
    ),
    # The seed's example: three small files at the root, then ymir-info.yaml.
    "small-files-before-the-info": (seed_package, store_module.SPOOL_BEFORE_INFO),
}


@pytest.mark.parametrize(("build", "spool_limit"), READ_ONCE.values(), ids=READ_ONCE.keys())
def test_a_package_stored_in_the_validating_pass_is_read_once(
    build: Callable[[Path], Path],
    spool_limit: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pass that validates stores it: the pass that reads the file again never runs."""
    monkeypatch.setattr(store_module, "SPOOL_BEFORE_INFO", spool_limit)
    package = build(tmp_path / "p.tar.gz")
    expected, _ = store(package, tmp_path / "separate")

    def second_pass(*_: Any) -> str:
        raise AssertionError("the package was read a second time")

    monkeypatch.setattr(store_module, "write_tar", second_pass)
    model_hash, _ = store_streamed(package, tmp_path / "models")

    assert model_hash == expected


def test_a_write_during_the_validating_pass_is_caught_even_with_its_mtime_set_back(
    tmp_path: Path,
) -> None:
    """The pass hashes and stores the file from two reads; a writer that kept the file open
    (or a hidden hard link) could write between them and set the mtime back: the ctime,
    which no one sets back, shows the write, and nothing is stored."""
    package = seed_package(tmp_path / "p.tar.gz")

    with pytest.raises(PackageChanged, match="written to while it was stored"):
        store_streamed(package, tmp_path / "models", scribble_keeping_size_and_mtime(package))

    assert os.listdir(tmp_path / "models") == []


def test_more_than_the_spool_allows_before_the_info_is_stored_in_a_second_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = seed_package(tmp_path / "p.tar.gz")
    expected, _ = store(package, tmp_path / "separate")
    monkeypatch.setattr(store_module, "SPOOL_BEFORE_INFO", 1000)

    model_hash, _ = store_streamed(package, tmp_path / "models")

    assert model_hash == expected
    with pytest.raises(PackageChanged):  # proof that the second pass reads the file again
        store_streamed(package, tmp_path / "again", scribble_keeping_size_and_mtime(package))
    assert os.listdir(tmp_path / "again") == []


def test_an_invalid_package_leaves_nothing_in_the_store(tmp_path: Path) -> None:
    info = seed_info()
    info["best_stage_name"] = "stage_3000"
    package = seed_package(tmp_path / "p.tar.gz", info)
    models = tmp_path / "models"
    models.mkdir()

    with (
        open_package(package) as source,
        streamed_store(models, 1, tmp_path, package.stat().st_size) as streamed,
    ):
        report = validate_file(package.name, source, LIMITS, sink=streamed)

    assert not report.ok
    assert os.listdir(models) == []


UNWRITABLE_SCRIPT = r"""
import resource, sys, threading
from pathlib import Path
from ymir_dropbox.storing.store import streamed_store

models = Path(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))  # EFBIG on any write
for _ in range(3):
    with streamed_store(models, 1, models.parent, 64 * 1024 * 1024) as streamed:
        assert streamed is None, "a store that cannot be written is not used"
print(sorted(thread.name for thread in threading.enumerate()))
"""


def test_a_store_that_cannot_be_written_leaves_no_file_and_no_thread(tmp_path: Path) -> None:
    """Python ignores SIGXFSZ: a write past RLIMIT_FSIZE fails with EFBIG, as on a full disk,
    from the first bytes (the gzip header) on."""
    models = tmp_path / "models"
    models.mkdir()

    done = subprocess.run(
        [sys.executable, "-c", UNWRITABLE_SCRIPT, str(models)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "['MainThread']"
    assert os.listdir(models) == []


MEMORY_SCRIPT = r"""
import json, re, sys
from pathlib import Path
from ymir_dropbox.config import DEFAULTS, load_config
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.validation import validated
from ymir_dropbox.storing.store import store_package

package, models = Path(sys.argv[1]), Path(sys.argv[2])
with validated(package, Limits(**DEFAULTS["limits"])) as (report, source):
    assert report.ok, report.errors
    store_package(report, source, models, 1, models.parent)
status = Path("/proc/self/status").read_text()
print(int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)))
"""


def test_memory_does_not_grow_with_the_package(tmp_path: Path) -> None:
    """Validating and storing 96 MiB of weights, packed out of order, stays under 64 MiB
    (the process's own peak, VmHWM: ru_maxrss would also count pytest's at the fork)."""
    weights = random.Random(2).randbytes(48 * 1024 * 1024)
    entries = seed_entries()
    entries[0] = Entry("model-1000.params", weights)
    entries[1] = Entry("model-2000.params", weights[::-1])
    package = write_package(tmp_path / "big.tar.gz", list(reversed(entries)))
    models = tmp_path / "models"
    models.mkdir()

    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(package), str(models)],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout) < 64 * 1024


# -- a crash while writing --------------------------------------------------------------------

CRASH_SCRIPT = r"""
import resource, signal, sys
from pathlib import Path
from ymir_dropbox.config import DEFAULTS, load_config
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.storing.store import store_package
from ymir_dropbox.reading.validation import validated

package, models, on_signal, limit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
with validated(package, Limits(**DEFAULTS["limits"])) as (report, source):
    assert report.ok, report.errors
    # Python ignores SIGXFSZ at start-up; "default" restores the kernel's default: death.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN if on_signal == "ignore" else signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    try:
        store_package(report, source, models, 1, models.parent)
    except OSError as error:
        print("store failed", error.errno)
        sys.exit(3)
print("stored")
"""
FILE_SIZE_LIMIT = 64 * 1024


def big_package(path: Path, info_first: bool = False) -> Path:
    """A package whose stored form cannot fit under FILE_SIZE_LIMIT (random weights)."""
    info = Entry("ymir-info.yaml", yaml.safe_dump(seed_info()).encode())
    weights = random.Random(1).randbytes(4 * FILE_SIZE_LIMIT)
    entries = [
        Entry("model-1000.params", weights),
        Entry("model-2000.params", weights[::-1]),
        Entry("model-symbol.json", b"{}"),
    ]
    return write_package(path, [info, *entries] if info_first else [*entries, info])


def crash_while_storing(tmp_path: Path, on_signal: str) -> tuple[Any, Path]:
    models = tmp_path / "models"
    models.mkdir()
    package = big_package(tmp_path / "big.tar.gz")
    done = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, package, models, on_signal, str(FILE_SIZE_LIMIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, models


def test_big_package_stores_without_a_file_size_limit(tmp_path: Path) -> None:
    model_hash, _ = store(big_package(tmp_path / "big.tar.gz"), tmp_path / "models")

    assert (tmp_path / "models" / model_hash).stat().st_size > FILE_SIZE_LIMIT


def test_failed_write_leaves_no_file_under_a_hash_or_temporary_name(tmp_path: Path) -> None:
    done, models = crash_while_storing(tmp_path, "ignore")

    assert done.returncode == 3, done.stderr
    assert done.stdout.split() == ["store", "failed", "27"]  # EFBIG: file too large
    assert os.listdir(models) == []


def test_killed_write_leaves_only_a_temporary_file(tmp_path: Path) -> None:
    done, models = crash_while_storing(tmp_path, "default")

    assert done.returncode == -signal.SIGXFSZ, done.stderr
    left = os.listdir(models)
    assert len(left) == 1
    assert left[0].startswith(TEMP_PREFIX) and left[0].endswith(TEMP_SUFFIX)


def test_remove_temporaries_clears_what_a_killed_write_left(tmp_path: Path) -> None:
    _, models = crash_while_storing(tmp_path, "default")

    removed = remove_temporaries(models)

    assert len(removed) == 1
    assert os.listdir(models) == []


def test_remove_temporaries_leaves_everything_else(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    kept = ["0" * 40, "notes.tmp", ".ymir-dropbox-folder.tmp", ".ymir-dropbox-link.tmp"]
    (models / kept[0]).write_bytes(b"model")
    (models / kept[1]).write_bytes(b"someone else's")
    (models / kept[2]).mkdir()
    (models / kept[3]).symlink_to(models / kept[0])
    (models / ".ymir-dropbox-abc.tmp").write_bytes(b"ours")

    removed = remove_temporaries(models)

    assert [path.name for path in removed] == [".ymir-dropbox-abc.tmp"]
    assert sorted(os.listdir(models)) == sorted(kept)


def test_a_write_after_a_redeliverys_hash_is_never_stored_under_that_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the size of an import is hashed first (is it a re-delivery?). A writer that
    kept the file open rewrites it right after that hash, the mtime set back: what would be
    stored is not what was hashed, and nothing is."""
    config = load_config(write_config(tmp_path / "config.toml"))
    config.ensure_folders()
    first = seed_package(tmp_path / "first.tar.gz")
    assert import_file(config, first).status is Status.IMPORTED
    other = tmp_path / "other.tar.gz"
    other.write_bytes(first.read_bytes())
    rewrite_through_a_hidden_link(other)  # the same size, other bytes: hashed, not a duplicate
    real_sha256 = importer_module.file_sha256

    def hashed_then_rewritten(opened: Any) -> str:
        digest = real_sha256(opened)
        rewrite_through_a_hidden_link(other)  # back to the first's bytes, mtime set back
        return digest

    monkeypatch.setattr(importer_module, "file_sha256", hashed_then_rewritten)
    models_before = sorted(os.listdir(config.paths.models))

    with pytest.raises(DropboxError, match="written to while it was hashed"):
        import_file(config, other)

    assert sorted(os.listdir(config.paths.models)) == models_before
