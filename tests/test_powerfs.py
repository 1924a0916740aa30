"""The power-loss filesystem (tests/powerfs.py), one rule per test: after a cut, the mount
holds what fsync made durable and nothing else."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from powerfs import PowerFSUnavailable, PowerLossMount, require_fuse


@contextmanager
def mounted(backing: Path, mount: Path) -> Iterator[PowerLossMount]:
    """The filesystem mounted, and unmounted afterwards; fails saying what to install."""
    disk = PowerLossMount(backing, mount)
    try:
        disk.start()
    except PowerFSUnavailable as error:
        pytest.fail(str(error))
    try:
        yield disk
    finally:
        disk.close()
    assert not os.path.ismount(mount)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowerLossMount]:
    with mounted(tmp_path / "backing", tmp_path / "mount") as disk:
        yield disk


def write(path: Path, data: bytes, sync: bool = False) -> None:
    with path.open("wb") as stream:
        stream.write(data)
        if sync:
            stream.flush()
            os.fsync(stream.fileno())


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_file(folder: Path, name: str, data: bytes) -> Path:
    """A file written the careful way: content and name both durable."""
    folder.mkdir(exist_ok=True)
    fsync(folder.parent)
    path = folder / name
    write(path, data, sync=True)
    fsync(folder)
    return path


def test_an_unsynced_write_is_lost(disk: PowerLossMount) -> None:
    path = durable_file(disk.mount, "file", b"kept")
    with path.open("r+b") as stream:
        stream.write(b"lost, and longer")

    disk.cut()

    assert path.read_bytes() == b"kept"


def test_a_synced_write_is_kept(disk: PowerLossMount) -> None:
    path = durable_file(disk.mount, "file", b"old")
    write(path, b"new and synced", sync=True)

    disk.cut()

    assert path.read_bytes() == b"new and synced"


def test_a_new_file_never_fsynced_comes_back_empty(disk: PowerLossMount) -> None:
    path = disk.mount / "file"
    write(path, b"never synced")
    fsync(disk.mount)  # the name is durable, the content is not

    disk.cut()

    assert path.read_bytes() == b""


def test_a_name_never_made_durable_disappears(disk: PowerLossMount) -> None:
    path = disk.mount / "file"
    write(path, b"synced content", sync=True)  # the folder is never fsynced

    disk.cut()

    assert not path.exists()
    assert os.listdir(disk.mount) == []


def test_a_new_folder_disappears_with_its_files_unless_its_parent_is_fsynced(
    disk: PowerLossMount,
) -> None:
    folder = disk.mount / "new"
    folder.mkdir()
    write(folder / "file", b"synced", sync=True)
    fsync(folder)  # the file's name is durable in the folder, the folder's name is not

    disk.cut()

    assert not folder.exists()


@pytest.mark.parametrize("across", [False, True], ids=["same folder", "across folders"])
def test_a_rename_not_followed_by_a_folder_fsync_is_undone(
    disk: PowerLossMount, across: bool
) -> None:
    source = durable_file(disk.mount / "inbox", "package", b"bytes")
    target = (disk.mount / "done" if across else source.parent) / "package.renamed"
    target.parent.mkdir(exist_ok=True)
    fsync(disk.mount)
    source.rename(target)

    disk.cut()

    assert source.read_bytes() == b"bytes"
    assert not target.exists()


def test_an_unlink_not_followed_by_a_folder_fsync_is_undone(disk: PowerLossMount) -> None:
    path = durable_file(disk.mount, "file", b"still here")
    path.unlink()

    disk.cut()

    assert path.read_bytes() == b"still here"


def test_a_folder_fsync_makes_creates_renames_and_unlinks_durable(disk: PowerLossMount) -> None:
    renamed = durable_file(disk.mount, "renamed", b"r")
    removed = durable_file(disk.mount, "removed", b"u")
    created = disk.mount / "created"
    write(created, b"c", sync=True)
    renamed.rename(disk.mount / "renamed.new")
    removed.unlink()
    fsync(disk.mount)

    disk.cut()

    assert sorted(os.listdir(disk.mount)) == ["created", "renamed.new"]
    assert created.read_bytes() == b"c"
    assert (disk.mount / "renamed.new").read_bytes() == b"r"


@pytest.mark.parametrize("synced", ["source", "target"])
def test_a_rename_across_folders_is_committed_whole_by_either_folder(
    disk: PowerLossMount, synced: str
) -> None:
    source = durable_file(disk.mount / "processing", "package", b"bytes")
    target = disk.mount / "done" / "package"
    target.parent.mkdir()
    fsync(disk.mount)
    source.rename(target)
    fsync(source.parent if synced == "source" else target.parent)

    disk.cut()

    assert not source.exists()
    assert target.read_bytes() == b"bytes"


def test_a_file_comes_back_under_one_name_only(disk: PowerLossMount) -> None:
    """Renamed a -> b -> c, with only a fsynced: the first rename is durable, not the second."""
    for name in ("a", "b", "c"):
        (disk.mount / name).mkdir()
    fsync(disk.mount)
    first = durable_file(disk.mount / "a", "file", b"bytes")
    first.rename(disk.mount / "b" / "file")
    (disk.mount / "b" / "file").rename(disk.mount / "c" / "file")
    fsync(disk.mount / "a")

    disk.cut()

    found = sorted(str(path.relative_to(disk.mount)) for path in disk.mount.rglob("file"))
    assert found == ["b/file"]


WRITER = """
import os, sys
path = sys.argv[1]
with open(path, "wb") as stream:
    stream.write(b"synced")
    stream.flush()
    os.fsync(stream.fileno())
folder = os.open(os.path.dirname(path), os.O_RDONLY)
os.fsync(folder)
print("ready", flush=True)
with open(path, "r+b") as stream:
    while True:
        stream.seek(0)
        stream.write(b"written after the last fsync")
        stream.flush()
"""


def test_a_cut_kills_the_processes_and_none_of_their_writes_lands(disk: PowerLossMount) -> None:
    path = disk.mount / "file"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"ready\n"

        disk.cut([writer.pid])

        assert writer.poll() == -9  # dead when the cut returns
        assert path.read_bytes() == b"synced"
    finally:
        writer.kill()
        writer.wait()


SQLITE_WRITER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA journal_mode = wal")
connection.execute("PRAGMA synchronous = FULL")
connection.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, data BLOB)")
number = 0
while True:
    number += 1
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO rows VALUES (?, randomblob(20000))", (number,))
    connection.execute("COMMIT")
    print(number, flush=True)
"""


def test_sqlite_in_wal_mode_keeps_committed_rows_across_a_cut(disk: PowerLossMount) -> None:
    """A writer commits row after row (synchronous = FULL) while this process reads the same
    database (the -shm file mapped by both); the cut comes at any moment."""
    database = disk.mount / "ledger.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", SQLITE_WRITER, str(database)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert writer.stdout is not None
        committed = [int(writer.stdout.readline())]
        reader = sqlite3.connect(database, timeout=10)
        try:
            while committed[-1] < 300:  # past a WAL checkpoint or two
                assert reader.execute("SELECT count(*) FROM rows").fetchone()[0] >= committed[-1]
                committed.append(int(writer.stdout.readline()))
        finally:
            reader.close()

        disk.cut([writer.pid])

        committed += [int(line) for line in writer.stdout.read().split()]
    finally:
        writer.kill()
        writer.wait()
    connection = sqlite3.connect(database)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = {row[0] for row in connection.execute("SELECT id FROM rows")}
    finally:
        connection.close()
    assert set(committed) <= kept


def test_a_missing_fuse_fails_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")  # no fusermount to be found

    with pytest.raises(PowerFSUnavailable, match=r"apt-get install fuse libfuse2"):
        require_fuse()


def test_the_backing_folder_is_put_back_to_the_durable_state(disk: PowerLossMount) -> None:
    """The mount is a pass-through: the cut rewrites the backing folder itself."""
    durable_file(disk.mount, "kept", b"k")
    write(disk.mount / "lost", b"l")

    disk.cut()

    assert sorted(os.listdir(disk.backing)) == ["kept"]
    assert (disk.backing / "kept").read_bytes() == b"k"


def test_existing_files_are_durable_at_mount(tmp_path: Path) -> None:
    backing = tmp_path / "backing"
    backing.mkdir()
    (backing / "before").write_bytes(b"there before the mount")
    with mounted(backing, tmp_path / "mount") as disk:
        write(disk.mount / "before", b"overwritten, never synced")

        disk.cut()

        assert (disk.mount / "before").read_bytes() == b"there before the mount"
