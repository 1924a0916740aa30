"""Where ``push`` delivers: DEST as rsync reads it, and a delivery into a folder that the
daemon never sees half-written and that never replaces a file."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from ymir_dropbox.core.errors import UsageError
from ymir_dropbox.pushing.destinations import (
    DeliveryError,
    Folder,
    Remote,
    check_destination,
    deliver,
    parse_destination,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("inbox", Folder(Path("inbox"))),
        ("/srv/ymir-dropbox/inbox", Folder(Path("/srv/ymir-dropbox/inbox"))),
        ("./odd:name", Folder(Path("odd:name"))),
        ("/mnt/share:2/inbox", Folder(Path("/mnt/share:2/inbox"))),
        ("ymir:/srv/inbox", Remote(None, "ymir", "/srv/inbox")),
        ("ops@ymir.lan:inbox/", Remote("ops", "ymir.lan", "inbox/")),
        ("ops@[::1]:/srv/inbox", Remote("ops", "[::1]", "/srv/inbox")),
        ("ymir:", Remote(None, "ymir", "")),
    ],
)
def test_dest_is_read_as_rsync_reads_it(text: str, expected: Folder | Remote) -> None:
    assert parse_destination(text) == expected


@pytest.mark.parametrize(
    ("remote", "target"),
    [
        (Remote(None, "ymir", "/srv/inbox"), "ymir:/srv/inbox/m.tar.gz"),
        (Remote("ops", "ymir", "/srv/inbox/"), "ops@ymir:/srv/inbox/m.tar.gz"),
        (Remote("ops", "ymir", ""), "ops@ymir:m.tar.gz"),
    ],
)
def test_a_remote_target_is_the_folder_and_the_name(remote: Remote, target: str) -> None:
    assert remote.target("m.tar.gz") == target


def test_a_delivery_is_whole_readable_and_leaves_no_temporary(tmp_path: Path) -> None:
    package = tmp_path / "model.tar.gz"
    package.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    where = deliver(package, "run7.tar.gz", Folder(inbox))
    assert where == str(inbox / "run7.tar.gz")
    assert (inbox / "run7.tar.gz").read_bytes() == package.read_bytes()
    assert sorted(os.listdir(inbox)) == ["run7.tar.gz"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((inbox / "run7.tar.gz").stat().st_mode) == 0o666 & ~umask


def test_the_package_is_written_under_a_hidden_name_first(tmp_path: Path) -> None:
    """What a watcher of the inbox sees while the bytes arrive: only a hidden name."""
    package = tmp_path / "model.tar.gz"
    package.write_bytes(os.urandom(64 * 1024 * 1024))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for name in os.listdir(inbox):
                if name != "run7.tar.gz" or not seen:
                    seen.add(name)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        deliver(package, "run7.tar.gz", Folder(inbox))
    finally:
        done.set()
        watcher.join()
    hidden = {name for name in seen if name.startswith(".run7.tar.gz.")}
    assert hidden, f"no hidden temporary seen among {seen}"
    assert seen <= hidden | {"run7.tar.gz"}


def test_a_file_that_appeared_meanwhile_is_never_replaced(tmp_path: Path) -> None:
    package = tmp_path / "model.tar.gz"
    package.write_bytes(b"new bytes")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "run7.tar.gz").write_bytes(b"somebody else's")
    with pytest.raises(DeliveryError, match="appeared meanwhile; push never overwrites"):
        deliver(package, "run7.tar.gz", Folder(inbox))
    assert (inbox / "run7.tar.gz").read_bytes() == b"somebody else's"
    assert os.listdir(inbox) == ["run7.tar.gz"]


def test_a_local_dest_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    with pytest.raises(UsageError, match="does not exist"):
        check_destination(Folder(inbox), ["a.tar.gz"])
    inbox.write_text("a file")
    with pytest.raises(UsageError, match="is not a folder"):
        check_destination(Folder(inbox), ["a.tar.gz"])
    inbox.unlink()
    inbox.mkdir()
    (inbox / "b.tar.gz").symlink_to("nowhere")
    with pytest.raises(UsageError, match=r"b\.tar\.gz already exists"):
        check_destination(Folder(inbox), ["a.tar.gz", "b.tar.gz"])
    check_destination(Folder(inbox), ["a.tar.gz"])
