"""What a worker thread does with one package: claim it, import it, file it.

Each job returns a :class:`JobResult`; the scheduler asks the policy what follows. A job
never decides about retries itself, and never leaves a package between folders.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import PurePosixPath

import structlog

from ymir_dropbox.config import Config
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.progress import Progress
from ymir_dropbox.daemon.claiming import Claimed, claim, owner_name
from ymir_dropbox.daemon.filing import Filing
from ymir_dropbox.daemon.machine import JobEnd, JobResult
from ymir_dropbox.daemon.policy import MAX_CRASHES, crash_limit_reached, incomplete_is_verdict
from ymir_dropbox.daemon.readiness import Observation, Ready
from ymir_dropbox.operations.metrics import Metrics
from ymir_dropbox.reading.archive import file_sha256, open_package
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.backends import PassingFailure
from ymir_dropbox.storing.folders import move
from ymir_dropbox.storing.importer import Importer, Incomplete, describe_os_error
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import SETTLED, Place, Status

log = structlog.get_logger(__name__)


class Worker:
    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        importer: Importer,
        filing: Filing,
        metrics: Metrics,
        progress: Progress | None = None,
        max_crashes: int = MAX_CRASHES,
    ) -> None:
        self.config = config
        self.paths = config.paths
        self.ledger = ledger
        self.importer = importer
        self.filing = filing
        self.metrics = metrics
        self.progress = progress or Progress()
        self.max_crashes = max_crashes

    def take(self, ready: Ready) -> JobResult:
        """Claim a ready inbox file and import it."""
        claimed = claim(ready, self.config, self.ledger, self.importer.faults)
        if isinstance(claimed, JobResult):
            return claimed
        return self._import(claimed)

    def redo(self, relative: PurePosixPath) -> JobResult:
        """Import a package found in processing/ again (after a crash, or a deferral)."""
        path = self.paths.processing / relative
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return JobResult(JobEnd.GONE, relative)
        settled = self.ledger.settled_in_processing(relative)
        if settled is not None:  # imported or failed already; only the filing went wrong
            return self._file(settled.id, relative, settled.status)
        self._give_up_earlier_attempts(relative)
        crashes = self.ledger.crashes_in_a_row(relative)
        if crash_limit_reached(crashes, self.max_crashes):
            return self.fail_crashed(relative, f"{crashes} crashes in a row")
        attempt_id = self.ledger.begin(
            package=relative.name,
            source=relative,
            place=Place.PROCESSING,
            processing_path=relative,
            size=info.st_size,
            uploader=owner_name(info.st_uid),
            notes=[f"redo of a claimed package (crashes so far: {crashes})"],
        )
        return self._import(Claimed(attempt_id, relative, Observation.of(info)))

    def fail_crashed(self, relative: PurePosixPath, reason: str) -> JobResult:
        """A claimed package whose import keeps crashing: failed/, with the error."""
        path = self.paths.processing / relative
        try:
            with open_package(path) as stream:
                sha256 = file_sha256(stream)
        except FileNotFoundError:
            return JobResult(JobEnd.GONE, relative)
        attempt_id = self.ledger.begin(
            package=relative.name,
            source=relative,
            place=Place.PROCESSING,
            processing_path=relative,
            sha256=sha256,
        )
        message = f"the import failed {self.max_crashes} times with an unexpected error: {reason}"
        problem = Problem("import.crashed", "", message)
        self.ledger.finish(attempt_id, Status.FAILED, errors=[problem])
        return self._file(attempt_id, relative, Status.FAILED)

    def _give_up_earlier_attempts(self, relative: PurePosixPath) -> None:
        """An attempt whose ending could not be written (ledger locked) gives up the file."""
        for attempt in self.ledger.in_flight():
            if attempt.relative == relative and attempt.place is Place.PROCESSING:
                self.ledger.finish(attempt.id, Status.INTERRUPTED, notes=["superseded by a redo"])

    def _import(self, claimed: Claimed) -> JobResult:
        with contextlib.closing(claimed.held) if claimed.held else contextlib.nullcontext():
            return self._import_held(claimed)

    def _import_held(self, claimed: Claimed) -> JobResult:
        relative, attempt_id = claimed.relative, claimed.attempt_id
        path = self.paths.processing / relative
        held = claimed.held
        info = os.fstat(held.fileno()) if held is not None else os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            problem = Problem(
                "package.not_regular",
                "",
                f"{relative} is not a regular file (replaced by a link or special file)",
            )
            self.ledger.finish(attempt_id, Status.FAILED, errors=[problem])
            return self._file(attempt_id, relative, Status.FAILED)
        if info.st_nlink > 1:
            return self._fail_hard_linked(claimed, info.st_nlink)
        if Observation.of(info) != claimed.observation:
            # Written again between the readiness check and the claim: judge it later, whole.
            self.ledger.finish(
                attempt_id, Status.INTERRUPTED, notes=["changed while it was claimed"]
            )
            return JobResult(JobEnd.DEFERRED, relative, reason="changed while it was claimed")
        self.progress.begin(attempt_id, str(relative), info.st_size)
        try:
            outcome = self.importer.run(
                path, attempt_id, self.progress, self._complete(claimed), held
            )
        except Incomplete as incomplete:
            return self._put_back(relative, str(incomplete))
        except OSError as error:
            return JobResult(JobEnd.DEFERRED, relative, reason=describe_os_error(error))
        except PassingFailure as error:
            return JobResult(JobEnd.DEFERRED, relative, reason=str(error))
        except Exception as error:
            crashes = self.ledger.crashes_in_a_row(relative)
            return JobResult(JobEnd.CRASHED, relative, reason=repr(error), crashes=crashes)
        finally:
            self.progress.end(attempt_id)
        if outcome.status is Status.FAILED:
            log.warning(
                "package_failed",
                attempt=attempt_id,
                path=str(relative),
                sha256=outcome.sha256,
                problems=[problem.as_dict() for problem in outcome.errors],
            )
        result = self._file(attempt_id, relative, outcome.status, claimed.observation)
        if result.end is JobEnd.SETTLED:
            filed = self.ledger.get(attempt_id)
            size = filed.size if filed is not None and filed.size else 0
            self.metrics.record(outcome.status, outcome.duration, size, time.time())
        return result

    def _fail_hard_linked(self, claimed: Claimed, links: int) -> JobResult:
        """Another name (a hard link left in the inbox, or anywhere on this filesystem) would
        let its owner rewrite the bytes after they are judged. Its sha256 is recorded, so
        that ``push --wait`` learns the verdict."""
        relative, attempt_id = claimed.relative, claimed.attempt_id
        path = self.paths.processing / relative
        opened = contextlib.nullcontext(claimed.held) if claimed.held else open_package(path)
        try:
            with opened as stream:
                size = os.fstat(stream.fileno()).st_size
                if size <= self.config.limits.max_package_bytes:  # else not read at all
                    digest = file_sha256(stream, size)
                    self.ledger.record_package(attempt_id, digest, size)
        except OSError as error:
            reason = describe_os_error(error)
            self.ledger.finish(attempt_id, Status.INTERRUPTED, notes=[f"not read: {reason}"])
            return JobResult(JobEnd.DEFERRED, relative, reason=reason)
        problem = Problem(
            "package.hard_linked",
            "",
            f"{relative} has {links} names (hard links): through another one it could "
            "change after it is checked; upload a copy with one name (cp, rsync)",
        )
        self.ledger.finish(attempt_id, Status.FAILED, errors=[problem])
        return self._file(attempt_id, relative, Status.FAILED)

    def _complete(self, claimed: Claimed) -> Callable[[], bool]:
        """Whether an incomplete gzip stream in this file is a verdict yet (the policy's
        :func:`incomplete_is_verdict`, asked with the file's quiet time when the pass ends)."""

        def complete() -> bool:
            path = self.paths.processing / claimed.relative
            quiet = time.time() - os.lstat(path).st_mtime
            return incomplete_is_verdict(quiet, self.config.watch.settle_seconds)

        return complete

    def _put_back(self, relative: PurePosixPath, reason: str) -> JobResult:
        """An incomplete package goes back to the inbox, where readiness waits for its writer
        (the writer still writes into the same file: a rename keeps it)."""
        try:
            move(self.paths.processing, relative, self.paths.inbox, relative)
        except OSError as error:
            return JobResult(JobEnd.DEFERRED, relative, reason=f"{reason}; {error}")
        log.info("package_put_back", path=str(relative), reason=reason)
        return JobResult(JobEnd.NOT_READY, relative, reason=reason)

    def _file(
        self,
        attempt_id: int,
        relative: PurePosixPath,
        status: Status,
        imported: Observation | None = None,
    ) -> JobResult:
        """File a package whose verdict is recorded; a failure to file is the machine's, and
        the filing is retried with the verdict kept."""
        assert status in SETTLED, status
        try:
            filed = self.filing.file(attempt_id, relative, status, imported)
        except (OSError, DropboxError) as error:
            reason = describe_os_error(error) if isinstance(error, OSError) else str(error)
            log.error("filing_failed", attempt=attempt_id, path=str(relative), error=reason)
            return JobResult(JobEnd.DEFERRED, relative, reason=f"filing failed: {reason}")
        if not filed:
            return JobResult(JobEnd.DEFERRED, relative, reason="replaced while imported")
        return JobResult(JobEnd.SETTLED, relative, str(status))
