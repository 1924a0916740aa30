"""A hostile inbox: links, folders, fifos, unreadable files, strange names, files and folders
that vanish. The daemon must never follow, open, hang on or lose anything, and keep serving."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import (
    Drop,
    Dropbox,
    Dropboxes,
    dropboxes,
    valid_package,
    wait_until,
    without_file_permission_bypass,
)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


def replace_in_processing(dropbox: Dropbox, name: str) -> Drop:
    """Put another package at ``processing/name``, in one rename (by someone who can write
    there: the daemon's user, root)."""
    replacement = valid_package("replacement")
    staged = dropbox.folder("processing") / ".replacement"
    staged.write_bytes(replacement)
    os.replace(staged, dropbox.folder("processing") / name)
    return dropbox.record(name, replacement)


def left_alone(dropbox: Dropbox, relative: str) -> None:
    """Wait until the daemon has seen ``relative`` and decided to leave it alone."""
    dropbox.wait_event("file_left_alone", where=lambda event: event["path"] == relative)


def packages_in_ledger(dropbox: Dropbox) -> set[str]:
    return {row["package"] for row in dropbox.ledger_rows()}


def test_symlinks_in_the_inbox_are_never_followed_read_or_moved(
    make: Dropboxes, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "secret.tar.gz"
    target.write_bytes(valid_package("outside"))
    (outside / "folder").mkdir()
    (outside / "folder" / "inner.tar.gz").write_bytes(valid_package("outside folder"))
    # relatime updates atime on a read when atime <= mtime: any read of the target shows
    info = target.stat()
    os.utime(target, ns=(info.st_mtime_ns - 10**12, info.st_mtime_ns))
    before = target.stat()

    dropbox = make()
    os.symlink(target, dropbox.inbox / "early-link.tar.gz")
    dropbox.start()
    os.symlink(target, dropbox.inbox / "link.tar.gz")
    os.symlink(outside / "folder", dropbox.inbox / "linked-folder")
    dropbox.drop_valid("sentinel.tar.gz")
    left_alone(dropbox, "early-link.tar.gz")
    left_alone(dropbox, "link.tar.gz")
    dropbox.wait_settled()

    for name in ("early-link.tar.gz", "link.tar.gz", "linked-folder"):
        assert (dropbox.inbox / name).is_symlink(), name
    assert os.readlink(dropbox.inbox / "link.tar.gz") == str(target)
    after = target.stat()
    assert (after.st_atime_ns, after.st_mtime_ns, after.st_ino) == (
        before.st_atime_ns,
        before.st_mtime_ns,
        before.st_ino,
    ), "the symlink's target was read or touched"
    assert (outside / "folder" / "inner.tar.gz").is_file()
    assert packages_in_ledger(dropbox) == {"sentinel.tar.gz"}
    assert dropbox.names("done") == {"sentinel.tar.gz"}
    dropbox.assert_invariants()


def test_a_folder_named_like_a_package_is_left_alone(make: Dropboxes) -> None:
    dropbox = make()
    folder = dropbox.inbox / "x.tar.gz"
    folder.mkdir()
    dropbox.drop("x.tar.gz/readme.txt", b"a folder, not a package\n", stays=True)
    dropbox.start()
    (dropbox.inbox / "later.tgz").mkdir()
    dropbox.drop_valid("sentinel.tar.gz")
    left_alone(dropbox, "x.tar.gz/readme.txt")
    dropbox.wait_settled()
    assert folder.is_dir() and (dropbox.inbox / "later.tgz").is_dir()
    assert (folder / "readme.txt").read_text() == "a folder, not a package\n"
    assert packages_in_ledger(dropbox) == {"sentinel.tar.gz"}
    assert not (dropbox.folder("done") / "x.tar.gz").exists()
    dropbox.assert_invariants()


def test_a_package_inside_a_folder_named_like_a_package_leaves_that_name_free(
    make: Dropboxes,
) -> None:
    """inbox/run.tar.gz/x.tar.gz once left an empty processing/run.tar.gz/ behind, and every
    later package named run.tar.gz waited for ever, "being imported"."""
    dropbox = make()
    dropbox.start()
    dropbox.drop_valid("run.tar.gz/x.tar.gz")
    dropbox.wait_settled()
    (dropbox.inbox / "run.tar.gz").rmdir()  # its uploader tidies up
    dropbox.drop_valid("run.tar.gz")
    dropbox.wait_settled()

    assert not (dropbox.folder("processing") / "run.tar.gz").exists()
    # done/run.tar.gz is the folder of the first: the second takes the next free name
    assert dropbox.names("done") == {"run.tar.gz/x.tar.gz", "run.1.tar.gz"}
    dropbox.assert_invariants()


def test_a_fifo_named_like_a_package_is_never_opened(make: Dropboxes) -> None:
    dropbox = make()
    os.mkfifo(dropbox.inbox / "early.tar.gz")
    dropbox.start()
    os.mkfifo(dropbox.inbox / "y.tar.gz")
    for number in range(3):
        dropbox.drop_valid(f"after-fifo-{number}.tar.gz")
    left_alone(dropbox, "y.tar.gz")
    left_alone(dropbox, "early.tar.gz")
    dropbox.wait_settled()
    for name in ("early.tar.gz", "y.tar.gz"):
        assert stat.S_ISFIFO((dropbox.inbox / name).lstat().st_mode), name
    assert packages_in_ledger(dropbox) == {f"after-fifo-{number}.tar.gz" for number in range(3)}
    assert dropbox.stop() == 0, "the daemon hung on the fifo"
    dropbox.assert_invariants()


def test_an_unreadable_file_waits_in_the_inbox_and_is_imported_once_readable(
    make: Dropboxes,
) -> None:
    """Root reads anything, so the daemon runs without CAP_DAC_OVERRIDE/READ_SEARCH: the
    mode bits bind it like any service user."""
    dropbox = make(settle_seconds=0.5, retry_max_seconds=1.0)
    secret = dropbox.drop_valid("secret.tar.gz")
    (dropbox.inbox / "secret.tar.gz").chmod(0)
    dropbox.start(prefix=without_file_permission_bypass())
    dropbox.drop_valid("readable.tar.gz")
    dropbox.wait_event(
        "package_retry_later", count=2, where=lambda event: event["path"] == "secret.tar.gz"
    )
    assert "secret.tar.gz" in dropbox.names("inbox")
    assert dropbox.names("failed") == set()
    assert "secret.tar.gz" not in packages_in_ledger(dropbox)
    wait_until(
        lambda: dropbox.names("done") == {"readable.tar.gz"}, 30, "the readable one is imported"
    )
    (dropbox.inbox / "secret.tar.gz").chmod(0o644)
    dropbox.wait_settled()
    assert dropbox.final_status(secret) == ["imported"]
    assert dropbox.names("done") == {"readable.tar.gz", "secret.tar.gz"}
    dropbox.assert_invariants()


def drop_bytes_name(dropbox: Dropbox, name: bytes, data: bytes) -> str:
    """Write a file whose name is raw bytes; return the name as Python sees it."""
    with open(os.path.join(os.fsencode(dropbox.inbox), name), "wb") as stream:
        stream.write(data)
    relative = os.fsdecode(name)
    dropbox.record(relative, data)
    return relative


def test_a_name_with_a_newline_is_imported_with_its_ledger_row(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    name = drop_bytes_name(dropbox, b"two\nlines.tar.gz", valid_package("newline"))
    dropbox.wait_settled()
    assert dropbox.names("done") == {name}
    assert [(row["package"], row["status"]) for row in dropbox.ledger_rows()] == [
        (name, "imported")
    ]
    dropbox.assert_invariants()


def test_a_name_that_is_not_utf8_is_settled_with_its_ledger_row(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    name = drop_bytes_name(dropbox, b"caf\xe9-\xff.tar.gz", valid_package("latin-1"))
    dropbox.drop_valid("sentinel.tar.gz")
    # a few retry periods (retry_max_seconds = 2): a healthy daemon needs well under 1 s
    dropbox.wait_settled(timeout=10)
    rows = [row for row in dropbox.ledger_rows() if row["package"] != "sentinel.tar.gz"]
    assert [row["status"] for row in rows] in (["imported"], ["failed"])
    assert name not in dropbox.names("inbox")
    dropbox.assert_invariants()


def delete_while_importing(dropbox: Dropbox) -> Dropbox:
    """Someone deletes the package from processing/ after the daemon has read and judged it."""
    dropbox.start(env=dropbox.pause_at("validated", "large.tar.gz"))
    dropbox.forget(dropbox.drop_valid("large.tar.gz"))
    dropbox.wait_event("paused_at")
    (dropbox.folder("processing") / "large.tar.gz").unlink()
    dropbox.drop_valid("sentinel.tar.gz")
    dropbox.release()
    wait_until(
        lambda: (
            [row["status"] for row in dropbox.ledger_rows() if row["package"] == "large.tar.gz"]
            == ["imported"]
        ),
        60,
        "the import of the deleted file ends",
    )
    # its worker files it right after: one more package through the daemon covers that moment
    after = dropbox.drop_valid("after.tar.gz")
    dropbox.wait_settled()
    assert dropbox.final_status(after) == ["imported"]
    return dropbox


def test_a_file_deleted_while_it_is_read_does_not_stop_the_daemon(make: Dropboxes) -> None:
    dropbox = delete_while_importing(make())
    assert dropbox.running
    assert dropbox.names("done") == {"sentinel.tar.gz", "after.tar.gz"}
    dropbox.assert_invariants()
    assert dropbox.stop() == 0


def test_a_file_deleted_while_it_is_read_is_recorded_as_gone(make: Dropboxes) -> None:
    dropbox = delete_while_importing(make())
    [row] = [row for row in dropbox.ledger_rows() if row["package"] == "large.tar.gz"]
    assert row["place"] not in {"done", "processing"}, row
    assert not dropbox.events("job_crashed")


def test_a_file_replaced_while_it_is_read_is_not_filed_under_the_old_bytes(
    make: Dropboxes,
) -> None:
    dropbox = make()
    dropbox.start(env=dropbox.pause_at("validated", "large.tar.gz"))
    dropbox.forget(dropbox.drop_valid("large.tar.gz"))
    dropbox.wait_event("paused_at")
    replace_in_processing(dropbox, "large.tar.gz")
    dropbox.release()
    dropbox.wait_settled(timeout=60)
    dropbox.assert_invariants()


def test_the_bytes_claimed_are_the_bytes_imported_whatever_takes_their_name_after(
    make: Dropboxes,
) -> None:
    """The claim holds the file it judged open: another file put at its name in processing/
    right after the claim is not what the claim's attempt imports; it gets its own."""
    dropbox = make()
    dropbox.start(env=dropbox.pause_at("claimed", "model.tar.gz"))
    claimed = dropbox.drop_valid("model.tar.gz", "claimed")
    dropbox.forget(claimed)
    dropbox.wait_event("paused_at")
    replacement = replace_in_processing(dropbox, "model.tar.gz")
    dropbox.release()
    dropbox.wait_settled(timeout=60)

    rows = [row for row in dropbox.ledger_rows() if row["package"] == "model.tar.gz"]
    first, *later = sorted(rows, key=lambda row: row["id"])
    assert (first["status"], first["sha256"]) == ("imported", claimed.sha256)
    assert [row["sha256"] for row in later if row["status"] == "imported"] == [replacement.sha256]
    assert dropbox.names("done") == {"model.tar.gz"}
    assert dropbox.files("done") == {"model.tar.gz": replacement.sha256}


@pytest.mark.parametrize("who_recreates", ["writer", "daemon"])
def test_the_inbox_deleted_and_recreated_while_running(make: Dropboxes, who_recreates: str) -> None:
    dropbox = make()
    dropbox.start()
    dropbox.drop_valid("before.tar.gz")
    dropbox.wait_settled()
    shutil.rmtree(dropbox.inbox)
    if who_recreates == "writer":
        dropbox.inbox.mkdir()
    else:
        dropbox.wait_event("watch_restarted")
        wait_until(dropbox.inbox.is_dir, 30, "the daemon re-created the inbox")
    dropbox.drop_valid("after.tar.gz")
    dropbox.wait_settled()
    assert dropbox.names("done") == {"before.tar.gz", "after.tar.gz"}
    assert dropbox.running
    dropbox.assert_invariants()


LONG_NAMES = {
    "ascii-245": "x" * 238 + ".tar.gz",
    "ascii-255": "y" * 248 + ".tar.gz",
    "chinese-81": "模型" * 40 + "猫.tar.gz",  # 243 bytes of UTF-8, 250 in all
}


@pytest.mark.parametrize("name", LONG_NAMES.values(), ids=LONG_NAMES.keys())
def test_a_name_as_long_as_the_filesystem_allows_is_filed_and_the_daemon_restarts(
    make: Dropboxes, name: str
) -> None:
    """A 250-byte name once imported, then failed to be filed for ever (its .error.json name
    too long), and the next start exited with a traceback."""
    assert len(name.encode()) <= 255
    dropbox = make()
    dropbox.start()
    dropbox.drop_valid(f"team/{name}")
    dropbox.drop_invalid(name)
    dropbox.wait_settled()
    assert dropbox.stop() == 0

    dropbox.start()  # the next start must not trip on any of those names
    dropbox.drop_valid("sentinel.tar.gz")
    dropbox.wait_settled()

    rows = {row["package"]: row for row in dropbox.ledger_rows()}
    assert rows[name]["status"] in {"imported", "failed"}
    [failed] = [row for row in dropbox.ledger_rows() if row["status"] == "failed"]
    assert failed["package"] == name  # the full name, in the ledger
    filed = Path(failed["final_path"])
    assert filed.is_file() and len(filed.name.encode()) + len(".error.json") <= 255
    document = json.loads(filed.with_name(filed.name + ".error.json").read_text())
    assert document["package"] == name  # and in the error file
    assert dropbox.names("processing") == set()
    dropbox.assert_invariants()


@pytest.mark.parametrize("swapped_in", ["folder", "symlink", "another-file"])
def test_an_entry_swapped_in_at_the_claim_is_never_moved(
    make: Dropboxes, tmp_path: Path, swapped_in: str
) -> None:
    """The uploader swaps the judged package for something else just before the claim's
    rename (held there by a pause): only the file that was judged may enter processing/."""
    dropbox = make(settle_seconds=0.3)
    name = "swap.tar.gz"
    dropbox.start(env=dropbox.pause_at("claim", name))
    dropbox.inbox.joinpath(name).write_bytes(valid_package("judged"))
    wait_until(lambda: packages_in_ledger(dropbox) == {name}, 30, "the claim to begin")
    os.rename(dropbox.inbox / name, tmp_path / "judged.tar.gz")
    entry = dropbox.inbox / name
    if swapped_in == "folder":
        entry.mkdir()
        (entry / "note.txt").write_text("the uploader's own folder")
        dropbox.record(f"{name}/note.txt", b"the uploader's own folder", stays=True)
    elif swapped_in == "symlink":
        entry.symlink_to(dropbox.ledger_path)
    else:
        entry.write_bytes(valid_package("another"))
        dropbox.record(name, entry.read_bytes())
    dropbox.release()
    # A symlink fails the claim's walk (O_NOFOLLOW); anything else its identity check.
    event = "file_left_alone" if swapped_in == "symlink" else "file_swapped_at_claim"
    dropbox.wait_event(event, where=lambda found: found["path"] == name)
    if swapped_in == "another-file":
        dropbox.wait_settled()  # judged anew, then imported on its own
        assert dropbox.names("done") == {name}
    else:
        assert entry.is_symlink() if swapped_in == "symlink" else entry.is_dir()
        for folder in ("processing", "done", "failed"):
            assert os.listdir(dropbox.folder(folder)) == [], folder
    assert dropbox.ledger_path.stat().st_size > 0
    dropbox.assert_invariants()


def test_a_package_with_another_name_fails_and_says_why(make: Dropboxes) -> None:
    """A hidden hard link would let its uploader rewrite the package after it is judged."""
    dropbox = make()
    dropbox.start()
    staged = dropbox.root / "linked.tar.gz"
    data = valid_package("linked")
    staged.write_bytes(data)
    os.link(staged, dropbox.inbox / ".keep")
    staged.rename(dropbox.inbox / "linked.tar.gz")
    drop = dropbox.record("linked.tar.gz", data)
    alone = dropbox.drop_valid("alone.tar.gz")
    dropbox.wait_settled()

    assert dropbox.final_status(drop) == ["failed"]
    (row,) = dropbox.rows_for(drop)
    assert [error["code"] for error in row["errors"]] == ["package.hard_linked"]
    assert "has 2 names (hard links)" in row["errors"][0]["message"]
    assert dropbox.final_status(alone) == ["imported"]
    assert "linked.tar.gz.error.txt" in {path.name for path in dropbox.folder("failed").iterdir()}
