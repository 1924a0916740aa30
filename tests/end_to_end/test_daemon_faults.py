"""Faults against the real daemon: kill -9 at every step, random kills, a read-only model
store, a full disk, a locked ledger, a backlog. After each: nothing lost, nothing imported
twice or half, no temporary file left, and the daemon keeps serving."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from daemon_harness import (
    CRASH_ENV,
    Dropbox,
    Dropboxes,
    daemon_command,
    dropboxes,
    valid_package,
    wait_until,
)
from factory import Entry, gzip_bytes, seed_entries, tar_bytes

from ymir_dropbox.core.faults import POINTS

# An invalid package fails validation before anything is stored: it never reaches "stored".
INVALID_POINTS = [point for point in POINTS if point != "stored"]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


def final_statuses(dropbox: Dropbox) -> list[str]:
    return [
        row["status"]
        for row in dropbox.ledger_rows()
        if row["status"] in {"imported", "duplicate", "failed"}
    ]


def restart_until_settled(dropbox: Dropbox) -> None:
    """Start without the crash point; a sentinel dropped after recovery is imported too."""
    dropbox.start()
    sentinel = dropbox.drop_valid("sentinel.tar.gz")
    dropbox.wait_settled()
    assert dropbox.final_status(sentinel) == ["imported"]
    assert dropbox.running


# -- deterministic crash points ---------------------------------------------------------------


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_step_then_restart_imports_a_valid_package_once(
    make: Dropboxes, point: str
) -> None:
    dropbox = make()
    dropbox.start(env={CRASH_ENV: point})
    dropbox.drop_valid("model.tar.gz")
    assert dropbox.wait_exit() == -9, dropbox.tail()
    dropbox.assert_invariants(idle=False)
    restart_until_settled(dropbox)
    assert dropbox.names("done") == {"model.tar.gz", "sentinel.tar.gz"}
    assert final_statuses(dropbox) == ["imported", "imported"]
    dropbox.assert_invariants()


@pytest.mark.parametrize("point", INVALID_POINTS)
def test_kill_at_each_step_then_restart_fails_an_invalid_package_once(
    make: Dropboxes, point: str
) -> None:
    dropbox = make()
    dropbox.start(env={CRASH_ENV: point})
    dropbox.drop_invalid("broken.tar.gz")
    assert dropbox.wait_exit() == -9, dropbox.tail()
    dropbox.assert_invariants(idle=False)
    restart_until_settled(dropbox)
    assert dropbox.names("failed") == {"broken.tar.gz"}
    assert dropbox.error_files() == {"broken.tar.gz.error.json", "broken.tar.gz.error.txt"}
    assert sorted(final_statuses(dropbox)) == ["failed", "imported"]
    dropbox.assert_invariants()


NOT_UTF8 = os.fsdecode(b"mod\xe8le-\xff.tar.gz")  # a name in Latin-1, and a stray byte


@pytest.mark.parametrize("point", ["recorded", "moved"])
def test_a_name_that_is_not_utf8_survives_a_kill_while_it_is_filed(
    make: Dropboxes, point: str
) -> None:
    dropbox = make()
    dropbox.start(env={CRASH_ENV: point})
    dropbox.drop_invalid(NOT_UTF8, tag="latin-1")
    assert dropbox.wait_exit() == -9, dropbox.tail()
    restart_until_settled(dropbox)
    assert dropbox.names("failed") == {NOT_UTF8}
    assert dropbox.error_files() == {f"{NOT_UTF8}.error.json", f"{NOT_UTF8}.error.txt"}
    places = [row["place"] for row in dropbox.ledger_rows() if row["status"] == "failed"]
    assert places == ["failed"], "a settled package marked lost, or filed twice"
    dropbox.assert_invariants()


def test_retry_moves_a_failed_package_whose_name_is_not_utf8(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    drop = dropbox.drop_invalid(NOT_UTF8, tag="latin-1")
    dropbox.wait_settled()
    assert dropbox.stop() == 0
    dropbox.forget(drop)

    retried = dropbox.cli("retry", "--all-failed", "--force")

    assert retried.returncode == 0, retried.stderr
    assert (dropbox.inbox / NOT_UTF8).is_file()
    assert not (dropbox.folder("failed") / f"{NOT_UTF8}.error.json").exists()


def test_a_package_that_kills_the_daemon_three_times_goes_to_failed(make: Dropboxes) -> None:
    """An OOM kill or a segfault in the import looks like this: the process dies mid-import."""
    dropbox = make()
    dropbox.start(env={CRASH_ENV: "validated"})
    dropbox.drop_valid("deadly.tar.gz")
    for _ in range(3):
        assert dropbox.wait_exit() == -9, dropbox.tail()
        dropbox.start(env={CRASH_ENV: "validated"}, wait=False)
    dropbox.wait_settled()
    assert dropbox.names("failed") == {"deadly.tar.gz"}
    report = json.loads((dropbox.folder("failed") / "deadly.tar.gz.error.json").read_text())
    assert [error["code"] for error in report["errors"]] == ["import.crashed"]
    assert dropbox.running, "the daemon serves on"
    dropbox.assert_invariants()


def test_a_model_file_no_attempt_imported_is_removed_at_start(make: Dropboxes) -> None:
    """A crash after the store wrote the model, and the package gone before the redo: nothing
    in the model store is left unaccounted for."""
    dropbox = make()
    dropbox.start(env={CRASH_ENV: "stored"})
    drop = dropbox.drop_valid("model.tar.gz")
    assert dropbox.wait_exit() == -9, dropbox.tail()
    [orphan] = list(dropbox.folder("models").iterdir())
    [row] = dropbox.ledger_rows()
    assert row["model_hash"] == orphan.name, "the hash was not recorded before the rename"
    (dropbox.folder("processing") / "model.tar.gz").unlink()
    dropbox.forget(drop)
    restart_until_settled(dropbox)
    assert not orphan.exists()
    assert dropbox.events("model_removed")
    kept = {row["model_hash"] for row in dropbox.ledger_rows() if row["status"] == "imported"}
    assert {path.name for path in dropbox.folder("models").iterdir()} == kept
    dropbox.assert_invariants()


def test_a_second_restart_after_a_crash_finds_nothing_lost(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start(env={CRASH_ENV: "claimed"})
    dropbox.drop_valid("model.tar.gz")
    assert dropbox.wait_exit() == -9
    dropbox.start()
    dropbox.wait_settled()
    stale = dropbox.stale_places()
    assert dropbox.stop() == 0
    dropbox.start()
    dropbox.drop_valid("sentinel.tar.gz")
    dropbox.wait_settled()
    lost = [row["id"] for row in dropbox.ledger_rows() if row["place"] == "lost"]
    missing = dropbox.events("package_missing_from_processing")
    assert (stale, lost, missing) == ([], [], [])
    dropbox.assert_invariants()


def test_random_kills_in_a_loop_lose_nothing_and_import_nothing_twice(make: Dropboxes) -> None:
    seed = int(os.environ.get("KILL_SEED") or random.randrange(1_000_000))
    chance = random.Random(seed)
    dropbox = make(workers=2)
    shared = valid_package("shared between rounds")
    for round_number in range(5):
        dropbox.start()
        for number in range(4):
            dropbox.drop_valid(f"round-{round_number}/valid-{number}.tar.gz")
        dropbox.drop_invalid(f"round-{round_number}/invalid.tar.gz")
        dropbox.drop(f"round-{round_number}/shared.tar.gz", shared)
        # Not a synchronisation: the moment of the kill is the random variable under test.
        time.sleep(chance.uniform(0.0, 0.4))
        assert dropbox.kill() == -9
        dropbox.assert_invariants(idle=False)
    dropbox.start()
    dropbox.wait_settled(timeout=60)
    statuses = final_statuses(dropbox)
    assert statuses.count("imported") == 5 * 4 + 1, f"seed {seed}"
    assert statuses.count("duplicate") == 4, f"seed {seed}"
    assert statuses.count("failed") == 5, f"seed {seed}"
    dropbox.assert_invariants()


# -- the environment fails ------------------------------------------------------------------


def test_read_only_model_store_keeps_the_package_until_it_is_writable(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    models = dropbox.folder("models")
    make.mount(["--bind", str(models)], models)
    make.remount("bind,ro", models)
    dropbox.drop_valid("model.tar.gz")
    dropbox.wait_event("import_io_error")
    assert dropbox.names("processing") == {"model.tar.gz"}
    dropbox.drop_invalid("broken.tar.gz")
    wait_until(
        lambda: dropbox.names("failed") == {"broken.tar.gz"},
        30,
        "the daemon keeps serving: an invalid package still fails while the store is read-only",
    )
    assert dropbox.names("processing") == {"model.tar.gz"}
    make.unmount(models)
    dropbox.wait_settled()
    assert dropbox.running
    assert dropbox.names("done") == {"model.tar.gz"}
    assert sorted(final_statuses(dropbox)) == ["failed", "imported"]
    dropbox.assert_invariants()


def compressible_package(tag: str, random_bytes: int, zero_bytes: int, index: int = 0) -> bytes:
    """A valid package whose stage file ``index`` is ``random_bytes`` of noise then zeros."""
    entries = seed_entries()
    noise = random.Random(tag).randbytes(random_bytes)
    entries[index] = Entry(entries[index].name, noise + bytes(zero_bytes))
    return gzip_bytes(tar_bytes(entries))


def test_disk_full_while_unpacking_keeps_the_package(make: Dropboxes, tmp_path: Path) -> None:
    """The whole layout on a 2 MiB tmpfs; the package (~300 KiB) holds a 4 MiB file that comes
    before its turn in the stored order (stage_2000's, before stage_1000's symbol file), so it
    waits unpacked in the work folder."""
    base = tmp_path / "small-disk"
    make.mount(["-t", "tmpfs", "-o", "size=2m", "tmpfs"], base)
    dropbox = make(base_dir=base)
    dropbox.start()
    dropbox.drop("big-inside.tar.gz", compressible_package("inside", 300_000, 3_700_000, 1))
    dropbox.wait_event("import_io_error")
    assert dropbox.running
    assert dropbox.names("processing") == {"big-inside.tar.gz"}
    assert dropbox.names("failed") == set()
    make.remount("size=64m", base)
    dropbox.wait_settled()
    assert dropbox.names("done") == {"big-inside.tar.gz"}
    assert final_statuses(dropbox) == ["imported"]
    dropbox.assert_invariants()


def test_disk_full_while_writing_the_stored_file_keeps_the_package(
    make: Dropboxes, tmp_path: Path
) -> None:
    """The folders on a 2 MiB tmpfs, the spool elsewhere: the stored file does not fit."""
    base = tmp_path / "small-disk"
    make.mount(["-t", "tmpfs", "-o", "size=2m", "tmpfs"], base)
    work = tmp_path / "work"
    work.mkdir()
    dropbox = make(base_dir=base, sections={"paths": {"work": str(work)}})
    dropbox.start()
    dropbox.drop("incompressible.tar.gz", compressible_package("noise", 1_200_000, 0))
    dropbox.wait_event("import_io_error")
    assert dropbox.running
    assert dropbox.names("processing") == {"incompressible.tar.gz"}
    dropbox.assert_invariants(idle=False)
    assert not [path for path in dropbox.folder("models").iterdir()]
    make.remount("size=64m", base)
    dropbox.wait_settled()
    assert dropbox.names("done") == {"incompressible.tar.gz"}
    assert final_statuses(dropbox) == ["imported"]
    dropbox.assert_invariants()


LOCKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    connection = sqlite3.connect(sys.argv[1], isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    print(time.time(), flush=True)
    connection.execute("COMMIT")
    """
)


def test_ledger_locked_by_another_process_makes_the_daemon_wait(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(dropbox.ledger_path), "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked"
        drop = dropbox.drop_valid("model.tar.gz")
        releasing = float(locker.stdout.readline())
        assert locker.wait(timeout=30) == 0
    finally:
        if locker.poll() is None:
            locker.kill()
    dropbox.wait_settled()
    assert dropbox.running
    assert dropbox.final_status(drop) == ["imported"]
    [row] = dropbox.rows_for(drop)
    # The claim waited for the lock: the attempt ended after the other process let go.
    moment = datetime.fromtimestamp(releasing, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert row["finished_at"] > moment
    dropbox.assert_invariants()


def test_500_packages_arriving_while_down_are_all_imported_once(make: Dropboxes) -> None:
    dropbox = make()
    for number in range(500):
        dropbox.drop_valid(f"backlog/{number // 100}/package-{number:03}.tar.gz")
    dropbox.start()
    dropbox.wait_settled(timeout=120)
    assert len(dropbox.names("done")) == 500
    assert final_statuses(dropbox) == ["imported"] * 500
    dropbox.assert_invariants()


def test_an_import_that_keeps_crashing_goes_to_failed_and_the_daemon_serves_on(
    make: Dropboxes,
) -> None:
    """An unexpected error (a bug) at the store step: retried, then failed as import.crashed."""
    dropbox = make()
    dropbox.start(env={"YMIR_DROPBOX_FAIL_AT": "stored"})
    drop = dropbox.drop_valid("model.tar.gz")
    dropbox.wait_settled(timeout=60)

    assert dropbox.names("failed") == {"model.tar.gz"}
    report = json.loads((dropbox.folder("failed") / "model.tar.gz.error.json").read_text())
    assert [error["code"] for error in report["errors"]] == ["import.crashed"]
    assert "injected fault at stored" in report["errors"][0]["message"]
    statuses = [row["status"] for row in dropbox.rows_for(drop)]
    assert statuses.count("interrupted") == 3 and statuses[-1] == "failed"
    assert dropbox.running
    dropbox.stop()
    # the model file of each crashed try was written before the fault; nothing else is left
    dropbox.assert_invariants()


def test_an_import_command_killed_after_the_store_is_taken_up_by_the_next_daemon(
    make: Dropboxes, tmp_path: Path
) -> None:
    """`ymir-dropbox import` killed once the model file is written left that file and its
    attempt `importing` for ever: the next start sees its lock free and cleans up."""
    dropbox = make()
    package = tmp_path / "by-hand.tar.gz"
    package.write_bytes(valid_package("by hand"))
    killed = subprocess.run(
        [*daemon_command(), "--config", str(dropbox.config_path), "import", str(package)],
        env={**os.environ, CRASH_ENV: "stored"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    [row] = dropbox.ledger_rows()
    assert row["status"] == "importing" and row["model_hash"]
    assert (dropbox.folder("models") / row["model_hash"]).exists()

    dropbox.start()
    dropbox.drop_valid("sentinel.tar.gz")
    dropbox.wait_settled()

    [cut] = [row for row in dropbox.ledger_rows() if row["package"] == "by-hand.tar.gz"]
    assert cut["status"] == "interrupted"
    assert not (dropbox.folder("models") / cut["model_hash"]).exists()
    assert package.exists()  # the command's file is never touched
    dropbox.assert_invariants()


def test_a_death_with_several_imports_at_work_is_charged_to_none_of_them(
    make: Dropboxes,
) -> None:
    """A kill with two imports at work once counted a crash against both, innocent or not
    (three such kills failed both as import.crashed): they are redone one at a time instead,
    and only a death during an import alone is a crash of its package."""
    dropbox = make(workers=2)
    dropbox.start(env=dropbox.pause_at("validated", "*"))
    dropbox.drop_valid("one.tar.gz")
    dropbox.drop_valid("two.tar.gz")
    dropbox.wait_event("paused_at", count=2)
    assert dropbox.kill() == -9
    dropbox.release()

    dropbox.start()
    dropbox.wait_settled()

    assert sorted(final_statuses(dropbox)) == ["imported", "imported"]
    codes = [e["code"] for row in dropbox.ledger_rows() for e in row["errors"] or []]
    assert "import.crashed" not in codes
    assert len(dropbox.events("import_alone")) == 2
    dropbox.assert_invariants()
