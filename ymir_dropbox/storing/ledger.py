"""The ledger: one SQLite row per attempt, in WAL mode.

Every step of an attempt is written before it is taken (claimed, importing, final), so after a
crash the daemon knows from the ledger and the folders alone what it was doing. A partial
unique index makes "imported twice" impossible: one ``imported`` row per package sha256.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.storing.lifecycle import (
    FINAL,
    FIRST_PLACES,
    SETTLED,
    IllegalTransition,
    Place,
    Status,
    check_place,
    check_status,
)

if TYPE_CHECKING:
    from sqlite_utils import Database

JSON_COLUMNS = ("class_names", "errors", "warnings", "notes", "ymir_stages")
BUSY_TIMEOUT_SECONDS = 30.0
MIN_PREFIX = 4  # characters of a sha256 or model hash prefix that `ledger show` accepts
CRASHED = "import.crashed"

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
# Columns added by later migrations (the first release created the ones above, in _v1).
RAW_PATH_COLUMNS = ("source_raw", "processing_path_raw", "final_path_raw")
V3_COLUMNS: dict[str, type] = {
    "uploader": str,  # the owner of the package file when it was claimed
    "ymir_project_id": int,  # the YMIR web backend (backend = "ymir-api")
    "ymir_model_id": int,
    "ymir_task_id": int,
    "ymir_group_name": str,
    "ymir_model_name": str,
    "ymir_stages": str,  # JSON: name, mAP, tp, fp, fn of each stage as YMIR shows them
}
V1_COLUMNS = dict(COLUMNS)
COLUMNS.update(dict.fromkeys(RAW_PATH_COLUMNS, bytes))
COLUMNS.update(V3_COLUMNS)


class LedgerError(DropboxError):
    """The ledger cannot be opened or used (locked past the timeout, damaged, too new)."""


def now() -> str:
    """Timestamps in the ledger: ISO 8601, UTC, microseconds; they sort as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _v1(db: Database) -> None:
    sqlite_types = {int: "INTEGER", str: "TEXT", float: "REAL"}
    columns = ", ".join(
        f"[{name}] {sqlite_types[kind]}" + (" PRIMARY KEY" if name == "id" else "")
        for name, kind in V1_COLUMNS.items()
    )
    db.execute(f"CREATE TABLE attempts ({columns})")
    for column in ("sha256", "status", "model_hash", "place"):
        db.execute(f"CREATE INDEX attempts_{column} ON attempts([{column}])")
    db.execute(
        "CREATE UNIQUE INDEX attempts_one_import ON attempts(sha256) WHERE status = 'imported'"
    )


def _v2(db: Database) -> None:
    """Paths as their exact bytes, beside the text shown to people."""
    for column in RAW_PATH_COLUMNS:
        db.execute(f"ALTER TABLE attempts ADD COLUMN [{column}] BLOB")
    db.execute("CREATE INDEX attempts_processing_path_raw ON attempts([processing_path_raw])")


def _v3(db: Database) -> None:
    """Who uploaded a package, and where the YMIR web backend put it."""
    sqlite_types = {int: "INTEGER", str: "TEXT"}
    for column, kind in V3_COLUMNS.items():
        db.execute(f"ALTER TABLE attempts ADD COLUMN [{column}] {sqlite_types[kind]}")
    db.execute("CREATE INDEX attempts_ymir_model_id ON attempts([ymir_model_id])")


# Each migration takes the database from version N to N + 1. Append; never edit one that shipped.
MIGRATIONS: tuple[Callable[[Database], None], ...] = (_v1, _v2, _v3)
SCHEMA_VERSION = len(MIGRATIONS)


def _connect(path: Path, read_only: bool, immutable: bool = False) -> sqlite3.Connection:
    if not read_only:
        return sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None
        )
    uri = f"{path.absolute().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(
        uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None
    )


def _user_version(connection: sqlite3.Connection) -> int:
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    return version


class DuplicateImport(LedgerError):
    """Another attempt recorded an import of the same sha256 first."""


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # "leave this column as it is"


class Ledger:
    """A thread-safe handle on the ledger file.

    State changes go through :meth:`begin`, :meth:`start_import`, :meth:`finish` and
    :meth:`move`, which refuse any step :mod:`lifecycle` does not list. Paths are stored
    twice: as text for people (bytes that are not UTF-8 shown as ``\\xNN``) and as the exact
    bytes (``*_raw`` columns), which are the only form ever turned back into a path.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        try:
            connection = _connect(path, read_only)
            version = SCHEMA_VERSION
            if read_only:
                # Readers (status, ledger) never write: no WAL switch, no migration.
                try:
                    version = _user_version(connection)
                except sqlite3.OperationalError:
                    # A WAL ledger at rest has no -shm file, and a reader who may not create
                    # one reads it as an immutable file (nothing writes it: no -wal either).
                    if Path(f"{path}-wal").exists():
                        raise
                    connection.close()
                    connection = _connect(path, read_only, immutable=True)
                    version = _user_version(connection)
                self._check_version(version)
            self._empty = version == 0  # a reader's look while the first daemon creates it
        except sqlite3.Error as error:
            raise LedgerError(f"{path}: cannot open the ledger: {error}") from None
        self.connection = connection
        self._lock = threading.RLock()
        if read_only:
            return
        try:
            self.connection.execute("PRAGMA journal_mode = wal")
            # FULL: every commit is on disk before the move it announces, so a power cut
            # never leaves a folder ahead of the ledger (NORMAL could lose the last rows).
            self.connection.execute("PRAGMA synchronous = FULL")
            self._migrate()
        except sqlite3.DatabaseError as error:
            raise LedgerError(f"{path}: cannot use the ledger: {error}") from None

    @classmethod
    def open_for_reading(cls, path: Path) -> Ledger:
        """The ledger for a command that only reads it (works with read access alone)."""
        if not path.exists():
            raise LedgerError(f"no ledger at {path} yet")
        return cls(path, read_only=True)

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path}: ledger schema version {version} is newer than this "
                f"ymir-dropbox understands ({SCHEMA_VERSION}); upgrade ymir-dropbox"
            )

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION; one writer at a time, so two openers agree."""
        with _Transaction(self.connection):
            version = _user_version(self.connection)
            self._check_version(version)
            if version == SCHEMA_VERSION:
                return
            # sqlite-utils is for changing the schema; the queries go straight to sqlite3,
            # which spares every command the time it takes to import.
            from sqlite_utils import Database

            db = Database(self.connection)
            for target, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(db)
                self.connection.execute(f"PRAGMA user_version = {target}")

    @property
    def schema_version(self) -> int:
        return _user_version(self.connection)

    def close(self) -> None:
        with self._lock:
            self.connection.close()

    # -- the lifecycle ------------------------------------------------------------------------

    def begin(
        self,
        *,
        package: str,
        place: Place = Place.NONE,
        source: PurePath | None = None,
        processing_path: PurePath | None = None,
        **fields: Any,
    ) -> int:
        """Record a new attempt (status ``claimed``) and return its id."""
        assert place in FIRST_PLACES, place
        record = _encode(
            {
                "status": Status.CLAIMED,
                "place": place,
                "received_at": now(),
                "package": package,
                **_path_fields("source", source),
                **_path_fields("processing_path", processing_path),
                **fields,
            }
        )
        names = ", ".join(f"[{name}]" for name in record)
        marks = ", ".join("?" for _ in record)
        with self._lock:
            cursor = self.connection.execute(
                f"INSERT INTO attempts ({names}) VALUES ({marks})",  # noqa: S608 - known columns
                list(record.values()),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def start_import(self, attempt_id: int, backend: str) -> None:
        self._step(attempt_id, Status.IMPORTING, {"started_at": now(), "backend": backend})

    def finish(self, attempt_id: int, status: Status | str, **fields: Any) -> None:
        """Record the final status of an attempt.

        An ``interrupted`` attempt gives up its package: whichever attempt comes next owns
        the file, so the row no longer claims a place.
        """
        status = Status(status)
        assert status in FINAL, status
        changes: dict[str, Any] = {"finished_at": now(), **fields}
        self._step(
            attempt_id, status, changes, place=None if status is Status.INTERRUPTED else KEEP
        )

    def move(
        self, attempt_id: int, place: Place | None, final_path: PurePath | object | None = KEEP
    ) -> None:
        """Record where the package file is now (or is about to be)."""
        changes = {} if final_path is KEEP else _path_fields("final_path", final_path)  # type: ignore[arg-type]
        self._step(attempt_id, KEEP, changes, place=place)

    def plan(self, attempt_id: int, final_path: PurePath) -> None:
        """Record the name the package will be filed under, before it is filed."""
        self.record(attempt_id, **_path_fields("final_path", final_path))

    def record(self, attempt_id: int, **fields: Any) -> None:
        """Facts about an attempt that are not steps of its lifecycle (sha256, size, ...)."""
        assert not {"status", "place"} & set(fields), "use finish() or move()"
        self._step(attempt_id, KEEP, fields)

    def _step(
        self, attempt_id: int, status: Status | object, fields: dict[str, Any], place: Any = KEEP
    ) -> None:
        changes = dict(fields)
        with self._lock, _Transaction(self.connection):
            if status is not KEEP or place is not KEEP:
                current = self.connection.execute(
                    "SELECT status, place FROM attempts WHERE id = ?", [attempt_id]
                ).fetchone()
                if current is None:
                    raise IllegalTransition(f"attempt {attempt_id} does not exist")
                if status is not KEEP:
                    check_status(current[0], status)  # type: ignore[arg-type]
                    changes["status"] = status
                if place is not KEEP:
                    check_place(current[1], place)
                    changes["place"] = place
            record = _encode(changes)
            if not record:
                return
            assignments = ", ".join(f"[{name}] = ?" for name in record)
            try:
                self.connection.execute(
                    f"UPDATE attempts SET {assignments} WHERE id = ?",  # noqa: S608 - known columns
                    [*record.values(), attempt_id],
                )
            except sqlite3.IntegrityError as error:
                raise DuplicateImport(str(error)) from None

    # -- reading ------------------------------------------------------------------------------

    def get(self, attempt_id: int) -> dict[str, Any] | None:
        return self._first("SELECT * FROM attempts WHERE id = ?", [attempt_id])

    def imported_by_sha256(self, sha256: str) -> dict[str, Any] | None:
        return self._first(
            "SELECT * FROM attempts WHERE sha256 = ? AND status = 'imported' LIMIT 1", [sha256]
        )

    def find(self, key: str) -> list[dict[str, Any]]:
        """Attempts matching an id, a sha256 prefix or a model hash prefix."""
        if key.isdigit():
            row = self.get(int(key))
            if row is not None:
                return [row]
        if len(key) < MIN_PREFIX:
            return []
        pattern = key.lower() + "%"
        return self._all(
            "SELECT * FROM attempts WHERE sha256 LIKE ? OR model_hash LIKE ? ORDER BY id",
            [pattern, pattern],
        )

    def recent(self, limit: int = 20, status: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        return self._all(
            f"SELECT * FROM attempts {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
            [*params, limit],
        )

    def unfinished_by_sha256(self, sha256: str) -> list[dict[str, Any]]:
        """Earlier attempts on the same package that a fault cut short since it last settled,
        newest first: a backend may resume what one of them started."""
        return self._all(
            "SELECT * FROM attempts WHERE sha256 = ? AND status = 'interrupted' AND id > "
            "(SELECT coalesce(max(id), 0) FROM attempts WHERE sha256 = ? "
            "AND status IN ('imported', 'duplicate', 'failed')) ORDER BY id DESC LIMIT 20",
            [sha256, sha256],
        )

    def orphan_models(self) -> list[str]:
        """Model files the embedded store wrote for attempts that never imported them (a crash
        after the store, then no redo: the package deleted, or failed as crashed), and that
        no import and no attempt in flight owns."""
        rows = self._all(
            "SELECT DISTINCT model_hash FROM attempts WHERE backend = 'embedded' "
            "AND status = 'interrupted' AND model_hash IS NOT NULL "
            "AND model_hash NOT IN (SELECT model_hash FROM attempts "
            "  WHERE status IN ('imported', 'duplicate') AND model_hash IS NOT NULL) "
            "AND sha256 NOT IN (SELECT sha256 FROM attempts "
            "  WHERE status IN ('claimed', 'importing') AND sha256 IS NOT NULL)",
            [],
        )
        return [str(row["model_hash"]) for row in rows]

    def in_place(self, place: Place) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM attempts WHERE place = ? ORDER BY id", [place])

    def in_flight(self) -> list[dict[str, Any]]:
        """Attempts that had not finished: after a start, the ones a stop or crash cut short."""
        return self._all(
            "SELECT * FROM attempts WHERE status IN (?, ?) ORDER BY id",
            [Status.CLAIMED, Status.IMPORTING],
        )

    def settled_in_processing(self, relative: PurePath) -> dict[str, Any] | None:
        """The attempt that finished the package at ``processing/relative`` but did not move it."""
        return self._first(
            f"SELECT * FROM attempts WHERE place = 'processing' AND {PROCESSING_PATH_IS} "  # noqa: S608
            "AND status IN ('imported', 'duplicate', 'failed') ORDER BY id DESC LIMIT 1",
            _path_params(relative),
        )

    def crashes_in_a_row(self, relative: PurePath) -> int:
        """How many of the latest attempts on ``processing/relative`` ended in a crash."""
        rows = self._all(
            f"SELECT status, errors FROM attempts WHERE {PROCESSING_PATH_IS} "  # noqa: S608
            "ORDER BY id DESC LIMIT 20",
            _path_params(relative),
        )
        count = 0
        for row in rows:
            codes = {problem.get("code") for problem in row.get("errors") or []}
            if row["status"] in SETTLED:
                break
            if row["status"] == Status.INTERRUPTED and CRASHED in codes:
                count += 1
        return count

    def counts_since(self, since: str) -> dict[str, int]:
        """Final outcomes of the attempts finished since ``since`` (an ISO timestamp)."""
        found = {
            row["status"]: int(row["n"])
            for row in self._all(
                "SELECT status, count(*) AS n FROM attempts WHERE finished_at >= ? GROUP BY status",
                [since],
            )
        }
        return {status: found.get(status, 0) for status in ("imported", "duplicate", "failed")}

    def latest(self, status: Status, limit: int = 1) -> list[dict[str, Any]]:
        return self._all(
            "SELECT * FROM attempts WHERE status = ? ORDER BY id DESC LIMIT ?", [status, limit]
        )

    def count(self, **equal: Any) -> int:
        """How many attempts have these column values (``count(sha256=...)``)."""
        unknown = set(equal) - set(COLUMNS)
        assert not unknown, unknown
        where = " AND ".join(f"[{name}] = ?" for name in equal) or "1"
        if self._empty:
            return 0
        with self._lock:
            found: int = self.connection.execute(
                f"SELECT count(*) FROM attempts WHERE {where}",  # noqa: S608 - known columns
                list(equal.values()),
            ).fetchone()[0]
        return found

    def _first(self, sql: str, params: list[Any]) -> dict[str, Any] | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        if self._empty:
            return []
        with self._lock:
            cursor = self.connection.execute(sql, params)
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor]
        return [_decode(row) for row in rows]


def path_of(row: dict[str, Any], column: str) -> Path | None:
    """The exact path an attempt recorded (from its bytes; older rows: from their text)."""
    raw = row.get(f"{column}_raw")
    if isinstance(raw, bytes):
        return Path(os.fsdecode(raw))
    text = row.get(column)
    return Path(text) if text else None


def for_people(row: dict[str, Any]) -> dict[str, Any]:
    """A row as ``ledger --json`` shows it: the paths as text only, and the reason of a
    failure in one line."""
    shown = {key: value for key, value in row.items() if key not in RAW_PATH_COLUMNS}
    shown["reason"] = failure_reason(row.get("errors"))
    return shown


def failure_reason(errors: Any) -> str:
    """An attempt's problems (its ``errors``) in one line for people: the first one,
    ``code [field]: message``, and how many more there are."""
    problems = [problem for problem in errors or [] if isinstance(problem, dict)]
    if not problems:
        return ""
    first = problems[0]
    where = f" [{first['field']}]" if first.get("field") else ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first.get('code')}{where}: {first.get('message')}{more}"


def relative_of(row: dict[str, Any]) -> PurePosixPath | None:
    found = path_of(row, "processing_path")
    return PurePosixPath(found) if found is not None else None


class _Transaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.outer = False

    def __enter__(self) -> None:
        self.outer = not self.connection.in_transaction
        if self.outer:
            self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if self.outer:
            self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


def as_text(value: str) -> str:
    """Text SQLite can store: a file name may be any bytes; those not UTF-8 become \\xNN."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _path_fields(column: str, path: PurePath | None) -> dict[str, Any]:
    if path is None:
        return {column: None, f"{column}_raw": None}
    return {column: as_text(str(path)), f"{column}_raw": os.fsencode(path)}


# Rows written before paths were kept as bytes have only the text.
PROCESSING_PATH_IS = (
    "(processing_path_raw = ? OR (processing_path_raw IS NULL AND processing_path = ?))"
)


def _path_params(path: PurePath) -> list[Any]:
    return [os.fsencode(path), as_text(str(path))]


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(COLUMNS)
    assert not unknown, f"not ledger columns: {unknown}"
    encoded = {}
    for key, value in fields.items():
        if key in JSON_COLUMNS and value is not None:
            value = json.dumps(value)
        elif isinstance(value, StrEnum):
            value = str(value)
        encoded[key] = as_text(value) if isinstance(value, str) else value
    return encoded


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: json.loads(value) if key in JSON_COLUMNS and isinstance(value, str) else value
        for key, value in row.items()
    }
