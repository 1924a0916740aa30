"""What the daemon's loop does besides importing: publish its state, log the progress of long
imports, apply the retention policy, and judge again a failure whose file changed.

Each task runs on the loop's thread every so often (:meth:`Scheduler.every`); a task that
raises is logged and runs again next time.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import structlog

from ymir_dropbox.config import Config
from ymir_dropbox.core.progress import Progress
from ymir_dropbox.daemon.policy import rejudge_failure
from ymir_dropbox.daemon.scheduler import Scheduler
from ymir_dropbox.operations.retention import apply_retention
from ymir_dropbox.operations.retry import retry_failed
from ymir_dropbox.operations.status import publish_state as publish
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Status

log = structlog.get_logger(__name__)

PUBLISH_EVERY_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 5.0
PROGRESS_AFTER_SECONDS = 3.0
RETENTION_EVERY_SECONDS = 3600.0
RECENT_FAILURES = 50  # how many of the latest failures are watched for a change of their file


def housekeeping(config: Config, scheduler: Scheduler, ledger: Ledger, progress: Progress) -> None:
    """Give the loop its tasks: publish the daemon's state, log long imports' progress, apply
    the retention policy, judge again a failure whose file changed."""

    def publish_state() -> None:
        publish(config, {"pid": os.getpid(), "in_flight": progress.documents()})

    def log_progress() -> None:
        for job in progress.snapshot():
            if job.elapsed_s >= PROGRESS_AFTER_SECONDS:
                rate = job.bytes_done / job.elapsed_s if job.elapsed_s else 0.0
                log.info(
                    "import_progress",
                    attempt=job.attempt,
                    path=job.package,
                    step=job.step,
                    bytes_done=job.bytes_done,
                    bytes_total=job.bytes_total,
                    rate=round(rate),
                    elapsed=job.elapsed_s,
                )

    def apply_retention_policy() -> None:
        kept = config.retention
        if kept.done_days or kept.failed_days:
            now = datetime.now(UTC)
            apply_retention(config.paths, ledger, now, kept.done_days, kept.failed_days)

    def rejudge_changed_failures() -> None:
        """The policy's :func:`rejudge_failure`, for the latest failures."""
        for attempt in ledger.latest(Status.FAILED, RECENT_FAILURES):
            size = _size_of(attempt.final_path)
            if rejudge_failure(attempt, size):
                log.warning(
                    "failed_package_changed",
                    attempt=attempt.id,
                    path=str(attempt.final_path),
                    judged_size=attempt.size,
                    size=size,
                )
                retry_failed(config, ledger, [attempt.id], force=True)

    scheduler.every(PUBLISH_EVERY_SECONDS, publish_state)
    scheduler.every(config.watch.rescan_interval, rejudge_changed_failures)
    scheduler.every(PROGRESS_EVERY_SECONDS, log_progress)
    scheduler.every(RETENTION_EVERY_SECONDS, apply_retention_policy)


def _size_of(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return os.lstat(path).st_size
    except OSError:
        return None
