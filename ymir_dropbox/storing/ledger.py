"""The ledger: one SQLite row per attempt, in WAL mode.

Every step of an attempt is written before it is taken (claimed, importing, final), so after a
crash the daemon knows from the ledger and the folders alone what it was doing. A partial
unique index makes "imported twice" impossible: one ``imported`` row per package sha256. Rows
leave the ledger as :class:`~ymir_dropbox.storing.attempts.Attempt` values, decoded once here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any

from ymir_dropbox.core.errors import DropboxError, UsageError
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.attempts import NO_FACTS, Attempt, Fact, Facts, Findings
from ymir_dropbox.storing.durable import fsync_folder
from ymir_dropbox.storing.ledger_schema import (
    JSON_COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    V3_BACKEND_COLUMNS,
    create,
)
from ymir_dropbox.storing.lifecycle import (
    FINAL,
    FIRST_PLACES,
    IN_FLIGHT,
    SETTLED,
    IllegalTransition,
    Place,
    Status,
    check_place,
    check_status,
)

Columns = dict[str, Any]  # an attempt's row, as SQLite takes it: column -> value
BUSY_TIMEOUT_SECONDS = 30.0
MIN_PREFIX = 4  # characters of a sha256 or model hash prefix that `ledger show` accepts
CRASHED = "import.crashed"
ATTEMPT_FIELDS = frozenset(field.name for field in fields(Attempt))


class LedgerError(DropboxError):
    """The ledger cannot be opened or used (locked past the timeout, damaged, too new)."""


class KeyTooShort(LedgerError, UsageError):
    """A sha256 or model hash prefix too short to name an attempt."""


class DuplicateImport(LedgerError):
    """Another attempt recorded an import of the same sha256 first."""


def now() -> str:
    """Timestamps in the ledger: ISO 8601, UTC, microseconds; they sort as text."""
    return timestamp(datetime.now(UTC))


def timestamp(moment: datetime) -> str:
    """``moment`` (aware) as the ledger writes times, so that it compares with them as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


_KEEP = object()  # "leave the place as it is"


@dataclass(frozen=True, slots=True)
class Counts:
    """Final outcomes over a period."""

    imported: int = 0
    duplicate: int = 0
    failed: int = 0


class LedgerQueries:
    """The questions the ledger answers, each returning :class:`Attempt` values (or counts).
    A read-only handle has these alone; :class:`Ledger` adds the steps."""

    connection: sqlite3.Connection
    _lock: threading.RLock
    _empty: bool

    @property
    def empty(self) -> bool:
        """Opened before the first daemon gave the ledger its schema: it answers nothing,
        ever; open it again to read what was written since."""
        return self._empty

    def get(self, attempt_id: int) -> Attempt | None:
        return self._first("SELECT * FROM attempts WHERE id = ?", [attempt_id])

    def imported_by_sha256(self, sha256: str) -> Attempt | None:
        return self._first(
            "SELECT * FROM attempts WHERE sha256 = ? AND status = ? LIMIT 1",
            [sha256, Status.IMPORTED],
        )

    def any_imported_of_size(self, size: int) -> bool:
        """Whether an import had this many bytes: a file of that size may be a re-delivery."""
        return bool(
            self._scalar(
                "SELECT count(*) FROM attempts WHERE status = ? AND size = ?",
                [Status.IMPORTED, size],
            )
        )

    def find(self, key: str) -> list[Attempt]:
        """Attempts matching an id, a sha256 prefix or a model hash prefix (at least
        :data:`MIN_PREFIX` characters: a shorter one raises :class:`KeyTooShort`)."""
        if key.isdigit():
            found = self.get(int(key))
            if found is not None:
                return [found]
        if len(key) < MIN_PREFIX:
            if key.isdigit():
                return []  # an id that is not in the ledger
            raise KeyTooShort(
                f"a sha256 or model hash prefix needs at least {MIN_PREFIX} characters; "
                f"{key!r} has {len(key)}"
            )
        pattern = key.lower() + "%"
        return self._all(
            "SELECT * FROM attempts WHERE sha256 LIKE ? OR model_hash LIKE ? ORDER BY id",
            [pattern, pattern],
        )

    def recent(self, limit: int = 20, status: Status | None = None) -> list[Attempt]:
        """The latest attempts (of one status), newest first."""
        if status is None:
            return self._all("SELECT * FROM attempts ORDER BY id DESC LIMIT ?", [limit])
        return self._all(
            "SELECT * FROM attempts WHERE status = ? ORDER BY id DESC LIMIT ?", [status, limit]
        )

    def unfinished_by_sha256(self, sha256: str) -> list[Attempt]:
        """Earlier attempts on the same package that a fault cut short since it last settled,
        newest first: a backend may resume what one of them started."""
        return self._all(
            "SELECT * FROM attempts WHERE sha256 = ? AND status = ? AND id > "
            "(SELECT coalesce(max(id), 0) FROM attempts WHERE sha256 = ? "
            "AND status IN (?, ?, ?)) ORDER BY id DESC LIMIT 20",
            [sha256, Status.INTERRUPTED, sha256, *sorted(SETTLED)],
        )

    def by_sha256(self, sha256: str, after: int = 0, limit: int = 100) -> list[Attempt]:
        """The attempts at these bytes with an id above ``after``, newest first."""
        return self._all(
            "SELECT * FROM attempts WHERE sha256 = ? AND id > ? ORDER BY id DESC LIMIT ?",
            [sha256, after, limit],
        )

    def resumable_by_sha256(self, sha256: str) -> list[Attempt]:
        """Attempts at these bytes that a fault cut short since they were last imported,
        newest first, whoever's file they read: what a backend may have started for one of
        them (a YMIR import, still running or done) belongs to every copy of the bytes, even
        past a copy that failed meanwhile (a crash limit says nothing of what YMIR holds)."""
        return self._all(
            "SELECT * FROM attempts WHERE sha256 = ? AND status = ? AND id > "
            "(SELECT coalesce(max(id), 0) FROM attempts WHERE sha256 = ? AND status = ?) "
            "ORDER BY id DESC LIMIT 20",
            [sha256, Status.INTERRUPTED, sha256, Status.IMPORTED],
        )

    def orphan_models(self, backend: str) -> list[str]:
        """Model files ``backend`` wrote for attempts that never imported them (a crash after
        the store, then no redo: the package deleted, or failed as crashed), and that no
        import and no attempt in flight owns."""
        rows = self.connection.execute(
            "SELECT DISTINCT model_hash FROM attempts WHERE backend = ? "
            "AND status = ? AND model_hash IS NOT NULL "
            "AND model_hash NOT IN (SELECT model_hash FROM attempts "
            "  WHERE status IN (?, ?) AND model_hash IS NOT NULL) "
            "AND sha256 NOT IN (SELECT sha256 FROM attempts "
            "  WHERE status IN (?, ?) AND sha256 IS NOT NULL)",
            [backend, Status.INTERRUPTED, Status.IMPORTED, Status.DUPLICATE, *sorted(IN_FLIGHT)],
        ).fetchall()
        return [str(model_hash) for (model_hash,) in rows]

    def with_fact(self, key: str, value: Fact) -> list[Attempt]:
        """Attempts whose backend recorded ``key`` = ``value`` among its facts."""
        return self._all(
            "SELECT * FROM attempts WHERE json_extract(backend_facts, ?) = ? ORDER BY id",
            [f'$."{key}"', value],
        )

    def in_place(self, place: Place) -> list[Attempt]:
        return self._all("SELECT * FROM attempts WHERE place = ? ORDER BY id", [place])

    def in_flight(self) -> list[Attempt]:
        """Attempts that had not finished: after a start, the ones a stop or crash cut short."""
        return self._all(
            "SELECT * FROM attempts WHERE status IN (?, ?) ORDER BY id", sorted(IN_FLIGHT)
        )

    def settled_in_processing(self, relative: PurePath) -> Attempt | None:
        """The attempt that finished the package at ``processing/relative`` but did not move it."""
        return self._first(
            f"SELECT * FROM attempts WHERE place = ? AND {PROCESSING_PATH_IS} "  # noqa: S608
            "AND status IN (?, ?, ?) ORDER BY id DESC LIMIT 1",
            [Place.PROCESSING, *_path_params(relative), *sorted(SETTLED)],
        )

    def crashes_in_a_row(self, relative: PurePath) -> int:
        """How many of the latest attempts on ``processing/relative`` ended in a crash."""
        count = 0
        for attempt in self._all(
            f"SELECT * FROM attempts WHERE {PROCESSING_PATH_IS} "  # noqa: S608
            "ORDER BY id DESC LIMIT 20",
            _path_params(relative),
        ):
            if attempt.status in SETTLED:
                break
            if attempt.status is Status.INTERRUPTED and CRASHED in attempt.codes:
                count += 1
        return count

    def counts_since(self, since: str) -> Counts:
        """Final outcomes of the attempts finished since ``since`` (an ISO timestamp)."""
        if self._empty:
            return Counts()
        with self._lock:
            found = dict(
                self.connection.execute(
                    "SELECT status, count(*) FROM attempts WHERE finished_at >= ? GROUP BY status",
                    [since],
                ).fetchall()
            )
        return Counts(
            *(
                int(found.get(status, 0))
                for status in (Status.IMPORTED, Status.DUPLICATE, Status.FAILED)
            )
        )

    def latest(self, status: Status, limit: int = 1) -> list[Attempt]:
        return self.recent(limit, status)

    def count_by_sha256(self, sha256: str) -> int:
        return int(self._scalar("SELECT count(*) FROM attempts WHERE sha256 = ?", [sha256]))

    def count_by_status(self, status: Status) -> int:
        return int(self._scalar("SELECT count(*) FROM attempts WHERE status = ?", [status]))

    def _scalar(self, sql: str, params: list[Any]) -> Any:
        if self._empty:
            return 0
        with self._lock:
            return self.connection.execute(sql, params).fetchone()[0]

    def _first(self, sql: str, params: list[Any]) -> Attempt | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: Sequence[Any]) -> list[Attempt]:
        if self._empty:
            return []
        with self._lock:
            cursor = self.connection.execute(sql, list(params))
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor]
        return [decode(row) for row in rows]


class Ledger(LedgerQueries):
    """A thread-safe handle on the ledger file.

    State changes go through :meth:`begin`, :meth:`start_import`, :meth:`finish` and
    :meth:`move`, which refuse any step :mod:`lifecycle` does not list. Paths are stored
    twice: as text for people (bytes that are not UTF-8 shown as ``\\xNN``) and as the exact
    bytes (``*_raw`` columns), which are the only form ever turned back into a path.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        created = not read_only and not path.exists()
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
            if created:
                # SQLite makes its WAL's name durable, never the database file's own: a
                # ledger created and then lost in a power cut would take every row with it.
                fsync_folder(path.parent)
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
            if version == 0:
                create(self.connection)
                self.connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return
            # sqlite-utils changes the schema of an older ledger; imported only then, it
            # spares every other start the time it takes to import (0.2 s of CPU).
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
        size: int | None = None,
        sha256: str | None = None,
        uploader: str | None = None,
        notes: Sequence[str] = (),
    ) -> int:
        """Record a new attempt (status ``claimed``) and return its id."""
        if place not in FIRST_PLACES:
            raise IllegalTransition(f"an attempt cannot begin in place {place}")
        record = _encode(
            {
                "status": Status.CLAIMED,
                "place": place,
                "received_at": now(),
                "package": package,
                **_path_fields("source", source),
                **_path_fields("processing_path", processing_path),
                "size": size,
                "sha256": sha256,
                "uploader": uploader,
                "notes": list(notes) if notes else None,
            }
        )
        names = ", ".join(f"[{name}]" for name in record)
        marks = ", ".join("?" for _ in record)
        with self._lock:
            cursor = self.connection.execute(
                f"INSERT INTO attempts ({names}) VALUES ({marks})",  # noqa: S608 - known columns
                list(record.values()),
            )
        if cursor.lastrowid is None:
            raise LedgerError(f"{self.path}: the new attempt got no id")
        return cursor.lastrowid

    def start_import(self, attempt_id: int, backend: str) -> None:
        self._step(attempt_id, {"started_at": now(), "backend": backend}, status=Status.IMPORTING)

    def finish(
        self,
        attempt_id: int,
        status: Status,
        *,
        errors: Sequence[Problem] | None = None,
        notes: Sequence[str] | None = None,
        duration: float | None = None,
        model_hash: str | None = None,
        dst_rev: str | None = None,
        duplicate_of: int | None = None,
        findings: Findings | None = None,
        facts: Facts | None = None,
        finished_at: str | None = None,
    ) -> None:
        """Record the final status of an attempt; what is not given is kept as it is
        (``finished_at``: now, unless a caller with its own clock says when).

        An ``interrupted`` attempt gives up its package: whichever attempt comes next owns
        the file, so the row no longer claims a place.
        """
        if status not in FINAL:
            raise IllegalTransition(f"{status} is not a final status")
        changes: Columns = {"finished_at": finished_at or now()}
        given = {
            "errors": None if errors is None else [problem.as_dict() for problem in errors],
            "notes": None if notes is None else list(notes),
            "duration": duration,
            "model_hash": model_hash,
            "dst_rev": dst_rev,
            "duplicate_of": duplicate_of,
        }
        changes.update((name, value) for name, value in given.items() if value is not None)
        if findings is not None:
            changes.update(_findings_fields(findings))
        place = None if status is Status.INTERRUPTED else _KEEP
        with self._lock, _Transaction(self.connection):
            if facts:
                self.add_facts(attempt_id, facts)
            self._step(attempt_id, changes, status=status, place=place)

    def move(self, attempt_id: int, place: Place | None) -> None:
        """Record where the package file is now (or is about to be)."""
        self._step(attempt_id, {}, place=place)

    def move_away(self, attempt_id: int, place: Place) -> None:
        """Record that the package file is no longer where it was filed (lost, replaced)."""
        self._step(attempt_id, _path_fields("final_path", None), place=place)

    def plan(self, attempt_id: int, final_path: PurePath) -> None:
        """Record the name the package will be filed under, before it is filed."""
        self._step(attempt_id, _path_fields("final_path", final_path))

    def record_package(self, attempt_id: int, sha256: str | None, size: int) -> None:
        """The package's bytes, once hashed."""
        self._step(attempt_id, {"sha256": sha256, "size": size})

    def record_dst_rev(self, attempt_id: int, dst_rev: str) -> None:
        """What the backend will create for this attempt outside the model store."""
        self._step(attempt_id, {"dst_rev": dst_rev})

    def record_model_hash(self, attempt_id: int, model_hash: str) -> None:
        """The model file the store is about to name (before it takes the name)."""
        self._step(attempt_id, {"model_hash": model_hash})

    def add_note(self, attempt_id: int, note: str) -> None:
        with self._lock, _Transaction(self.connection):
            current = self.get(attempt_id)
            if current is None:
                raise IllegalTransition(f"attempt {attempt_id} does not exist")
            self._step(attempt_id, {"notes": [*current.notes, note]})

    def add_facts(self, attempt_id: int, facts: Facts) -> None:
        """A backend's facts about the attempt, merged into what it recorded before."""
        with self._lock, _Transaction(self.connection):
            current = self.get(attempt_id)
            if current is None:
                raise IllegalTransition(f"attempt {attempt_id} does not exist")
            self._step(attempt_id, {"backend_facts": {**current.facts, **facts}})

    def _step(
        self,
        attempt_id: int,
        changes: Columns,
        *,
        status: Status | None = None,
        place: Place | object | None = _KEEP,
    ) -> None:
        changes = dict(changes)
        with self._lock, _Transaction(self.connection):
            if status is not None or place is not _KEEP:
                current = self.connection.execute(
                    "SELECT status, place FROM attempts WHERE id = ?", [attempt_id]
                ).fetchone()
                if current is None:
                    raise IllegalTransition(f"attempt {attempt_id} does not exist")
                if status is not None:
                    check_status(current[0], status)
                    changes["status"] = status
                if place is not _KEEP:
                    check_place(current[1], place)  # type: ignore[arg-type]
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


def _path_fields(column: str, path: PurePath | None) -> Columns:
    if path is None:
        return {column: None, f"{column}_raw": None}
    return {column: as_text(str(path)), f"{column}_raw": os.fsencode(path)}


def _findings_fields(findings: Findings) -> Columns:
    return {
        "best_stage_name": findings.best_stage_name,
        "mAP": findings.mAP,
        "class_names": None if findings.class_names is None else list(findings.class_names),
        "object_type": findings.object_type,
        "package_version": findings.package_version,
        "warnings": [problem.as_dict() for problem in findings.warnings],
    }


# Rows written before paths were kept as bytes have only the text.
PROCESSING_PATH_IS = (
    "(processing_path_raw = ? OR (processing_path_raw IS NULL AND processing_path = ?))"
)


def _path_params(path: PurePath) -> list[Any]:
    return [os.fsencode(path), as_text(str(path))]


def _encode(changes: Columns) -> Columns:
    encoded = {}
    for key, value in changes.items():
        if key in JSON_COLUMNS and value is not None:
            value = json.dumps(value)
        elif isinstance(value, str):
            value = as_text(str(value))  # a StrEnum as its value
        encoded[key] = value
    return encoded


def decode(row: Mapping[str, Any]) -> Attempt:
    """An attempt from its row (of any schema version this release can read)."""
    values = {
        key: json.loads(value) if key in JSON_COLUMNS and isinstance(value, str) else value
        for key, value in row.items()
    }
    facts = values.get("backend_facts") or {
        name: values[name] for name in V3_BACKEND_COLUMNS if values.get(name) is not None
    }  # a version 3 ledger, read before the daemon migrated it
    if isinstance(facts.get("ymir_stages"), str):
        facts["ymir_stages"] = json.loads(facts["ymir_stages"])
    known = {key: value for key, value in values.items() if key in ATTEMPT_FIELDS}
    for column in ("source", "processing_path", "final_path"):
        known[column] = _path_of(values, column)
    return Attempt(
        **{
            **known,
            "status": Status(values["status"]),
            "place": Place(values["place"]) if values.get("place") else None,
            "class_names": _tuple_or_none(values.get("class_names")),
            "errors": _problems(values.get("errors")),
            "warnings": _problems(values.get("warnings")),
            "notes": tuple(str(note) for note in values.get("notes") or ()),
            "facts": MappingProxyType(facts) if facts else NO_FACTS,
        }
    )


def _path_of(values: Mapping[str, Any], column: str) -> Path | None:
    """The exact path an attempt recorded (from its bytes; older rows: from their text)."""
    raw = values.get(f"{column}_raw")
    if isinstance(raw, bytes):
        return Path(os.fsdecode(raw))
    text = values.get(column)
    return Path(text) if text else None


def _tuple_or_none(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(item) for item in value)


def _problems(value: Any) -> tuple[Problem, ...]:
    return tuple(Problem.recorded(item) for item in value or () if isinstance(item, dict))
