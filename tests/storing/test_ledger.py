"""The ledger: schema version, WAL, one `imported` row per sha256, and `ymir-dropbox ledger`."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from factory import run_dropbox, seed_entries, seed_package, write_config, write_package

from ymir_dropbox.config import Config
from ymir_dropbox.storing.attempts import Findings
from ymir_dropbox.storing.backends import make_backend
from ymir_dropbox.storing.importer import Importer
from ymir_dropbox.storing.ledger import (
    SCHEMA_VERSION,
    DuplicateImport,
    Ledger,
    LedgerError,
    _Transaction,
)
from ymir_dropbox.storing.lifecycle import Place, Status

V1_ONE_IMPORT = (
    "CREATE UNIQUE INDEX attempts_one_import ON attempts(sha256) WHERE status = 'imported'"
)

# A module-scoped fixture: the module's tests run in one worker (pyproject's --dist).
pytestmark = pytest.mark.xdist_group("ledger-cli")


def pragma(path: Path, name: str) -> Any:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        connection.close()


# -- the file ---------------------------------------------------------------------------------


def test_schema_version_is_recorded(tmp_path: Path) -> None:
    Ledger(tmp_path / "ledger.sqlite").close()

    assert pragma(tmp_path / "ledger.sqlite", "user_version") == SCHEMA_VERSION


def test_wal_mode_is_on(tmp_path: Path) -> None:
    Ledger(tmp_path / "ledger.sqlite").close()

    assert pragma(tmp_path / "ledger.sqlite", "journal_mode") == "wal"


def test_every_commit_reaches_the_disk_before_the_move_it_announces(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")

    assert ledger.connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path)
    attempt = ledger.begin(package="p.tar.gz")
    ledger.close()
    schema_before = pragma(path, "schema_version")

    reopened = Ledger(path)

    assert reopened.get(attempt) is not None
    assert reopened.schema_version == SCHEMA_VERSION
    assert pragma(path, "schema_version") == schema_before


def test_a_ledger_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()

    with pytest.raises(LedgerError, match="newer"):
        Ledger(path)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"this is not a database" * 100)

    with pytest.raises(LedgerError, match="ledger"):
        Ledger(path)


def test_two_openers_of_a_new_ledger_both_succeed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = wal")
    holder.execute("BEGIN IMMEDIATE")  # as if a third opener were migrating right now
    entered = threading.Semaphore(0)
    errors: list[BaseException] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is _Transaction.__enter__.__code__:
            entered.release()

    def open_ledger() -> None:
        try:
            Ledger(path).close()
        except BaseException as error:
            errors.append(error)

    threading.settrace(watch)
    try:
        openers = [threading.Thread(target=open_ledger) for _ in range(2)]
        for opener in openers:
            opener.start()
    finally:
        threading.settrace(None)
    assert entered.acquire(timeout=10) and entered.acquire(timeout=10)
    holder.execute("COMMIT")
    holder.close()
    for opener in openers:
        opener.join(timeout=40)

    assert errors == []


# -- rows -------------------------------------------------------------------------------------


def importing(ledger: Ledger, **fields: Any) -> int:
    """A new attempt, as far as the import step."""
    attempt = ledger.begin(**fields)
    ledger.start_import(attempt, "embedded")
    return attempt


def test_only_one_imported_row_per_sha256(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    first = importing(ledger, package="a.tar.gz", sha256="ab" * 32)
    second = importing(ledger, package="b.tar.gz", sha256="ab" * 32)
    ledger.finish(first, Status.IMPORTED)

    with pytest.raises(DuplicateImport):
        ledger.finish(second, Status.IMPORTED)


def test_the_unique_index_holds_for_raw_sql_too(tmp_path: Path) -> None:
    Ledger(tmp_path / "ledger.sqlite").close()
    connection = sqlite3.connect(tmp_path / "ledger.sqlite")
    insert = "INSERT INTO attempts (package, status, sha256) VALUES (?, 'imported', 'cafe')"
    connection.execute(insert, ["a"])

    with pytest.raises(sqlite3.IntegrityError):
        connection.execute(insert, ["b"])


def test_many_failed_rows_for_one_sha256_are_fine(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for _ in range(3):
        ledger.finish(importing(ledger, package="a", sha256="cafe"), Status.FAILED)
    ledger.finish(importing(ledger, package="a", sha256="cafe"), Status.IMPORTED)

    assert ledger.count_by_sha256("cafe") == 4


def test_lists_are_stored_as_json_and_read_back(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    attempt = ledger.begin(package="a", notes=["person", "猫"])
    ledger.start_import(attempt, "embedded")
    ledger.finish(attempt, Status.IMPORTED, findings=Findings(class_names=("person", "猫")))

    found = ledger.get(attempt)
    assert found is not None
    assert found.class_names == ("person", "猫") and found.notes == ("person", "猫")


def import_once(config: Config, ledger: Ledger, package: Path) -> Any:
    attempt = ledger.begin(package=package.name, source=package)
    return Importer(config, ledger, make_backend(config)).run(package, attempt)


def test_second_import_of_the_same_bytes_is_a_duplicate_row(config: Config, tmp_path: Path) -> None:
    ledger = Ledger(config.paths.ledger)
    first = import_once(config, ledger, seed_package(tmp_path / "a.tar.gz"))

    second = import_once(config, ledger, seed_package(tmp_path / "b.tar.gz"))

    row = ledger.get(second.attempt_id)
    assert row is not None
    assert (row.status, row.duplicate_of) == ("duplicate", first.attempt_id)
    assert row.model_hash == ledger.get(first.attempt_id).model_hash  # type: ignore[union-attr]


def test_failed_import_records_the_problems(config: Config, tmp_path: Path) -> None:
    ledger = Ledger(config.paths.ledger)
    package = write_package(tmp_path / "bad.tar.gz", seed_entries()[:-1])

    outcome = import_once(config, ledger, package)

    row = ledger.get(outcome.attempt_id)
    assert row is not None
    assert row.status == "failed"
    assert [(e.code, e.field) for e in row.errors] == [("info.missing", "ymir-info.yaml")]


def test_a_failed_package_is_not_a_duplicate_of_anything(config: Config, tmp_path: Path) -> None:
    ledger = Ledger(config.paths.ledger)
    package = write_package(tmp_path / "bad.tar.gz", seed_entries()[:-1])
    import_once(config, ledger, package)

    again = import_once(config, ledger, package)

    assert again.status == "failed"


# -- `ymir-dropbox ledger` --------------------------------------------------------------------


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A box with attempts: failed, imported, failed, duplicate (ids 1 to 4)."""
    root = tmp_path_factory.mktemp("ledger-cli")
    config = write_config(root / "config.toml", "box")
    bad_one = write_package(root / "bad-1.tar.gz", seed_entries()[:-1])
    good = seed_package(root / "good.tar.gz")
    bad_two = write_package(root / "bad-2.tar.gz", seed_entries()[1:])
    for package in (bad_one, good, bad_two, good):
        run_dropbox("import", "--config", config, package, cwd=root)
    listing = run_dropbox("ledger", "--json", "--config", config, cwd=root)
    rows = {row["id"]: row for row in map(json.loads, listing.stdout.splitlines())}
    return {"root": root, "config": config, "rows": rows}


def ledger_command(filled: dict[str, Any], *arguments: str) -> Any:
    return run_dropbox("ledger", "--config", filled["config"], *arguments, cwd=filled["root"])


def test_ledger_json_lists_every_attempt_newest_first(filled: dict[str, Any]) -> None:
    done = ledger_command(filled, "--json")

    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(row["id"], row["status"]) for row in rows] == [
        (4, "duplicate"),
        (3, "failed"),
        (2, "imported"),
        (1, "failed"),
    ]


def test_ledger_duplicate_points_at_the_first_import(filled: dict[str, Any]) -> None:
    assert filled["rows"][4]["duplicate_of"] == 2


def test_ledger_json_status_failed_limit_1(filled: dict[str, Any]) -> None:
    done = ledger_command(filled, "--json", "--status", "failed", "--limit", "1")

    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(row["id"], row["status"], row["package"]) for row in rows] == [
        (3, "failed", "bad-2.tar.gz")
    ]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (lambda rows: "2", [2]),
        (lambda rows: rows[2]["sha256"][:8], [2, 4]),
        (lambda rows: rows[2]["sha256"][:8].upper(), [2, 4]),
    ],
    ids=["id", "sha256-prefix-import-and-duplicate", "sha256-prefix-upper-case"],
)
def test_ledger_show_finds_the_attempt(
    key: Any, expected: list[int], filled: dict[str, Any]
) -> None:
    done = ledger_command(filled, "show", key(filled["rows"]), "--json")

    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0
    assert [row["id"] for row in rows] == expected


def test_ledger_show_by_sha256_prefix_of_a_failed_package(filled: dict[str, Any]) -> None:
    done = ledger_command(filled, "show", filled["rows"][1]["sha256"][:10], "--json")

    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [1]


def test_ledger_show_by_model_hash_prefix_finds_import_and_duplicate(
    filled: dict[str, Any],
) -> None:
    done = ledger_command(filled, "show", filled["rows"][2]["model_hash"][:8], "--json")

    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [2, 4]


def test_ledger_show_prints_every_field(filled: dict[str, Any]) -> None:
    done = ledger_command(filled, "show", "2")

    fields = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert {"id", "status", "sha256", "model_hash", "best_stage_name", "mAP"} <= fields


@pytest.mark.parametrize("key", ["99", "ffffffffffff"], ids=["id", "prefix"])
def test_ledger_show_without_a_match_exits_1(key: str, filled: dict[str, Any]) -> None:
    done = ledger_command(filled, "show", key)

    assert done.returncode == 1
    assert done.stdout == ""


def test_ledger_table_has_a_header_and_one_line_per_attempt(filled: dict[str, Any]) -> None:
    done = ledger_command(filled)

    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "status", "package"]
    assert len(lines) == 5


def test_a_ledger_of_the_first_release_is_migrated_and_its_rows_still_work(
    tmp_path: Path,
) -> None:
    """The first release wrote schema version 1, with paths as text only."""
    from sqlite_utils import Database

    from ymir_dropbox.storing.ledger import MIGRATIONS
    from ymir_dropbox.storing.lifecycle import Status

    path = tmp_path / "ledger.sqlite"
    first_release = Database(sqlite3.connect(path))
    MIGRATIONS[0](first_release)
    first_release.execute("PRAGMA user_version = 1")
    first_release.execute(
        "INSERT INTO attempts (package, status, place, processing_path, final_path, sha256) "
        "VALUES ('old.tar.gz', 'failed', 'processing', 'team/old.tar.gz', "
        "'/srv/failed/team/old.tar.gz', 'cafe')"
    )
    first_release.conn.commit()
    first_release.close()

    ledger = Ledger(path)

    assert ledger.schema_version == SCHEMA_VERSION == 4
    [row] = ledger.recent()
    assert row.package == "old.tar.gz" and row.uploader is None
    found = ledger.settled_in_processing(Path("team/old.tar.gz"))
    assert found is not None and found.id == row.id
    ledger.move(row.id, Place.FAILED)
    assert ledger.in_place(Place.FAILED)[0].status == Status.FAILED


def schema_of(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]], int]:
    """The attempts table's columns (in order, with types and key), its indexes (name and
    SQL) and the schema version."""
    connection = sqlite3.connect(path)
    try:
        columns = connection.execute("PRAGMA table_info(attempts)").fetchall()
        indexes = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name"
        ).fetchall()
        return columns, indexes, connection.execute("PRAGMA user_version").fetchone()[0]
    finally:
        connection.close()


def test_a_new_ledger_has_the_schema_a_first_release_ledger_is_migrated_to(
    tmp_path: Path,
) -> None:
    """A new ledger is made at today's schema in one step, an old one migrated version by
    version: the same columns in the same order, the same indexes, the same version."""
    from sqlite_utils import Database

    from ymir_dropbox.storing.ledger import MIGRATIONS

    old = tmp_path / "old.sqlite"
    first_release = Database(sqlite3.connect(old))
    MIGRATIONS[0](first_release)
    first_release.execute("PRAGMA user_version = 1")
    first_release.conn.commit()
    first_release.close()
    Ledger(old).close()
    Ledger(tmp_path / "new.sqlite").close()

    assert schema_of(tmp_path / "new.sqlite") == schema_of(old)
    columns, indexes, version = schema_of(old)
    names = [column[1] for column in columns]
    assert names[-1] == "backend_facts" and "ymir_model_id" not in names
    assert ("attempts_one_import", V1_ONE_IMPORT) in indexes
    assert version == SCHEMA_VERSION


OLD_SQLITE = Path(__file__).resolve().parents[2] / ".old-sqlite"
ON_OLD_SQLITE = """
import json, sqlite3, sys
from pathlib import Path
from sqlite_utils import Database
from ymir_dropbox.storing.ledger import MIGRATIONS, Ledger

folder = Path(sys.argv[1])
new = Ledger(folder / "new.sqlite")
version_3 = Database(sqlite3.connect(folder / "v3.sqlite"))
for migration in MIGRATIONS[:3]:
    migration(version_3)
version_3.execute("PRAGMA user_version = 3")
version_3.execute(
    "INSERT INTO attempts (package, status, place, sha256, backend, ymir_model_id) "
    "VALUES ('m.tar.gz', 'imported', 'done', 'cafe', 'ymir-api', 41)"
)
version_3.conn.commit()
version_3.close()
migrated = Ledger(folder / "v3.sqlite")
[row] = migrated.recent()
print(json.dumps({
    "sqlite": sqlite3.sqlite_version,
    "versions": [new.schema_version, migrated.schema_version],
    "facts": dict(row.facts),
    "imported": migrated.imported_by_sha256("cafe") is not None,
}))
"""


def test_on_the_oldest_sqlite_a_ledger_is_made_and_an_old_one_migrated(tmp_path: Path) -> None:
    """SQLite 3.34 (Debian 11, RHEL 9) has no ALTER TABLE DROP COLUMN, which version 4 of
    the schema needed to drop version 3's columns: no new ledger could be made there."""
    if not (OLD_SQLITE / "libsqlite3.so.0").exists():
        pytest.fail(f"no SQLite 3.34 in {OLD_SQLITE}: run `.ci/old-sqlite` (see README)")
    done = subprocess.run(
        [sys.executable, "-c", ON_OLD_SQLITE, str(tmp_path)],
        env={**os.environ, "LD_LIBRARY_PATH": str(OLD_SQLITE)},
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {
        "sqlite": "3.34.1",
        "versions": [SCHEMA_VERSION, SCHEMA_VERSION],
        "facts": {"ymir_model_id": 41},
        "imported": True,
    }
    assert schema_of(tmp_path / "new.sqlite") == schema_of(tmp_path / "v3.sqlite")


def test_a_reader_of_a_ledger_still_being_created_sees_no_rows(tmp_path: Path) -> None:
    """`status` at the moment the first daemon creates the ledger: empty, not an error."""
    path = tmp_path / "ledger.sqlite"
    sqlite3.connect(path).close()  # the file exists; its tables not yet

    reader = Ledger.open_for_reading(path)

    assert reader.recent() == [] and dataclasses.asdict(reader.counts_since("")) == {
        "imported": 0,
        "duplicate": 0,
        "failed": 0,
    }


def test_a_version_3_ledger_keeps_every_value_of_ymirs_columns_as_backend_facts(
    tmp_path: Path,
) -> None:
    """Version 3 gave the YMIR web backend columns of its own; version 4 keeps their values
    among the backend's facts, under the same names, and drops the columns."""
    from sqlite_utils import Database

    from ymir_dropbox.storing.documents import attempt_document
    from ymir_dropbox.storing.ledger import MIGRATIONS

    path = tmp_path / "ledger.sqlite"
    version_3 = Database(sqlite3.connect(path))
    for migration in MIGRATIONS[:3]:
        migration(version_3)
    version_3.execute("PRAGMA user_version = 3")
    stages = [{"name": "best", "mAP": 0.5, "tp": 1, "fp": 2, "fn": 3}]
    version_3.execute(
        "INSERT INTO attempts (package, status, place, backend, ymir_project_id, ymir_model_id, "
        "ymir_task_id, ymir_group_name, ymir_model_name, ymir_stages) "
        "VALUES ('m.tar.gz', 'imported', 'done', 'ymir-api', 3, 41, 77, 'm', 'm_1', ?)",
        [json.dumps(stages)],
    )
    version_3.execute(
        "INSERT INTO attempts (package, status, place) VALUES ('e', 'failed', 'done')"
    )
    version_3.conn.commit()
    version_3.close()

    ledger = Ledger(path)

    imported, embedded = sorted(ledger.recent(), key=lambda attempt: attempt.id)
    assert dict(imported.facts) == {
        "ymir_project_id": 3,
        "ymir_model_id": 41,
        "ymir_task_id": 77,
        "ymir_group_name": "m",
        "ymir_model_name": "m_1",
        "ymir_stages": stages,
    }
    assert attempt_document(imported)["ymir_model_id"] == 41
    assert dict(embedded.facts) == {}
    columns = {row[1] for row in ledger.connection.execute("PRAGMA table_info(attempts)")}
    assert "backend_facts" in columns and not any(name.startswith("ymir_") for name in columns)


def test_ledger_show_prints_what_the_attempt_has_and_a_header_per_match(
    filled: dict[str, Any],
) -> None:
    done = ledger_command(filled, "show", filled["rows"][2]["sha256"][:8])

    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("==")] == [
        "== attempt 2 ==",
        "== attempt 4 ==",
    ]
    fields = {line.split()[0] for line in lines if line.strip() and not line.startswith("==")}
    assert "model_hash" in fields
    assert not any(field.startswith("ymir_") for field in fields)  # the embedded backend's


def test_the_ledger_table_stays_readable_with_a_long_name(tmp_path: Path) -> None:
    root = tmp_path
    config = write_config(root / "config.toml")
    long_name = "n" * 240 + ".tar.gz"
    run_dropbox("import", "--config", config, seed_package(root / long_name), cwd=root)

    done = run_dropbox("ledger", "--config", config, cwd=root)

    [_header, row] = done.stdout.splitlines()
    assert len(row) < 200 and "…" in row
