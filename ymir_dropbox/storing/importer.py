"""The import of one package file: its steps, in order, each recorded before it is taken.

Used by ``ymir-dropbox import`` (through :func:`import_file`) and by the daemon's workers. It
never moves the package file; the caller owns the folders. The transaction is the list
:data:`STEPS`: each step takes the attempt's :class:`ImportContext` and either ends the
import with an :class:`Outcome` or lets the next step run (as paperless-ngx's consumer runs
its plugins, one visible list).
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.faults import NO_FAULTS, FaultPlan
from ymir_dropbox.core.progress import Progress
from ymir_dropbox.core.settings import Config
from ymir_dropbox.reading.archive import (
    FileIdentity,
    PackageUnreadable,
    file_sha256,
    open_package,
)
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.reading.validation import ValidationReport, validate_file
from ymir_dropbox.storing.attempts import Attempt, Facts, Findings
from ymir_dropbox.storing.backends import (
    Backend,
    ImportFailed,
    ImportResult,
    PassingFailure,
    PreparedPackage,
    make_backend,
)
from ymir_dropbox.storing.ledger import DuplicateImport, Ledger
from ymir_dropbox.storing.lifecycle import IN_FLIGHT, Place, Status
from ymir_dropbox.storing.lock import import_lock
from ymir_dropbox.storing.store import PackageChanged, StreamedStore

log = structlog.get_logger(__name__)

TRUNCATED = "container.truncated"


class Incomplete(Exception):
    """The package ends too early and its writer may not be done with it: no verdict yet."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended."""

    attempt_id: int
    status: Status
    sha256: str | None
    duration: float
    report: ValidationReport | None = None
    result: ImportResult | None = None
    errors: tuple[Problem, ...] = field(default=())
    duplicate_of: int | None = None


@dataclass(slots=True)
class ImportContext:
    """One attempt's import as the steps see it: what is known so far, and the means to
    record it."""

    path: Path
    attempt_id: int
    ledger: Ledger
    backend: Backend
    config: Config
    progress: Progress
    faults: FaultPlan
    stack: ExitStack
    complete: Callable[[], bool]
    started: float = field(default_factory=time.monotonic)
    source: io.BufferedReader | None = None
    # The file as it was opened, before any read: whatever a later check compares with.
    identity: FileIdentity | None = None
    size: int = 0
    sha256: str | None = None
    report: ValidationReport | None = None
    streamed: StreamedStore | None = None
    log: structlog.typing.FilteringBoundLogger = field(default=log)

    def position(self) -> int:
        """How far the import has read the package (its progress)."""
        return os.lseek(self.opened.fileno(), 0, os.SEEK_CUR) if self.source else 0

    @property
    def opened(self) -> io.BufferedReader:
        if self.source is None:
            raise DropboxError(f"{self.path}: the package is not open")
        return self.source

    def finish(
        self,
        status: Status,
        *,
        errors: Sequence[Problem] = (),
        notes: Sequence[str] | None = None,
        model_hash: str | None = None,
        dst_rev: str | None = None,
        duplicate_of: int | None = None,
        findings: Findings | None = None,
        facts: Facts | None = None,
        report: ValidationReport | None = None,
        result: ImportResult | None = None,
    ) -> Outcome:
        """Record the final status; return the outcome the caller gets."""
        duration = round(time.monotonic() - self.started, 3)
        self.ledger.finish(
            self.attempt_id,
            status,
            errors=errors,
            notes=notes,
            duration=duration,
            model_hash=model_hash,
            dst_rev=dst_rev,
            duplicate_of=duplicate_of,
            findings=findings,
            facts=facts,
        )
        return Outcome(
            self.attempt_id,
            status,
            self.sha256,
            duration,
            report,
            result,
            tuple(errors),
            duplicate_of,
        )


Step = Callable[[ImportContext], Outcome | None]


def open_file(context: ImportContext) -> Outcome | None:
    """Open the package once, without following a link (unless the claim holds it open
    already); every later step reads this file."""
    if context.source is None:
        try:
            context.source = context.stack.enter_context(open_package(context.path))
        except PackageUnreadable as error:
            problem = Problem("package.not_regular", "", str(error))
            return context.finish(Status.FAILED, errors=[problem])
    context.identity = FileIdentity.of(context.opened.fileno())
    context.size = context.identity.size
    return None


def recognize_redelivery(context: ImportContext) -> Outcome | None:
    """A file the size of an import may be a re-delivery: one hashing pass tells, before any
    validation."""
    if not context.ledger.any_imported_of_size(context.size):
        return None
    context.progress.step(context.attempt_id, "hash", context.position)
    context.sha256 = file_sha256(context.opened)
    _unchanged_since_opened(context)
    first = context.ledger.imported_by_sha256(context.sha256)
    if first is None:
        return None
    context.ledger.record_package(context.attempt_id, context.sha256, context.size)
    return _duplicate(context, first, _findings_of(first))


def _unchanged_since_opened(context: ImportContext) -> None:
    """The hash just taken is the file's: no write since it was opened (its ctime too)."""
    if context.identity is not None and not context.identity.unchanged(
        context.opened.fileno(), by_ctime=True
    ):
        raise PackageChanged("the package was written to while it was hashed")


def validate(context: ImportContext) -> Outcome | None:
    """One pass: every check, the sha256 of the file (in a second thread) and, when the
    backend asks, the stored archive, kept only if the package is valid."""
    context.progress.step(context.attempt_id, "validate", context.position)
    context.streamed = context.stack.enter_context(context.backend.streamed(context.size))
    report = validate_file(
        context.path.name,
        context.opened,
        context.config.limits,
        sha256=context.sha256,
        sink=context.streamed,
    )
    if {problem.code for problem in report.errors} == {TRUNCATED} and not context.complete():
        raise Incomplete(f"{context.path.name}: {report.errors[0].message}")
    # Later checks compare with the file as it was opened: a sha256 taken before this pass
    # (a re-delivery's) is the file's only if nothing was written since then.
    report = replace(report, identity=context.identity)
    context.report, context.sha256 = report, report.sha256
    context.ledger.record_package(context.attempt_id, report.sha256, report.package_bytes)
    context.faults.reach("validated", context.path.name)
    context.log = context.log.bind(sha256=report.sha256, size=report.package_bytes)
    context.log.info(
        "package_validated",
        step="validate",
        ok=report.ok,
        errors=len(report.errors),
        warnings=len(report.warnings),
    )
    if report.ok and report.sha256 is not None:
        return None
    return context.finish(
        Status.FAILED, errors=report.errors, findings=_findings(report), report=report
    )


def deduplicate(context: ImportContext) -> Outcome | None:
    """The same bytes imported before: a duplicate, never a second import. From here on, two
    copies of one package in flight at once go one after the other."""
    sha256 = context.sha256
    assert sha256 is not None  # validate() ended every import without one
    context.stack.enter_context(_one_at_a_time(sha256))
    first = context.ledger.imported_by_sha256(sha256)
    if first is None:
        return None
    return _duplicate(context, first, _findings(context.report), context.report)


def store(context: ImportContext) -> Outcome | None:
    """Hand the validated package to the backend; its verdict is recorded, with its facts."""
    report, sha256 = context.report, context.sha256
    assert report is not None and sha256 is not None
    attempt_id, ledger = context.attempt_id, context.ledger
    reference = context.backend.reference(attempt_id)
    if reference is not None:
        ledger.record_dst_rev(attempt_id, reference)
    context.progress.step(attempt_id, "store", context.position)
    package = PreparedPackage(
        context.path,
        sha256,
        attempt_id,
        report,
        context.opened,
        ledger=ledger,
        progress=lambda step, detail="": context.progress.step(attempt_id, step, None, detail),
        earlier=tuple(ledger.resumable_by_sha256(sha256)),
        streamed=context.streamed,
    )
    try:
        result = context.backend.import_package(package)
    except ImportFailed as failure:
        return context.finish(
            Status.FAILED,
            errors=failure.problems,
            notes=failure.notes,
            dst_rev=failure.dst_rev,
            findings=_with_warnings(_findings(report), failure.warnings),
            report=report,
        )
    context.faults.reach("stored", context.path.name)
    return record_import(context, result)


def record_import(context: ImportContext, result: ImportResult) -> Outcome:
    report = context.report
    findings = _with_warnings(_findings(report), result.warnings)
    if result.mAP is not None:
        findings = replace(findings, mAP=result.mAP)
    try:
        outcome = context.finish(
            Status.IMPORTED,
            model_hash=result.model_hash,
            dst_rev=result.dst_rev,
            notes=result.notes,
            errors=(),
            findings=findings,
            facts=result.facts,
            report=report,
            result=result,
        )
    except DuplicateImport:
        # Another process (a CLI import beside the daemon) recorded it first.
        assert context.sha256 is not None
        first = context.ledger.imported_by_sha256(context.sha256)
        duplicate_of = first.id if first else None
        return context.finish(
            Status.DUPLICATE,
            duplicate_of=duplicate_of,
            model_hash=result.model_hash,
            report=report,
        )
    context.log.info(
        "package_imported",
        step="store",
        model_hash=result.model_hash,
        best_stage_name=report.best_stage_name if report else None,
        mAP=report.best_mAP if report else None,
        duration=outcome.duration,
    )
    return outcome


# The transaction, in order. A step that returns an Outcome ends it.
STEPS: tuple[Step, ...] = (open_file, recognize_redelivery, validate, deduplicate, store)


class Importer:
    """Runs :data:`STEPS` for one attempt, and records whatever stops them."""

    def __init__(
        self, config: Config, ledger: Ledger, backend: Backend, faults: FaultPlan = NO_FAULTS
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.backend = backend
        self.faults = faults

    def run(
        self,
        path: Path,
        attempt_id: int,
        progress: Progress | None = None,
        complete: Callable[[], bool] = lambda: True,
        held: io.BufferedReader | None = None,
    ) -> Outcome:
        """The transaction of one import, for the daemon's workers and :func:`import_file`.

        ``held``: the package file, already open (the claim's; its name may hold another
        file by now), left open for the caller to close; else ``path`` is opened.

        Whatever stops it is recorded before it propagates: ``OSError`` (the machine's fault:
        the file cannot be read, the store cannot be written) as ``import.io_error``, a
        backend that cannot be reached (:class:`PassingFailure`) as
        ``import.backend_unavailable``, anything else (a bug) as ``import.crashed``; the
        attempt is then ``interrupted`` and the package is the next attempt's.

        ``complete`` says whether the file's writer is surely done with it: if not, a gzip
        stream that ends too early is no verdict, and :class:`Incomplete` is raised instead.
        """
        try:
            return self._run(path, attempt_id, progress or Progress(), complete, held)
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

    def _run(
        self,
        path: Path,
        attempt_id: int,
        progress: Progress,
        complete: Callable[[], bool],
        held: io.BufferedReader | None,
    ) -> Outcome:
        self.ledger.start_import(attempt_id, self.backend.name)
        with ExitStack() as stack:
            context = ImportContext(
                path,
                attempt_id,
                self.ledger,
                self.backend,
                self.config,
                progress,
                self.faults,
                stack,
                complete,
                source=held,  # the caller's to close; one opened here, the stack's
                log=log.bind(attempt=attempt_id, package=path.name),
            )
            for step in STEPS:
                outcome = step(context)
                if outcome is not None:
                    return outcome
        raise AssertionError("the last step always ends the import")  # pragma: no cover

    def _interrupt(self, attempt_id: int, problem: Problem | None) -> None:
        attempt = self.ledger.get(attempt_id)
        if attempt is not None and attempt.status in IN_FLIGHT:
            errors = [problem] if problem else []
            notes = [] if problem else ["incomplete: its writer may not be done; it waits"]
            self.ledger.finish(attempt_id, Status.INTERRUPTED, errors=errors, notes=notes)


def import_file(config: Config, path: Path, faults: FaultPlan = NO_FAULTS) -> Outcome:
    """``ymir-dropbox import``: the whole transaction for one file, which is never moved.

    Raises :class:`~ymir_dropbox.core.errors.UsageError` for a path that is not a file (no
    attempt is recorded) and :class:`DropboxError` when the file cannot be read."""
    from ymir_dropbox.core.errors import UsageError

    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: a folder, not a package file (`pack` builds one from it)")
    config.ensure_folders()
    backend = make_backend(config)
    backend.check()
    ledger = Ledger(config.paths.ledger)
    try:
        attempt_id = ledger.begin(package=path.name, source=path.absolute(), place=Place.NONE)
        try:
            with import_lock(config.paths.work, attempt_id):
                return Importer(config, ledger, backend, faults).run(path, attempt_id)
        except OSError as error:
            raise DropboxError(f"{path}: {error.strerror or error}") from None
    finally:
        ledger.close()


_changed = threading.Condition()
_busy: set[str] = set()


@contextmanager
def _one_at_a_time(sha256: str) -> Iterator[None]:
    """Two copies of one package in flight in this process are imported one after the other."""
    with _changed:
        _changed.wait_for(lambda: sha256 not in _busy)
        _busy.add(sha256)
    try:
        yield
    finally:
        with _changed:
            _busy.discard(sha256)
            _changed.notify_all()


def _duplicate(
    context: ImportContext,
    first: Attempt,
    findings: Findings,
    report: ValidationReport | None = None,
) -> Outcome:
    """Record the attempt as a duplicate of ``first``, the import of the same sha256."""
    outcome = context.finish(
        Status.DUPLICATE,
        duplicate_of=first.id,
        model_hash=first.model_hash,
        errors=(),
        findings=findings,
        report=report,
    )
    context.log.info("package_duplicate", step="dedup", first_attempt=first.id)
    return outcome


def _findings_of(first: Attempt) -> Findings:
    """A duplicate recognized before validation is described by the first import."""
    return Findings(
        first.best_stage_name,
        first.mAP,
        first.class_names,
        first.object_type,
        first.package_version,
    )


def _findings(report: ValidationReport | None) -> Findings:
    """What the ledger keeps of a report."""
    if report is None:
        return Findings()
    return Findings(
        report.best_stage_name,
        report.best_mAP,
        report.class_names,
        report.object_type,
        report.declared_version,
        report.warnings,
    )


def _with_warnings(findings: Findings, warnings: tuple[Problem, ...]) -> Findings:
    """Validation's warnings, then the backend's: one list in the ledger."""
    if not warnings:
        return findings
    return replace(findings, warnings=(*findings.warnings, *warnings))


def describe_os_error(error: OSError) -> str:
    """``No space left on device: /srv/models/x``: the reason, and the file when known."""
    filename = getattr(error, "filename", "") or ""
    return f"{error.strerror or error}: {filename}".rstrip(": ")
