"""The daemon end to end: a real ``ymir-dropbox run`` fed by cp, rsync and slow writers.

Each test asserts where every file ended and what the ledger says about it, then the
invariants (nothing lost, nothing imported twice, nothing half-written, nothing left over).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import (
    Drop,
    Dropbox,
    Dropboxes,
    daemon_command,
    dropboxes,
    invalid_package,
    valid_package,
    wait_until,
)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


def need(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.fail(f"{tool} is missing: install it with `apt-get install {package}`")
    return found


def statuses(dropbox: Dropbox) -> dict[str, list[str]]:
    """Final ledger statuses per package name."""
    found: dict[str, list[str]] = {}
    for row in dropbox.ledger_rows():
        if row["status"] in {"imported", "duplicate", "failed"}:
            found.setdefault(row["package"], []).append(row["status"])
    return found


# -- how packages arrive --------------------------------------------------------------------


def test_package_copied_with_cp_is_imported(make: Dropboxes, tmp_path: Path) -> None:
    dropbox = make()
    dropbox.start()
    source = tmp_path / "model.tar.gz"
    source.write_bytes(valid_package("cp"))
    subprocess.run(["cp", str(source), str(dropbox.inbox)], check=True)
    dropbox.record("model.tar.gz", source)
    dropbox.wait_settled()
    assert dropbox.names("done") == {"model.tar.gz"}
    assert statuses(dropbox) == {"model.tar.gz": ["imported"]}
    dropbox.assert_invariants()


def test_package_copied_with_rsync_is_imported_after_its_rename(
    make: Dropboxes, tmp_path: Path
) -> None:
    rsync = need("rsync", "rsync")
    dropbox = make()
    dropbox.start()
    source = tmp_path / "model.tar.gz"
    source.write_bytes(valid_package("rsync"))
    subprocess.run([rsync, "-a", str(source), f"{dropbox.inbox}/"], check=True)
    dropbox.record("model.tar.gz", source)
    dropbox.wait_settled()
    assert dropbox.names("done") == {"model.tar.gz"}
    assert dropbox.names("inbox") == set()
    rows = dropbox.ledger_rows()
    assert [(row["package"], row["status"]) for row in rows] == [("model.tar.gz", "imported")]
    dropbox.assert_invariants()


def test_package_written_in_place_like_scp_is_imported(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    data = valid_package("scp")
    with (dropbox.inbox / "model.tar.gz").open("wb") as stream:
        for start in range(0, len(data), 100):
            stream.write(data[start : start + 100])
            stream.flush()
    dropbox.record("model.tar.gz", data)
    dropbox.wait_settled()
    assert statuses(dropbox) == {"model.tar.gz": ["imported"]}
    dropbox.assert_invariants()


WRITER = textwrap.dedent(
    """
    import sys, time
    source, target, chunks, pause, reopen = sys.argv[1:6]
    data = open(source, "rb").read()
    chunks, pause = int(chunks), float(pause)
    size = -(-len(data) // chunks)
    stream = open(target, "wb")
    for number in range(chunks):
        if number:
            time.sleep(pause)
            if reopen == "reopen":
                stream = open(target, "ab")
        stream.write(data[number * size : (number + 1) * size])
        stream.flush()
        if reopen == "reopen":
            stream.close()
    stream.close()
    """
)


def run_writer(source: Path, target: Path, chunks: int, pause: float, reopen: bool) -> None:
    subprocess.run(
        [sys.executable, "-c", WRITER, str(source), str(target), str(chunks), str(pause),
         "reopen" if reopen else "keep"],
        check=True,
        timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("reopen", [False, True], ids=["keeps-file-open", "closes-and-reopens"])
def test_slow_writer_with_pauses_shorter_than_settle_is_imported_not_failed(
    make: Dropboxes, tmp_path: Path, reopen: bool
) -> None:
    """A close (or a quiet spell shorter than settle_seconds) is not proof of completeness: an
    incomplete gzip stream is waited for."""
    dropbox = make(settle_seconds=2.0)
    dropbox.start()
    source = tmp_path / "slow.tar.gz"
    source.write_bytes(valid_package("slow", size=64 * 1024))
    run_writer(source, dropbox.inbox / "slow.tar.gz", chunks=4, pause=0.6, reopen=reopen)
    dropbox.record("slow.tar.gz", source)
    dropbox.wait_settled()
    assert dropbox.names("done") == {"slow.tar.gz"}
    assert statuses(dropbox) == {"slow.tar.gz": ["imported"]}
    dropbox.assert_invariants()


def test_writer_that_reopens_while_an_import_would_run_keeps_its_package_whole(
    make: Dropboxes, tmp_path: Path
) -> None:
    """A writer closes, pauses past the quiet after a close, then reopens the name to append.
    Had the first half been claimed (the import held at ``claimed`` until the writer is
    done), the second would land in a new inbox file: the package split in two, both
    failed. The claim waits for the end of the gzip stream instead."""
    dropbox = make(settle_seconds=2.0)
    name = "reopened.tar.gz"
    dropbox.start(env=dropbox.pause_at("claimed", name))
    source = tmp_path / name
    source.write_bytes(valid_package("reopened", size=64 * 1024))
    run_writer(source, dropbox.inbox / name, chunks=2, pause=0.8, reopen=True)
    dropbox.record(name, source)
    time.sleep(0.5)
    dropbox.release()
    dropbox.wait_settled()
    assert dropbox.names("failed") == set()
    assert statuses(dropbox) == {name: ["imported"]}
    dropbox.assert_invariants()


def test_writer_that_holds_the_file_open_through_a_long_pause_is_imported_not_failed(
    make: Dropboxes, tmp_path: Path
) -> None:
    """Under inotify a write without a close shows the writer is still at work, so a pause
    longer than settle_seconds does not end its package (up to 10 x settle_seconds)."""
    dropbox = make(settle_seconds=1.0)
    dropbox.start()
    source = tmp_path / "paused.tar.gz"
    source.write_bytes(valid_package("paused", size=64 * 1024))
    run_writer(source, dropbox.inbox / "paused.tar.gz", chunks=2, pause=2.5, reopen=False)
    dropbox.record("paused.tar.gz", source)
    dropbox.wait_settled()
    assert statuses(dropbox) == {"paused.tar.gz": ["imported"]}
    dropbox.assert_invariants()


def test_abandoned_incomplete_stream_fails_as_truncated_only_after_a_long_quiet(
    make: Dropboxes,
) -> None:
    """The other side of the rule: once quiet for as long as an open writer may pause
    (10 x settle_seconds), a truncated stream fails; before, it waits in the inbox."""
    dropbox = make(settle_seconds=0.3)
    dropbox.start()
    data = valid_package("abandoned", size=64 * 1024)
    half = data[: len(data) // 2]
    drop = dropbox.drop("abandoned.tar.gz", half)
    dropbox.wait_settled()
    assert dropbox.names("failed") == {"abandoned.tar.gz"}
    [row] = [row for row in dropbox.rows_for(drop) if row["status"] == "failed"]
    assert [error["code"] for error in row["errors"]] == ["container.truncated"]
    claimed = dropbox.events("package_claimed")[-1]
    assert claimed["since_write"] >= 3.0 - 0.05, "judged before it was quiet for 10 x settle"
    assert dropbox.events("package_put_back"), "an early look did not wait for the writer"
    dropbox.assert_invariants()


def test_packages_already_in_the_inbox_at_start_are_imported(make: Dropboxes) -> None:
    dropbox = make()
    for number in range(3):
        dropbox.drop_valid(f"early-{number}.tar.gz")
    dropbox.drop_invalid("early-bad.tar.gz")
    dropbox.start()
    dropbox.wait_settled()
    assert dropbox.names("done") == {f"early-{number}.tar.gz" for number in range(3)}
    assert dropbox.names("failed") == {"early-bad.tar.gz"}
    dropbox.assert_invariants()


def test_package_in_a_sub_folder_keeps_its_relative_path(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    dropbox.drop_valid("team-a/run-7/model.tar.gz")
    dropbox.drop_invalid("team-b/broken.tgz")
    dropbox.wait_settled()
    assert dropbox.names("done") == {"team-a/run-7/model.tar.gz"}
    assert dropbox.names("failed") == {"team-b/broken.tgz"}
    rows = {row["package"]: row for row in dropbox.ledger_rows()}
    assert rows["model.tar.gz"]["source"] == "team-a/run-7/model.tar.gz"
    dropbox.assert_invariants()


def test_polling_mode_imports_by_settle_time(make: Dropboxes) -> None:
    dropbox = make(mode="polling")
    dropbox.start()
    assert dropbox.events("daemon_ready")[0]["mode"] == "polling"
    dropbox.drop_valid("polled.tar.gz")
    dropbox.drop_invalid("polled-bad.tar.gz")
    dropbox.wait_settled()
    assert statuses(dropbox) == {"polled.tar.gz": ["imported"], "polled-bad.tar.gz": ["failed"]}
    dropbox.assert_invariants()


def test_burst_of_500_packages_each_imported_exactly_once(make: Dropboxes) -> None:
    dropbox = make(workers=2)
    dropbox.start()
    for number in range(500):
        dropbox.drop_valid(f"burst-{number:03}.tar.gz")
    dropbox.wait_settled(timeout=120)
    assert len(dropbox.names("done")) == 500
    rows = dropbox.ledger_rows()
    assert sorted(row["status"] for row in rows) == ["imported"] * 500
    assert len({row["sha256"] for row in rows}) == 500
    dropbox.assert_invariants()


# -- what happens to each package -----------------------------------------------------------


def test_same_bytes_under_two_names_is_one_import_and_one_duplicate(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    data = valid_package("twice")
    dropbox.drop("first.tar.gz", data)
    dropbox.wait_settled()
    dropbox.drop("second.tar.gz", data)
    dropbox.wait_settled()
    assert dropbox.names("done") == {"first.tar.gz", "second.tar.gz"}
    rows = {row["package"]: row for row in dropbox.ledger_rows()}
    assert rows["first.tar.gz"]["status"] == "imported"
    assert rows["second.tar.gz"]["status"] == "duplicate"
    assert rows["second.tar.gz"]["duplicate_of"] == rows["first.tar.gz"]["id"]
    assert rows["second.tar.gz"]["model_hash"] == rows["first.tar.gz"]["model_hash"]
    dropbox.assert_invariants()


def test_same_bytes_arriving_together_are_still_imported_once(make: Dropboxes) -> None:
    dropbox = make()
    data = valid_package("together")
    for name in ("a.tar.gz", "b.tar.gz", "c.tar.gz"):
        dropbox.drop(name, data)
    dropbox.start()
    dropbox.wait_settled()
    assert sorted(statuses(dropbox).values()) == [["duplicate"], ["duplicate"], ["imported"]]
    dropbox.assert_invariants()


def test_invalid_package_goes_to_failed_with_its_error_files(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    dropbox.drop_invalid("broken.tar.gz")
    dropbox.wait_settled()
    assert dropbox.names("failed") == {"broken.tar.gz"}
    failed = dropbox.folder("failed")
    document = json.loads((failed / "broken.tar.gz.error.json").read_text())
    codes = [error["code"] for error in document["errors"]]
    assert codes and all(code.count(".") >= 1 for code in codes)
    text = (failed / "broken.tar.gz.error.txt").read_text()
    assert "broken.tar.gz was not imported" in text
    assert codes[0] in text
    dropbox.assert_invariants()


@pytest.mark.parametrize("kind", ["valid", "invalid"])
def test_name_collision_gets_a_unique_suffix_and_overwrites_nothing(
    make: Dropboxes, kind: str
) -> None:
    dropbox = make()
    dropbox.start()
    make_package = valid_package if kind == "valid" else invalid_package
    folder = "done" if kind == "valid" else "failed"
    contents = [make_package(f"version-{number}") for number in range(3)]
    for data in contents:
        dropbox.drop("model.tar.gz", data)
        dropbox.wait_settled()
    expected = {"model.tar.gz", "model.1.tar.gz", "model.2.tar.gz"}
    assert dropbox.names(folder) == expected
    held = sorted(dropbox.files(folder).values())
    assert held == sorted(drop.sha256 for drop in dropbox.drops)
    dropbox.assert_invariants()


def test_non_matching_and_ignored_names_stay_in_the_inbox_untouched(make: Dropboxes) -> None:
    dropbox = make()
    package = valid_package("ignored")
    early = {"notes.txt": b"hello\n", ".hidden-early.tar.gz": package}
    for name, data in early.items():
        dropbox.drop(name, data, stays=True)
    dropbox.start()
    late = {
        ".hidden.tar.gz": valid_package("hidden"),
        "x.tar.gz.part": valid_package("part"),
        "y.tar.gz.tmp": valid_package("tmp"),
        "z.tar.gz~": valid_package("tilde"),
        "download.tar.gz.crdownload": valid_package("crdownload"),
        "model.zip": valid_package("zip"),
        ".sync/inside.tar.gz": valid_package("hidden-folder"),
    }
    for name, data in late.items():
        dropbox.drop(name, data, stays=True)
    before = {name: (dropbox.inbox / name).stat().st_mtime_ns for name in [*early, *late]}
    dropbox.wait_event("file_left_alone", where=lambda event: event["path"] == "model.zip")
    dropbox.drop_valid("sentinel.tar.gz")
    dropbox.wait_settled()
    assert dropbox.names("inbox") == {*early, *late}
    for name, mtime in before.items():
        assert (dropbox.inbox / name).stat().st_mtime_ns == mtime, name
    assert [row["package"] for row in dropbox.ledger_rows()] == ["sentinel.tar.gz"]
    left_alone = [event["path"] for event in dropbox.events("file_left_alone")]
    assert sorted(left_alone) == ["model.zip", "notes.txt"]
    dropbox.assert_invariants()


# -- signals, crashes and a second daemon ---------------------------------------------------


def start_with_a_slow_import(dropbox: Dropbox, name: str = "slow.tar.gz") -> Drop:
    """A package whose import waits after validation until the test releases it."""
    dropbox.start(env=dropbox.pause_at("validated", name))
    drop = dropbox.drop_valid(name)
    dropbox.wait_event("paused_at")
    return drop


def test_sigterm_during_an_import_lets_it_finish_and_exits_0(make: Dropboxes) -> None:
    dropbox = make(shutdown_timeout=60.0)
    start_with_a_slow_import(dropbox)
    dropbox.send(signal.SIGTERM)
    dropbox.wait_event("daemon_stopping")
    dropbox.release()
    assert dropbox.wait_exit(timeout=60) == 0
    [stopping] = dropbox.events("daemon_stopping")
    assert stopping["running"] == 1, "the import had already ended: nothing was tested"
    assert dropbox.names("done") == {"slow.tar.gz"}
    assert statuses(dropbox) == {"slow.tar.gz": ["imported"]}
    assert dropbox.events("daemon_stopped")
    dropbox.assert_invariants()


def test_a_second_ctrl_c_stops_at_once_and_the_restart_imports_the_package(
    make: Dropboxes,
) -> None:
    dropbox = make(shutdown_timeout=60.0)
    start_with_a_slow_import(dropbox)
    dropbox.send(signal.SIGINT)
    [stopping] = dropbox.wait_event("daemon_stopping")
    assert stopping["waiting_for"] == ["slow.tar.gz"], stopping
    dropbox.send(signal.SIGINT)

    assert dropbox.wait_exit(timeout=10) == 130  # not the 60 s of shutdown_timeout
    assert dropbox.events("daemon_stopped_at_once")
    assert (dropbox.folder("processing") / "slow.tar.gz").is_file()
    dropbox.release()
    dropbox.start()
    dropbox.wait_settled()
    assert statuses(dropbox) == {"slow.tar.gz": ["imported"]}
    cut = [row for row in dropbox.ledger_rows() if row["status"] == "interrupted"]
    assert [error["code"] for row in cut for error in row["errors"] or []] == []  # no crash
    dropbox.assert_invariants()


def test_sigterm_past_the_shutdown_timeout_exits_0_and_the_restart_finishes(
    make: Dropboxes,
) -> None:
    dropbox = make(shutdown_timeout=0.2)
    start_with_a_slow_import(dropbox)
    dropbox.send(signal.SIGTERM)
    assert dropbox.wait_exit(timeout=30) == 0
    assert dropbox.events("shutdown_timeout")
    dropbox.assert_invariants(idle=False)
    dropbox.start()
    dropbox.wait_settled(timeout=60)
    assert statuses(dropbox) == {"slow.tar.gz": ["imported"]}
    dropbox.assert_invariants()


def test_kill_9_during_an_import_then_restart_imports_it_exactly_once(make: Dropboxes) -> None:
    dropbox = make()
    start_with_a_slow_import(dropbox)
    assert dropbox.kill() == -signal.SIGKILL
    dropbox.assert_invariants(idle=False)
    dropbox.start()
    dropbox.wait_settled(timeout=60)
    assert dropbox.names("done") == {"slow.tar.gz"}
    assert statuses(dropbox) == {"slow.tar.gz": ["imported"]}
    dropbox.assert_invariants()


def test_a_second_daemon_on_the_same_folders_refuses_to_start(make: Dropboxes) -> None:
    dropbox = make()
    first = dropbox.start()
    second = dropbox.cli("run")
    assert second.returncode != 0
    assert "already running" in second.stderr
    assert str(first.pid) in second.stderr
    assert dropbox.running
    dropbox.drop_valid("still-served.tar.gz")
    dropbox.wait_settled()
    dropbox.assert_invariants()


def test_a_second_daemon_with_another_ledger_on_the_same_folders_refuses_to_start(
    make: Dropboxes, tmp_path: Path
) -> None:
    """The lock beside the ledger does not see a daemon with another ledger: the folders
    themselves are locked too (two such daemons imported most packages twice)."""
    dropbox = make()
    dropbox.start()
    config = dropbox.config_path.read_text()
    assert "[paths]" not in config
    other = tmp_path / "other.toml"
    elsewhere = tmp_path / "elsewhere" / "ledger.sqlite"
    other.write_text(f"{config}\n[paths]\nledger = {str(elsewhere)!r}\n")
    (tmp_path / "elsewhere").mkdir()

    second = subprocess.run(
        [*daemon_command(), "--config", str(other), "run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert second.returncode != 0, second.stderr
    assert "already running on these folders" in second.stderr
    assert not elsewhere.exists()
    dropbox.drop_valid("still-served.tar.gz")
    dropbox.wait_settled()
    dropbox.assert_invariants()


def test_sighup_reexecs_with_the_new_configuration_and_keeps_serving(
    make: Dropboxes,
) -> None:
    dropbox = make()
    process = dropbox.start()
    dropbox.settings["watch"]["patterns"] = ["*.tar.gz", "*.tgz", "*.model"]
    dropbox.write_config()
    dropbox.send(signal.SIGHUP)
    dropbox.wait_ready(count=2)
    assert dropbox.events("daemon_reexec")
    assert process.poll() is None
    command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
    assert any(part.endswith(b"ymir-dropbox") for part in command_line), command_line
    assert b"run" in command_line  # still found by `pgrep -f "ymir-dropbox run"`
    dropbox.drop_valid("after-hup.tar.gz")
    dropbox.drop_valid("new-pattern.model")
    dropbox.wait_settled()
    assert dropbox.names("done") == {"after-hup.tar.gz", "new-pattern.model"}
    assert dropbox.stop() == 0
    dropbox.assert_invariants()


def test_a_storm_of_reloads_never_kills_the_daemon(make: Dropboxes) -> None:
    """A SIGHUP that arrives while the re-executed process starts, before its handler is in
    place, waits for the handler: it must not end the daemon (exit 129)."""
    dropbox = make()
    process = dropbox.start()
    for _ in range(12):
        dropbox.send(signal.SIGHUP)
        time.sleep(0.05)  # Not a synchronisation: the storm's spacing is what is tested.
    assert process.poll() is None, dropbox.tail()
    dropbox.wait_event("daemon_reexec")
    dropbox.drop_valid("after-the-storm.tar.gz")
    dropbox.wait_settled()
    assert process.poll() is None, dropbox.tail()
    assert dropbox.stop() == 0
    dropbox.assert_invariants()


# -- the other commands ---------------------------------------------------------------------


def test_status_json_counts_waiting_processing_imported_and_failed(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    data = valid_package("status")
    dropbox.drop("one.tar.gz", data)
    dropbox.drop_valid("two.tar.gz")
    dropbox.drop_invalid("bad.tar.gz")
    dropbox.wait_settled()
    dropbox.drop("again.tar.gz", data)
    dropbox.wait_settled()
    status = json.loads(dropbox.cli("status", "--json", check=True).stdout)
    assert status["daemon_running"] is True
    assert status["total"] == {"imported": 2, "duplicate": 1, "failed": 1}
    assert status["today"] == status["total"]
    assert (status["waiting"], status["processing"]) == (0, 0)
    assert status["last_error"]["package"] == "bad.tar.gz"
    assert dropbox.stop() == 0
    dropbox.drop_valid("waiting.tar.gz")
    dropbox.drop("notes.txt", b"not a package", stays=True)
    status = json.loads(dropbox.cli("status", "--json", check=True).stdout)
    assert status["daemon_running"] is False
    assert status["waiting"] == 1
    assert status["waiting_packages"] == ["waiting.tar.gz"]


def test_status_names_what_the_daemon_will_never_take_and_why(make: Dropboxes) -> None:
    """An uploader of y8.zip or model.TAR.GZ was left waiting with no word."""
    dropbox = make()
    dropbox.start()
    dropbox.drop("y8.zip", b"PK", stays=True)
    dropbox.drop("team/model.TAR.GZ", b"\x1f\x8b", stays=True)
    dropbox.drop(".model.tar.gz.part", b"", stays=True)  # a writer's: not listed
    dropbox.drop_valid("sentinel.tar.gz")
    dropbox.wait_settled()

    status = json.loads(dropbox.cli("status", "--json", check=True).stdout)
    shown = dropbox.cli("status", check=True).stdout

    assert [never["path"] for never in status["never_taken"]] == ["team/model.TAR.GZ", "y8.zip"]
    assert "watch.patterns" in status["never_taken"][0]["why"]
    assert "never taken: y8.zip: not named *.tar.gz or *.tgz (watch.patterns)" in shown
    assert dropbox.stop() == 0


def test_status_without_a_ledger_says_how_to_find_the_daemons(tmp_path: Path) -> None:
    done = subprocess.run(
        [*daemon_command(), "status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "YMIR_DROPBOX_CONFIG"},
        timeout=30,
        check=True,
    )

    assert "no ledger at" in done.stdout and "--config FILE or YMIR_DROPBOX_CONFIG" in done.stdout


def test_retry_all_failed_moves_failed_packages_back_to_the_inbox_top_level(
    make: Dropboxes,
) -> None:
    dropbox = make()
    dropbox.start()
    dropbox.drop_invalid("bad-1.tar.gz")
    dropbox.drop_invalid("nested/bad-2.tar.gz")
    dropbox.drop_valid("good.tar.gz")
    dropbox.wait_settled()
    assert dropbox.stop() == 0
    retried = dropbox.cli("retry", "--all-failed", "--force")
    assert retried.returncode == 0, retried.stderr
    # back at the inbox's top level: the uploaders own its folders
    assert dropbox.names("inbox") == {"bad-1.tar.gz", "bad-2.tar.gz"}
    assert dropbox.names("failed") == set()
    assert dropbox.error_files() == set()
    assert dropbox.names("done") == {"good.tar.gz"}
    places = {row["package"]: row["place"] for row in dropbox.ledger_rows()}
    assert places == {"bad-1.tar.gz": "retried", "bad-2.tar.gz": "retried", "good.tar.gz": "done"}
    dropbox.start()
    dropbox.wait_settled()
    assert dropbox.names("failed") == {"bad-1.tar.gz", "bad-2.tar.gz"}
    assert statuses(dropbox)["bad-1.tar.gz"] == ["failed", "failed"]
    dropbox.assert_invariants()
    assert dropbox.cli("retry", "--all-failed", "--force").returncode == 0


def test_a_slow_import_does_not_block_the_others(make: Dropboxes) -> None:
    dropbox = make(workers=2)
    start_with_a_slow_import(dropbox)
    for number in range(5):
        dropbox.drop_valid(f"small-{number}.tar.gz")
    wait_until(
        lambda: len(dropbox.names("done") - {"slow.tar.gz"}) == 5,
        30,
        "the small packages are imported",
    )
    assert "slow.tar.gz" not in dropbox.names("done")
    dropbox.release()
    dropbox.wait_settled(timeout=60)
    dropbox.assert_invariants()
