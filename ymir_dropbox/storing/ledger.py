"""The ledger: one SQLite row per attempt, through sqlite-utils, in WAL mode.

Every step of an attempt is written before it is taken (claimed, importing, final), so after a
crash the daemon knows from the ledger and the folders alone what it was doing. A partial
unique index makes "imported twice" impossible: one ``imported`` row per package sha256.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from ymir_dropbox.reading.problems import DropboxError

IN_FLIGHT = ("claimed", "importing")
FINAL = ("imported", "failed", "duplicate", "interrupted")
JSON_COLUMNS = ("class_names", "errors", "warnings", "notes")
BUSY_TIMEOUT_SECONDS = 30.0

COLUMNS: dict[str, type] = {
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


class LedgerError(DropboxError):
    code = "ledger.error"


def now() -> str:
    """Timestamps in the ledger: ISO 8601, UTC, microseconds; they sort as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _v1(db: Database) -> None:
    sqlite_types = {int: "INTEGER", str: "TEXT", float: "REAL"}
    columns = ", ".join(
        f"[{name}] {sqlite_types[kind]}" + (" PRIMARY KEY" if name == "id" else "")
        for name, kind in COLUMNS.items()
    )
    db.execute(f"CREATE TABLE attempts ({columns})")
    for column in ("sha256", "status", "model_hash", "place"):
        db.execute(f"CREATE INDEX attempts_{column} ON attempts([{column}])")
    db.execute(
        "CREATE UNIQUE INDEX attempts_one_import ON attempts(sha256) WHERE status = 'imported'"
    )


# Each migration takes the database from version N to N + 1. Append; never edit one that shipped.
MIGRATIONS: tuple[Callable[[Database], None], ...] = (_v1,)
SCHEMA_VERSION = len(MIGRATIONS)


class DuplicateImport(LedgerError):
    """Another attempt recorded an import of the same sha256 first."""


class Ledger:
    """A thread-safe handle on the ledger file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            connection = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as error:
            raise LedgerError(f"{path}: cannot open the ledger: {error}") from None
        self.db = Database(connection)
        self._lock = threading.RLock()
        try:
            self.db.enable_wal()
            # In WAL mode NORMAL stays consistent through any crash of the process; only a
            # power cut can lose the last commits, and the folders (fsynced) still tell.
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as error:
            raise LedgerError(f"{path}: cannot use the ledger: {error}") from None

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION; one writer at a time, so two openers agree."""
        with self._transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path}: ledger schema version {version} is newer than this "
                    f"ymir-dropbox understands ({SCHEMA_VERSION}); upgrade ymir-dropbox"
                )
            for target, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {target}")

    def _transaction(self) -> Any:
        return _Transaction(self.db.conn)

    @property
    def schema_version(self) -> int:
        version: int = self.db.execute("PRAGMA user_version").fetchone()[0]
        return version

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # -- writing ------------------------------------------------------------------------------

    def begin(self, **fields: Any) -> int:
        """Record a new attempt (status ``claimed``) and return its id."""
        record = _encode({"status": "claimed", "received_at": now(), **fields})
        names = ", ".join(f"[{name}]" for name in record)
        marks = ", ".join("?" for _ in record)
        with self._lock:
            cursor = self.db.execute(
                f"INSERT INTO attempts ({names}) VALUES ({marks})",  # noqa: S608 - known columns
                list(record.values()),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def update(self, attempt_id: int, **fields: Any) -> None:
        record = _encode(fields)
        assignments = ", ".join(f"[{name}] = ?" for name in record)
        with self._lock:
            try:
                self.db.execute(
                    f"UPDATE attempts SET {assignments} WHERE id = ?",  # noqa: S608 - known columns
                    [*record.values(), attempt_id],
                )
            except sqlite3.IntegrityError as error:
                raise DuplicateImport(str(error)) from None

    def finish(self, attempt_id: int, status: str, **fields: Any) -> None:
        """Record the final status of an attempt.

        An ``interrupted`` attempt gives up its package: whichever attempt comes next owns
        the file, so the row no longer claims a place.
        """
        assert status in FINAL, status
        if status == "interrupted":
            fields["place"] = None
        self.update(attempt_id, status=status, finished_at=now(), **fields)

    # -- reading ------------------------------------------------------------------------------

    def get(self, attempt_id: int) -> dict[str, Any] | None:
        rows = list(self.query("SELECT * FROM attempts WHERE id = ?", [attempt_id]))
        return rows[0] if rows else None

    def imported_by_sha256(self, sha256: str) -> dict[str, Any] | None:
        rows = list(
            self.query(
                "SELECT * FROM attempts WHERE sha256 = ? AND status = 'imported' LIMIT 1", [sha256]
            )
        )
        return rows[0] if rows else None

    def find(self, key: str) -> list[dict[str, Any]]:
        """Attempts matching an id, a sha256 prefix or a model hash prefix."""
        if key.isdigit():
            row = self.get(int(key))
            if row is not None:
                return [row]
        if len(key) < 4:
            return []
        pattern = key.lower() + "%"
        return list(
            self.query(
                "SELECT * FROM attempts WHERE sha256 LIKE ? OR model_hash LIKE ? ORDER BY id",
                [pattern, pattern],
            )
        )

    def recent(self, limit: int = 20, status: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        rows = self.query(
            f"SELECT * FROM attempts {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
            [*params, limit],
        )
        return list(rows)

    def in_place(self, place: str) -> list[dict[str, Any]]:
        return list(self.query("SELECT * FROM attempts WHERE place = ? ORDER BY id", [place]))

    def query(self, sql: str, params: list[Any] | None = None) -> Iterator[dict[str, Any]]:
        with self._lock:
            rows = list(self.db.query(sql, params or []))
        for row in rows:
            yield _decode(row)

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        with self._lock:
            return self.db.execute(sql, params or []).fetchone()[0]


class _Transaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


def as_text(value: str) -> str:
    """Text SQLite can store: a file name may be any bytes; those not UTF-8 become \\xNN."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(COLUMNS)
    assert not unknown, f"not ledger columns: {unknown}"
    encoded = {}
    for key, value in fields.items():
        if key in JSON_COLUMNS and value is not None:
            value = json.dumps(value)
        encoded[key] = as_text(value) if isinstance(value, str) else value
    return encoded


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: json.loads(value) if key in JSON_COLUMNS and isinstance(value, str) else value
        for key, value in row.items()
    }
