"""Retention: old packages leave done/ (and failed/, when asked) with the removal recorded;
nothing outside those folders, and nothing reached through a symlink, is ever removed."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from ymir_dropbox.config import Config, RetentionConfig
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.operations.retention import (
    apply_retention,
    folder_usage,
    plan_retention,
    run_retention,
)
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Place, Status

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def days_ago(days: float) -> str:
    return (NOW - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the plan (pure) --------------------------------------------------------------------------


def attempt_of(row: dict[str, Any]) -> Attempt:
    return Attempt(
        id=row["id"],
        package="p.tar.gz",
        status=Status(row["status"]),
        place=Place(row["place"]),
        finished_at=row["finished_at"],
    )


ROWS = {
    "imported-40-days-in-done": ({"place": "done", "status": "imported"}, 40, True),
    "duplicate-40-days-in-done": ({"place": "done", "status": "duplicate"}, 40, True),
    "imported-exactly-30-days": ({"place": "done", "status": "imported"}, 30, True),
    "imported-29-days": ({"place": "done", "status": "imported"}, 29, False),
    "failed-40-days-kept-for-60": ({"place": "failed", "status": "failed"}, 40, False),
    "failed-70-days-kept-for-60": ({"place": "failed", "status": "failed"}, 70, True),
    "retried-long-ago": ({"place": "retried", "status": "failed"}, 400, False),
    "removed-already": ({"place": "removed", "status": "imported"}, 400, False),
    "still-processing": ({"place": "processing", "status": "importing"}, 400, False),
}


@pytest.mark.parametrize(("row", "age", "due"), ROWS.values(), ids=ROWS.keys())
def test_what_is_due(row: dict[str, Any], age: float, due: bool) -> None:
    rows = [attempt_of({**row, "id": 1, "finished_at": days_ago(age)})]

    assert bool(plan_retention(rows, NOW, done_days=30, failed_days=60)) is due


def test_zero_days_means_never() -> None:
    rows = [
        attempt_of({"id": 1, "place": "done", "status": "imported", "finished_at": days_ago(9999)}),
        attempt_of({"id": 2, "place": "failed", "status": "failed", "finished_at": days_ago(9999)}),
    ]

    assert plan_retention(rows, NOW, done_days=0, failed_days=0) == []


def test_a_row_without_a_readable_time_is_kept() -> None:
    rows = [
        attempt_of({"id": 1, "place": "done", "status": "imported", "finished_at": None}),
        attempt_of({"id": 2, "place": "done", "status": "imported", "finished_at": "last tuesday"}),
    ]

    assert plan_retention(rows, NOW, done_days=1, failed_days=1) == []


# -- applying it to real folders and a real ledger --------------------------------------------


@pytest.fixture
def ledger(config: Config) -> Iterator[Ledger]:
    opened = Ledger(config.paths.ledger)
    yield opened
    opened.close()


def filed(
    config: Config,
    ledger: Ledger,
    relative: str,
    status: Status = Status.IMPORTED,
    data: bytes = b"package bytes",
) -> tuple[int, Path]:
    """A package the daemon filed: in done/ or failed/ (with error files), its row saying so."""
    place = Place.FAILED if status is Status.FAILED else Place.DONE
    folder = config.paths.failed if place is Place.FAILED else config.paths.done
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if place is Place.FAILED:
        for suffix in (".error.json", ".error.txt"):
            path.with_name(path.name + suffix).write_text("{}")
    attempt = ledger.begin(
        package=path.name,
        place=Place.INBOX,
        source=Path(relative),
        sha256=hashlib.sha256(relative.encode()).hexdigest(),
        notes=["claimed by the test"],
    )
    ledger.move(attempt, Place.PROCESSING)
    ledger.start_import(attempt, "embedded")
    ledger.finish(attempt, status, finished_at=days_ago(100))
    ledger.plan(attempt, path)
    ledger.move(attempt, place)
    return attempt, path


def place_of(ledger: Ledger, attempt: int) -> str:
    row = ledger.get(attempt)
    assert row is not None
    return str(row.place)


def test_old_imports_and_duplicates_leave_done_and_the_ledger_says_so(
    config: Config, ledger: Ledger
) -> None:
    imported, imported_path = filed(config, ledger, "team/a.tar.gz", data=b"x" * 100)
    duplicate, duplicate_path = filed(config, ledger, "b.tar.gz", Status.DUPLICATE)
    failed, failed_path = filed(config, ledger, "c.tar.gz", Status.FAILED)

    removed = apply_retention(config.paths, ledger, NOW, done_days=30, failed_days=0)

    assert sorted(removal.attempt for removal in removed) == [imported, duplicate]
    assert not imported_path.exists() and not duplicate_path.exists()
    assert failed_path.exists()  # failed packages only when asked
    assert place_of(ledger, imported) == place_of(ledger, duplicate) == "removed"
    assert place_of(ledger, failed) == "failed"
    notes = ledger.get(imported).notes  # type: ignore[union-attr]
    assert notes[0] == "claimed by the test"
    assert notes[-1].startswith("retention: kept in done/ for 30 days since ")
    assert next(r.size for r in removed if r.attempt == imported) == 100
    assert (config.paths.done / "team").is_dir()  # folders stay


def test_failed_packages_go_with_their_error_files_when_failed_days_is_set(
    config: Config, ledger: Ledger
) -> None:
    attempt, _path = filed(config, ledger, "bad.tar.gz", Status.FAILED)

    apply_retention(config.paths, ledger, NOW, done_days=0, failed_days=30)

    assert os.listdir(config.paths.failed) == []
    assert place_of(ledger, attempt) == "removed"


def test_young_packages_stay(config: Config, ledger: Ledger) -> None:
    attempt, path = filed(config, ledger, "a.tar.gz")

    removed = apply_retention(config.paths, ledger, NOW, done_days=101, failed_days=101)

    assert removed == []
    assert path.exists() and place_of(ledger, attempt) == "done"


def test_a_dry_run_removes_nothing(config: Config, ledger: Ledger) -> None:
    attempt, path = filed(config, ledger, "bad.tar.gz", Status.FAILED, data=b"y" * 10)

    planned = apply_retention(config.paths, ledger, NOW, 0, 30, dry_run=True)

    assert [(removal.attempt, removal.size) for removal in planned] == [(attempt, 10 + 2 + 2)]
    assert path.exists() and place_of(ledger, attempt) == "failed"


def test_a_package_gone_already_is_recorded_as_removed(config: Config, ledger: Ledger) -> None:
    attempt, path = filed(config, ledger, "sub/a.tar.gz")
    path.unlink()
    path.parent.rmdir()

    removed = apply_retention(config.paths, ledger, NOW, done_days=30, failed_days=0)

    assert [(removal.attempt, removal.size) for removal in removed] == [(attempt, 0)]
    assert place_of(ledger, attempt) == "removed"
    assert ledger.get(attempt).notes[-1]  # type: ignore[union-attr].endswith("the file was gone already")


def test_an_absent_done_folder_is_not_taken_for_removed_packages(
    config: Config, ledger: Ledger, tmp_path: Path
) -> None:
    attempt, _path = filed(config, ledger, "a.tar.gz")
    config.paths.done.rename(tmp_path / "unmounted")

    removed = apply_retention(config.paths, ledger, NOW, done_days=30, failed_days=0)

    assert removed == []
    assert place_of(ledger, attempt) == "done"


# -- what is never removed --------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "a.tar.gz").write_bytes(b"not ours")
    (folder / "a.tar.gz.error.json").write_text("not ours")
    return folder


def kept(outside: Path) -> list[str]:
    return sorted(os.listdir(outside))


def test_a_symlink_where_the_package_was_is_left_alone(
    config: Config, ledger: Ledger, outside: Path
) -> None:
    attempt, path = filed(config, ledger, "a.tar.gz")
    path.unlink()
    path.symlink_to(outside / "a.tar.gz")

    with structlog.testing.capture_logs() as logs:
        removed = apply_retention(config.paths, ledger, NOW, done_days=30, failed_days=0)

    assert removed == []
    assert path.is_symlink() and kept(outside) == ["a.tar.gz", "a.tar.gz.error.json"]
    assert place_of(ledger, attempt) == "done"
    assert [entry["event"] for entry in logs] == ["retention_skipped"]


def test_a_sub_folder_replaced_by_a_symlink_is_not_followed(
    config: Config, ledger: Ledger, outside: Path
) -> None:
    attempt, path = filed(config, ledger, "team/a.tar.gz", Status.FAILED)
    for name in os.listdir(path.parent):
        (path.parent / name).unlink()
    path.parent.rmdir()
    path.parent.symlink_to(outside, target_is_directory=True)

    removed = apply_retention(config.paths, ledger, NOW, done_days=30, failed_days=30)

    assert removed == []
    assert kept(outside) == ["a.tar.gz", "a.tar.gz.error.json"]
    assert place_of(ledger, attempt) == "failed"


def test_a_symlinked_error_file_keeps_the_whole_package(
    config: Config, ledger: Ledger, outside: Path
) -> None:
    _attempt, path = filed(config, ledger, "a.tar.gz", Status.FAILED)
    error_json = path.with_name("a.tar.gz.error.json")
    error_json.unlink()
    error_json.symlink_to(outside / "a.tar.gz.error.json")

    removed = apply_retention(config.paths, ledger, NOW, done_days=0, failed_days=30)

    assert removed == []
    assert path.exists() and kept(outside) == ["a.tar.gz", "a.tar.gz.error.json"]


def test_a_path_outside_the_configured_folder_is_left_alone(
    config: Config, ledger: Ledger, outside: Path
) -> None:
    attempt, path = filed(config, ledger, "a.tar.gz")
    ledger.plan(attempt, outside / "a.tar.gz")
    dotted, dotted_path = filed(config, ledger, "b.tar.gz")
    climbing = config.paths.done / ".." / ".." / "outside" / "a.tar.gz"
    ledger.plan(dotted, climbing)

    removed = apply_retention(config.paths, ledger, NOW, done_days=30, failed_days=0)

    assert removed == []
    assert kept(outside) == ["a.tar.gz", "a.tar.gz.error.json"]
    assert path.exists() and dotted_path.exists()


def test_done_itself_may_be_a_symlink_the_admin_made(
    config: Config, ledger: Ledger, tmp_path: Path
) -> None:
    real = tmp_path / "big-disk" / "done"
    real.parent.mkdir()
    config.paths.done.rmdir()
    real.mkdir()
    config.paths.done.symlink_to(real, target_is_directory=True)
    attempt, _path = filed(config, ledger, "a.tar.gz")

    apply_retention(config.paths, ledger, NOW, done_days=30, failed_days=0)

    assert os.listdir(real) == [] and place_of(ledger, attempt) == "removed"


# -- the command's entry point ----------------------------------------------------------------


def test_failed_packages_need_an_age_when_asked_for(config: Config, ledger: Ledger) -> None:
    filed(config, ledger, "bad.tar.gz", Status.FAILED)

    with pytest.raises(DropboxError, match="--days"):
        run_retention(config, ledger, NOW, failed=True)


def test_zero_days_for_failed_packages_says_what_it_means(config: Config, ledger: Ledger) -> None:
    from ymir_dropbox.core.errors import UsageError

    filed(config, ledger, "bad.tar.gz", Status.FAILED)

    with pytest.raises(UsageError, match=r"--days 0 removes nothing \(0 days is 'never'"):
        run_retention(config, ledger, NOW, failed=True, failed_days=0)


def test_failed_packages_only_when_asked_for(config: Config, ledger: Ledger) -> None:
    attempt, _path = filed(config, ledger, "bad.tar.gz", Status.FAILED)
    configured = dataclasses.replace(config, retention=RetentionConfig(30, 30))

    assert run_retention(configured, ledger, NOW) == []
    removed = run_retention(config, ledger, NOW, failed=True, failed_days=30)

    assert [removal.attempt for removal in removed] == [attempt]


# -- disk use ---------------------------------------------------------------------------------


def test_folder_usage_counts_regular_files_once_and_follows_no_symlink(
    config: Config, tmp_path: Path
) -> None:
    paths = config.paths
    (paths.inbox / "team").mkdir()
    (paths.inbox / "team" / "a.tar.gz").write_bytes(b"a" * 1000)
    (paths.inbox / "b.tgz").write_bytes(b"b" * 10)
    (paths.done / "c.tar.gz").write_bytes(b"c" * 300)
    os.link(paths.done / "c.tar.gz", paths.done / "c-again.tar.gz")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    (paths.inbox / "link.tar.gz").symlink_to(big)
    (paths.inbox / "linked-folder").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(paths.failed / "fifo")

    usage = folder_usage(paths)

    assert usage == {"inbox": 1010, "processing": 0, "done": 300, "failed": 0, "models": 0}
