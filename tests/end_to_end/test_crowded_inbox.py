"""An inbox crowded by an uploader: many files, many folders, hidden ones. Walking them never
holds up the loop (imports, answers, systemd's watchdog), and a user out of inotify watches
makes the daemon poll, not miss packages."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import Dropboxes, dropboxes, valid_package, without_file_permission_bypass

# A user namespace of its own gives the daemon its own inotify watch limit (the limit is
# counted per user and namespace): the machine's other watchers are left alone.
WATCH_LIMIT = 8


def few_watches(limit: int = WATCH_LIMIT) -> list[str]:
    if shutil.which("unshare") is None:
        pytest.fail("unshare is missing: install util-linux (apt-get install util-linux)")
    script = f'echo {limit} > /proc/sys/user/max_inotify_watches && exec "$@"'
    return ["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh"]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


def test_a_package_is_imported_while_a_walk_of_the_inbox_is_held(make: Dropboxes) -> None:
    """The first scan and every rescan are held; the loop still says it is ready, and imports
    a package it learns of by its event."""
    dropbox = make()
    dropbox.start(env=dropbox.pause_at("scanning", "."))
    dropbox.wait_event("paused_at", where=lambda event: event["point"] == "scanning")

    drop = dropbox.drop_valid("while-walking.tar.gz")
    dropbox.wait_settled()

    assert dropbox.final_status(drop) == ["imported"]
    assert dropbox.running
    dropbox.release()


def test_files_present_at_start_wait_for_the_first_walk(make: Dropboxes) -> None:
    dropbox = make()
    drop = dropbox.drop_valid("early.tar.gz")
    dropbox.start(env=dropbox.pause_at("scanning", "."))
    dropbox.wait_event("paused_at", where=lambda event: event["point"] == "scanning")
    assert dropbox.rows_for(drop) == []

    dropbox.release()
    dropbox.wait_settled()

    assert dropbox.final_status(drop) == ["imported"]


def test_a_crowd_of_other_files_is_named_a_hundred_times_then_counted(make: Dropboxes) -> None:
    dropbox = make()
    crowd = dropbox.inbox / "crowd"
    crowd.mkdir()
    for number in range(250):
        (crowd / f"note-{number}.txt").write_bytes(b"")
    drop = dropbox.drop_valid("crowd/model.tar.gz")
    dropbox.start()
    dropbox.wait_settled()
    counted = dropbox.wait_event("files_left_alone")

    named = dropbox.events("file_left_alone")
    assert len(named) == 100
    assert counted[0]["count"] == 150
    assert dropbox.final_status(drop) == ["imported"]


def test_nothing_in_an_ignored_folder_is_named_or_imported(make: Dropboxes) -> None:
    dropbox = make()
    hidden = dropbox.inbox / ".cache" / "deep"
    hidden.mkdir(parents=True)
    (hidden / "note.txt").write_bytes(b"")
    (hidden / "model.tar.gz").write_bytes(valid_package("hidden"))
    drop = dropbox.drop_valid("shown.tar.gz")
    dropbox.start()
    dropbox.wait_settled()

    assert dropbox.final_status(drop) == ["imported"]
    assert dropbox.events("file_left_alone") == []
    assert [row["package"] for row in dropbox.ledger_rows()] == ["shown.tar.gz"]


@pytest.mark.parametrize("when", ["before start", "after start"])
def test_out_of_inotify_watches_the_daemon_polls_and_misses_nothing(
    make: Dropboxes, when: str
) -> None:
    dropbox = make(rescan_interval=1.0)
    folders = [dropbox.inbox / f"team-{number}" / "runs" for number in range(WATCH_LIMIT)]
    if when == "before start":
        for folder in folders:
            folder.mkdir(parents=True)
    dropbox.start(prefix=few_watches())
    if when == "after start":
        for folder in folders:
            folder.mkdir(parents=True)

    fallback = dropbox.wait_event("watch_failed")
    drop = dropbox.drop_valid(f"team-{WATCH_LIMIT - 1}/runs/last.tar.gz")
    dropbox.wait_settled()

    assert fallback[0]["fallback"] == "polling"
    assert dropbox.final_status(drop) == ["imported"]
    assert dropbox.running


def test_a_folder_the_daemon_cannot_open_is_no_sign_of_watches_running_out(
    make: Dropboxes,
) -> None:
    """inotify cannot watch a folder the daemon may not read, and neither can a walk list it:
    it is not counted as unwatched (the daemon keeps inotify)."""
    dropbox = make(rescan_interval=0.2)
    private = dropbox.inbox / "private"
    private.mkdir()
    private.chmod(0o000)
    dropbox.start(prefix=without_file_permission_bypass())
    time.sleep(2.0)  # ten whole walks
    drop = dropbox.drop_valid("after.tar.gz")
    dropbox.wait_settled()

    assert dropbox.final_status(drop) == ["imported"]
    assert dropbox.events("watch_failed") == []
    assert [event["mode"] for event in dropbox.events("watch_started")] == ["inotify"]


@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_an_inbox_configured_through_a_symlink_is_walked(make: Dropboxes, mode: str) -> None:
    """The operator's path may be a symlink (the configured folder is trusted, not what
    uploaders put under it)."""
    dropbox = make(mode=mode)
    real = dropbox.root / "real-inbox"
    real.mkdir()
    link = dropbox.root / "inbox-link"
    link.symlink_to(real)
    dropbox.paths["inbox"] = str(link)
    dropbox.write_config()
    drop = dropbox.drop_valid("early.tar.gz")  # before start: found by the first walk only
    dropbox.start()
    dropbox.wait_settled()

    assert dropbox.final_status(drop) == ["imported"]
