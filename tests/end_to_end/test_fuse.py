"""The inbox on a real FUSE mount: a file written behind the mount raises no inotify event,
and the daemon in ``watch.mode = "auto"`` polls there and picks it up all the same.

bindfs (``apt-get install bindfs``) mounts a folder a second time through FUSE. A file written
into the backing folder appears under the mount, but no inotify event fires on the mount: what
happens on NFS, SMB or sshfs when another machine writes the inbox.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_harness import Dropbox, Dropboxes, dropboxes, valid_package, wait_until

from ymir_dropbox.daemon.watching import FileEvent, InboxWatcher, choose_mode, filesystem_type

# Long enough that only the watcher (and the scan at start) can find a file during a test.
NO_RESCAN_SECONDS = 3600.0


@dataclass
class FuseMount:
    backing: Path  # written directly: no event reaches the mount
    mount: Path  # what the daemon sees


def bindfs(backing: Path, mount: Path) -> None:
    if shutil.which("bindfs") is None:
        pytest.fail("bindfs is missing: install it with `apt-get install bindfs` (FUSE 2)")
    backing.mkdir(parents=True, exist_ok=True)
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["bindfs", str(backing), str(mount)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(
            f"bindfs cannot mount a FUSE filesystem here ({done.stderr.strip()}): it needs "
            "/dev/fuse and root, or fusermount and the fuse group"
        )


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


@pytest.fixture
def fuse(make: Dropboxes, tmp_path: Path) -> FuseMount:
    """A bindfs mount of ``tmp_path/backing`` at ``tmp_path/mount``, undone by ``make``."""
    mounted = FuseMount(tmp_path / "backing", tmp_path / "mount")
    bindfs(mounted.backing, mounted.mount)
    make.mounts.append(mounted.mount)
    return mounted


def test_a_file_written_behind_the_mount_raises_no_inotify_event(fuse: FuseMount) -> None:
    events: queue.Queue[FileEvent] = queue.Queue()
    watcher = InboxWatcher(fuse.mount, "inotify", True, events)
    watcher.start()
    try:
        (fuse.backing / "behind.tar.gz").write_bytes(b"written behind the mount")
        (fuse.mount / "through.tar.gz").write_bytes(b"written through the mount")
        seen: list[str] = []

        def through_seen() -> bool:
            while not events.empty():
                seen.append(Path(events.get().path).name)
            return "through.tar.gz" in seen

        wait_until(through_seen, 10, lambda: f"inotify reports through.tar.gz (saw {seen})")
    finally:
        watcher.stop()

    assert (fuse.mount / "behind.tar.gz").is_file()
    assert "behind.tar.gz" not in seen


def test_auto_mode_polls_on_a_fuse_mount(fuse: FuseMount) -> None:
    assert filesystem_type(fuse.mount).startswith("fuse")
    assert choose_mode("auto", fuse.mount) == "polling"
    assert choose_mode("auto", fuse.mount / "inbox") == "polling"


def test_auto_mode_keeps_inotify_on_a_local_folder(fuse: FuseMount) -> None:
    assert choose_mode("auto", fuse.backing) == "inotify"


def daemon_on(make: Dropboxes, fuse: FuseMount, **options: object) -> Dropbox:
    """A layout wholly on the mount (processing, done and failed share the inbox's
    filesystem), rescanning too rarely to matter."""
    return make(base_dir=fuse.mount, rescan_interval=NO_RESCAN_SECONDS, **options)


def write_behind(dropbox: Dropbox, fuse: FuseMount, name: str) -> None:
    data = valid_package(name)
    (fuse.backing / "inbox" / name).write_bytes(data)
    dropbox.record(name, data)


def test_the_daemon_in_auto_mode_imports_a_package_written_behind_the_mount(
    make: Dropboxes, fuse: FuseMount
) -> None:
    dropbox = daemon_on(make, fuse, mode="auto")
    dropbox.start()
    assert [event["mode"] for event in dropbox.events("watch_started")] == ["polling"]

    write_behind(dropbox, fuse, "model.tar.gz")

    dropbox.wait_settled()
    assert dropbox.names("done") == {"model.tar.gz"}
    assert [row["status"] for row in dropbox.ledger_rows()] == ["imported"]
    dropbox.assert_invariants()


def test_the_default_watch_mode_imports_a_package_written_behind_the_mount(
    make: Dropboxes, fuse: FuseMount
) -> None:
    """No ``watch.mode`` in the config: the default must notice the FUSE mount (``auto``)."""
    dropbox = daemon_on(make, fuse)
    del dropbox.settings["watch"]["mode"]
    dropbox.write_config()
    dropbox.start()
    assert [event["mode"] for event in dropbox.events("watch_started")] == ["polling"]

    write_behind(dropbox, fuse, "model.tar.gz")

    dropbox.wait_settled()
    assert dropbox.names("done") == {"model.tar.gz"}
    dropbox.assert_invariants()
