"""The import of one package file: hash, dedup, validate, store through a backend, record.

Used by ``ymir-dropbox import`` and by the daemon's workers. It never moves the package file;
the caller owns the folders. Each step is written to the ledger before it is taken.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from ymir_dropbox.config import Config
from ymir_dropbox.core.faults import crash_point
from ymir_dropbox.core.progress import Progress
from ymir_dropbox.reading.archive import PackageUnreadable, file_sha256, open_package
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.reading.validation import ValidationReport, validate_file
from ymir_dropbox.storing.backends import (
    Backend,
    ImportFailed,
    ImportResult,
    PassingFailure,
    PreparedPackage,
)
from ymir_dropbox.storing.ledger import DuplicateImport, Ledger
from ymir_dropbox.storing.lifecycle import IN_FLIGHT, Status
from ymir_dropbox.storing.store import StreamedStore

log = structlog.get_logger(__name__)


TRUNCATED = "container.truncated"


class Incomplete(Exception):
    """The package ends too early and its writer may not be done with it: no verdict yet."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended."""

    attempt_id: int
    status: str
    sha256: str | None
    duration: float
    report: ValidationReport | None = None
    result: ImportResult | None = None
    errors: tuple[Problem, ...] = field(default=())
    duplicate_of: int | None = None


class Importer:
    def __init__(self, config: Config, ledger: Ledger, backend: Backend) -> None:
        self.config = config
        self.ledger = ledger
        self.backend = backend
        self._changed = threading.Condition()
        self._busy: set[str] = set()

    @contextmanager
    def _one_at_a_time(self, sha256: str) -> Iterator[None]:
        """Two copies of one package in flight at once are imported one after the other."""
        with self._changed:
            self._changed.wait_for(lambda: sha256 not in self._busy)
            self._busy.add(sha256)
        try:
            yield
        finally:
            with self._changed:
                self._busy.discard(sha256)
                self._changed.notify_all()

    def run(
        self,
        path: Path,
        attempt_id: int,
        progress: Progress | None = None,
        complete: Callable[[], bool] = lambda: True,
    ) -> Outcome:
        """The transaction of one import, for the daemon's workers and ``ymir-dropbox import``.

        Whatever stops it is recorded before it propagates: ``OSError`` (the machine's fault:
        the file cannot be read, the store cannot be written) as ``import.io_error``, a
        backend that cannot be reached (:class:`PassingFailure`) as
        ``import.backend_unavailable``, anything else (a bug) as ``import.crashed``; the
        attempt is then ``interrupted`` and the package is the next attempt's.

        ``complete`` says whether the file's writer is surely done with it: if not, a gzip
        stream that ends too early is no verdict, and :class:`Incomplete` is raised instead.
        """
        try:
            return self._run(path, attempt_id, progress or Progress(), complete)
        except Incomplete:
            self._interrupt(attempt_id, None)
            raise
        except OSError as error:
            reason = describe_os_error(error)
            self._interrupt(attempt_id, Problem("import.io_error", "", reason))
            log.error("import_io_error", attempt=attempt_id, package=path.name, error=reason)
            raise
        except PassingFailure as error:
            self._interrupt(attempt_id, Problem("import.backend_unavailable", "", str(error)))
            log.warning("import_waits", attempt=attempt_id, package=path.name, reason=str(error))
            raise
        except Exception as error:
            log.exception("import_crashed", attempt=attempt_id, package=path.name)
            self._interrupt(attempt_id, Problem("import.crashed", "", repr(error)))
            raise

    def _interrupt(self, attempt_id: int, problem: Problem | None) -> None:
        row = self.ledger.get(attempt_id)
        if row is not None and row["status"] in IN_FLIGHT:
            errors = [problem.as_dict()] if problem else []
            notes = [] if problem else ["incomplete: its writer may not be done; it waits"]
            self.ledger.finish(attempt_id, Status.INTERRUPTED, errors=errors, notes=notes)

    def _run(
        self, path: Path, attempt_id: int, progress: Progress, complete: Callable[[], bool]
    ) -> Outcome:
        started = time.monotonic()
        bound = log.bind(attempt=attempt_id, package=path.name)
        self.ledger.start_import(attempt_id, self.backend.name)

        def finish(status: str, **fields: object) -> float:
            duration = round(time.monotonic() - started, 3)
            self.ledger.finish(attempt_id, status, duration=duration, **fields)
            return duration

        with ExitStack() as stack:
            try:
                source = stack.enter_context(open_package(path))
            except PackageUnreadable as error:
                problem = Problem("package.not_regular", "", str(error))
                duration = finish("failed", errors=[problem.as_dict()])
                return Outcome(attempt_id, "failed", None, duration, errors=(problem,))
            fd = source.fileno()

            def position() -> int:
                return os.lseek(fd, 0, os.SEEK_CUR)

            size = os.fstat(fd).st_size
            known: str | None = None
            if self.ledger.count(status=Status.IMPORTED, size=size):
                # It may be a re-delivery: one hashing pass tells, before any validation.
                progress.step(attempt_id, "hash", position)
                known = file_sha256(source)
                first = self.ledger.imported_by_sha256(known)
                if first is not None:
                    self.ledger.record(attempt_id, sha256=known, size=size)
                    described = _described_by(first)
                    return _duplicate(attempt_id, known, first, described, finish, bound)
            # One pass: every check, the sha256 of the file (in a second thread) and, with the
            # embedded backend, the stored archive, kept only if the package is valid. The file
            # stays open: a second pass, if the store needs one, reads the very bytes validated.
            progress.step(attempt_id, "validate", position)
            streamed = stack.enter_context(self.backend.streamed(size))
            report = validate_file(
                path.name, source, self.config.limits, sha256=known, sink=streamed
            )
            if {problem.code for problem in report.errors} == {TRUNCATED} and not complete():
                raise Incomplete(f"{path.name}: {report.errors[0].message}")
            return self._judged(
                path, attempt_id, report, source, streamed, progress, position, finish, bound
            )

    def _judged(
        self,
        path: Path,
        attempt_id: int,
        report: ValidationReport,
        source: BinaryIO,
        streamed: StreamedStore | None,
        progress: Progress,
        position: Callable[[], int],
        finish: Callable[..., float],
        bound: Any,
    ) -> Outcome:
        sha256 = report.sha256
        self.ledger.record(attempt_id, sha256=sha256, size=report.package_bytes)
        crash_point("validated", path.name)
        bound = bound.bind(sha256=sha256, size=report.package_bytes)
        bound.info(
            "package_validated",
            step="validate",
            ok=report.ok,
            errors=len(report.errors),
            warnings=len(report.warnings),
        )
        description = _describe(report)
        if not report.ok or sha256 is None:
            duration = finish("failed", errors=_dicts(report.errors), **description)
            return Outcome(attempt_id, "failed", sha256, duration, report, errors=report.errors)

        with self._one_at_a_time(sha256):
            first = self.ledger.imported_by_sha256(sha256)
            if first is not None:
                return _duplicate(attempt_id, sha256, first, description, finish, bound, report)
            reference = self.backend.reference(attempt_id)
            if reference is not None:
                self.ledger.record(attempt_id, dst_rev=reference)
            progress.step(attempt_id, "store", position)

            def record(**fields: object) -> None:
                self.ledger.record(attempt_id, **fields)

            def report_progress(step: str, detail: str = "") -> None:
                progress.step(attempt_id, step, None, detail)

            package = PreparedPackage(
                path,
                sha256,
                attempt_id,
                report,
                source,
                record=record,
                progress=report_progress,
                earlier=tuple(self.ledger.unfinished_by_sha256(sha256)),
                streamed=streamed,
            )
            try:
                result = self.backend.import_package(package)
            except ImportFailed as failure:
                duration = finish(
                    "failed",
                    errors=_dicts(failure.problems),
                    notes=list(failure.notes),
                    dst_rev=failure.dst_rev,
                    **description,
                )
                errors = tuple(failure.problems)
                return Outcome(attempt_id, "failed", sha256, duration, report, errors=errors)
            crash_point("stored", path.name)
            try:
                duration = finish(
                    "imported",
                    model_hash=result.model_hash,
                    dst_rev=result.dst_rev,
                    notes=list(result.notes),
                    errors=[],
                    **{**description, **result.fields},
                )
            except DuplicateImport:
                # Another process (a CLI import beside the daemon) recorded it first.
                first = self.ledger.imported_by_sha256(sha256)
                duplicate_of = first["id"] if first else None
                duration = finish(
                    "duplicate", duplicate_of=duplicate_of, model_hash=result.model_hash
                )
                return Outcome(
                    attempt_id, "duplicate", sha256, duration, report, duplicate_of=duplicate_of
                )
        bound.info(
            "package_imported",
            step="store",
            model_hash=result.model_hash,
            best_stage_name=description["best_stage_name"],
            mAP=description["mAP"],
            duration=duration,
        )
        return Outcome(attempt_id, "imported", sha256, duration, report, result)


def _duplicate(
    attempt_id: int,
    sha256: str,
    first: dict[str, Any],
    described: dict[str, object],
    finish: Callable[..., float],
    bound: Any,
    report: ValidationReport | None = None,
) -> Outcome:
    """Record the attempt as a duplicate of ``first``, the import of the same sha256."""
    duration = finish(
        "duplicate",
        duplicate_of=first["id"],
        model_hash=first["model_hash"],
        errors=[],
        **described,
    )
    bound.info("package_duplicate", step="dedup", first_attempt=first["id"])
    return Outcome(attempt_id, "duplicate", sha256, duration, report, duplicate_of=first["id"])


def _described_by(first: dict[str, Any]) -> dict[str, object]:
    """A duplicate recognized before validation is described by the first import."""
    return {
        key: first.get(key)
        for key in ("best_stage_name", "mAP", "class_names", "object_type", "package_version")
    }


def _describe(report: ValidationReport) -> dict[str, object]:
    """The ledger columns a report fills."""
    fields: dict[str, object] = {
        "warnings": _dicts(report.warnings),
        "package_version": report.declared_version,
    }
    if report.normalized is not None and report.best_stage is not None:
        fields.update(
            best_stage_name=report.normalized["best_stage_name"],
            mAP=report.best_stage["mAP"],
            class_names=report.normalized["executor_config"]["class_names"],
            object_type=report.normalized["object_type"],
        )
    else:
        fields.update(best_stage_name=None, mAP=None)
    return fields


def _dicts(problems: tuple[Problem, ...] | list[Problem]) -> list[dict[str, object]]:
    return [problem.as_dict() for problem in problems]


def describe_os_error(error: OSError) -> str:
    """``No space left on device: /srv/models/x``: the reason, and the file when known."""
    filename = getattr(error, "filename", "") or ""
    return f"{error.strerror or error}: {filename}".rstrip(": ")
