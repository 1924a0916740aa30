"""The ledger's schema: its columns and the migrations that built it, version by version.

Each migration takes the database from version N to N + 1. Append; never change what one
that shipped does to a ledger: people run ledgers of every release, and each start migrates
theirs. A new ledger is made with today's schema in one step (:func:`create`); a test checks
that it is what the migrations build from the first release's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlite_utils import Database


# Columns of the first release (schema version 1).
V1_COLUMNS: dict[str, type] = {
    "id": int,
    "package": str,
    "source": str,
    "size": int,
    "sha256": str,
    "received_at": str,
    "started_at": str,
    "finished_at": str,
    "status": str,
    "place": str,
    "processing_path": str,
    "final_path": str,
    "backend": str,
    "model_hash": str,
    "best_stage_name": str,
    "mAP": float,
    "class_names": str,
    "object_type": int,
    "package_version": str,
    "errors": str,
    "warnings": str,
    "dst_rev": str,
    "duplicate_of": int,
    "duration": float,
    "notes": str,
}
RAW_PATH_COLUMNS = ("source_raw", "processing_path_raw", "final_path_raw")
# Version 3 gave the YMIR web backend columns of its own; version 4 moved them into
# backend_facts, one JSON object a backend fills with whatever it needs to keep.
V3_BACKEND_COLUMNS: dict[str, str] = {
    "ymir_project_id": "INTEGER",
    "ymir_model_id": "INTEGER",
    "ymir_task_id": "INTEGER",
    "ymir_group_name": "TEXT",
    "ymir_model_name": "TEXT",
    "ymir_stages": "TEXT",  # JSON
}
COLUMNS: dict[str, type] = {
    **V1_COLUMNS,
    **dict.fromkeys(RAW_PATH_COLUMNS, bytes),
    "uploader": str,  # the owner of the package file when it was claimed
    "backend_facts": str,  # JSON: what the backend keeps about the attempt (YMIR's ids, ...)
}
JSON_COLUMNS = frozenset({"class_names", "errors", "warnings", "notes", "backend_facts"})
SQLITE_TYPES = {int: "INTEGER", str: "TEXT", float: "REAL", bytes: "BLOB"}
V1_INDEXES = (
    *(f"CREATE INDEX attempts_{column} ON attempts([{column}])"
      for column in ("sha256", "status", "model_hash", "place")),
    "CREATE UNIQUE INDEX attempts_one_import ON attempts(sha256) WHERE status = 'imported'",
)  # fmt: skip
V2_INDEX = "CREATE INDEX attempts_processing_path_raw ON attempts([processing_path_raw])"


def _table(columns: dict[str, type]) -> str:
    return "CREATE TABLE attempts ({})".format(
        ", ".join(
            f"[{name}] {SQLITE_TYPES[kind]}" + (" PRIMARY KEY" if name == "id" else "")
            for name, kind in columns.items()
        )
    )


def create(connection: sqlite3.Connection) -> None:
    """A new ledger, at SCHEMA_VERSION: no migration's detour (version 3's columns made only
    to be dropped), and no sqlite-utils to import on the first start of every layout."""
    connection.execute(_table(COLUMNS))
    for index in (*V1_INDEXES, V2_INDEX):
        connection.execute(index)


def _v1(db: Database) -> None:
    db.execute(_table(V1_COLUMNS))
    for index in V1_INDEXES:
        db.execute(index)


def _v2(db: Database) -> None:
    """Paths as their exact bytes, beside the text shown to people."""
    for column in RAW_PATH_COLUMNS:
        db.execute(f"ALTER TABLE attempts ADD COLUMN [{column}] BLOB")
    db.execute(V2_INDEX)


def _v3(db: Database) -> None:
    """Who uploaded a package, and where the YMIR web backend put it."""
    db.execute("ALTER TABLE attempts ADD COLUMN [uploader] TEXT")
    for column, kind in V3_BACKEND_COLUMNS.items():
        db.execute(f"ALTER TABLE attempts ADD COLUMN [{column}] {kind}")
    db.execute("CREATE INDEX attempts_ymir_model_id ON attempts([ymir_model_id])")


def _v4(db: Database) -> None:
    """A backend's facts in one JSON column, under the names people and scripts read them
    by (``ymir_model_id``, ...): every value of the version 3 columns is kept there.

    The columns are dropped by rebuilding the table (sqlite-utils' transform, in this
    migration's transaction), not by SQLite's DROP COLUMN, which needs SQLite 3.35: Debian 11
    and RHEL 9 have 3.34. The indexes are dropped first and made again from their own SQL
    (transform cannot carry a partial index, and older sqlite-utils lose every index)."""
    db.execute("ALTER TABLE attempts ADD COLUMN [backend_facts] TEXT")
    names = list(V3_BACKEND_COLUMNS)
    rows = db.execute(
        f"SELECT id, {', '.join(names)} FROM attempts WHERE "  # noqa: S608 - known columns
        + " OR ".join(f"{name} IS NOT NULL" for name in names)
    ).fetchall()
    for attempt_id, *values in rows:
        facts = {
            name: json.loads(value) if name == "ymir_stages" and value else value
            for name, value in zip(names, values, strict=True)
            if value is not None
        }
        db.execute(
            "UPDATE attempts SET backend_facts = ? WHERE id = ?", [json.dumps(facts), attempt_id]
        )
    db.execute("DROP INDEX attempts_ymir_model_id")
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master "
        "WHERE type = 'index' AND tbl_name = 'attempts' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        db.execute(f"DROP INDEX [{name}]")
    for statement in db.table("attempts").transform_sql(drop=set(names)):
        db.execute(statement)
    for _, sql in indexes:
        db.execute(sql)


MIGRATIONS: tuple[Callable[[Database], None], ...] = (_v1, _v2, _v3, _v4)
SCHEMA_VERSION = len(MIGRATIONS)
