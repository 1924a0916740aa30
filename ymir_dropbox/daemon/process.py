"""The process: the lock, the signals, systemd's notify protocol, and re-execution.

SIGTERM and SIGINT stop: no new work, running imports get ``shutdown_timeout`` seconds, exit 0.
SIGHUP reloads the systemd way: ``RELOADING=1``, the same drain, then the process re-executes
itself (same PID, lock kept: its descriptor is inherited) and the new one says ``READY=1``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import UTC, datetime
from types import FrameType

import structlog

from ymir_dropbox.config import Config
from ymir_dropbox.core.faults import NO_FAULTS, FaultPlan
from ymir_dropbox.core.progress import Progress
from ymir_dropbox.daemon.filing import Filing
from ymir_dropbox.daemon.inbox import InboxView
from ymir_dropbox.daemon.policy import RetryPolicy
from ymir_dropbox.daemon.readiness import ReadinessTracker
from ymir_dropbox.daemon.recovery import recover
from ymir_dropbox.daemon.scheduler import Scheduler
from ymir_dropbox.daemon.sdnotify import notify
from ymir_dropbox.daemon.worker import Worker
from ymir_dropbox.operations.metrics import Metrics
from ymir_dropbox.operations.notifications import Notifier
from ymir_dropbox.operations.retention import apply_retention, folder_usage
from ymir_dropbox.operations.retry import retry_failed
from ymir_dropbox.operations.status import collect_status
from ymir_dropbox.operations.status import publish_state as publish
from ymir_dropbox.storing.backends import make_backend
from ymir_dropbox.storing.folders import check_same_filesystem
from ymir_dropbox.storing.importer import Importer
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Place, Status
from ymir_dropbox.storing.lock import INHERITED_ENV_VAR, acquire_lock

log = structlog.get_logger(__name__)


def run_daemon(config: Config, faults: FaultPlan = NO_FAULTS) -> int:
    """``ymir-dropbox run``: returns the exit code (0 after SIGTERM/SIGINT)."""
    config.ensure_folders()
    check_same_filesystem(config)
    lock = acquire_lock(config)
    ledger = Ledger(config.paths.ledger)
    backend = make_backend(config)
    backend.check()
    progress = Progress()
    metrics = Metrics(
        config.metrics.listen,
        status_source=lambda: collect_status(config, in_flight=progress.snapshot()),
        disk_source=lambda: folder_usage(config.paths),
    )
    notifier = Notifier(config.notify)
    filing = Filing(config.paths, ledger, notifier, faults)
    importer = Importer(config, ledger, backend, faults)
    worker = Worker(config, ledger, importer, filing, metrics, progress)
    inbox = InboxView(
        config.paths.inbox, config.watch, ReadinessTracker(config.watch.settle_seconds)
    )
    policy = RetryPolicy(config.watch.settle_seconds, config.daemon.retry_max_seconds)
    scheduler = Scheduler(config, inbox, worker, policy, ledger, metrics)
    housekeeping(config, scheduler, ledger, progress)
    log.info(
        "daemon_started",
        pid=os.getpid(),
        config=str(config.source) if config.source else "built-in defaults",
        **{name: str(path.absolute()) for name, path in config.paths.folders().items()},
        ledger=str(config.paths.ledger.absolute()),
    )
    reload_requested = False

    def on_signal(number: int, frame: FrameType | None) -> None:
        nonlocal reload_requested
        if number == signal.SIGHUP and not scheduler.stopping.is_set():
            reload_requested = True
            notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        scheduler.request_stop()

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, on_signal)
    notifier.start()
    for relative in recover(config.paths, ledger, backend, filing):
        scheduler.redo[relative] = 0.0
    scheduler.serve(backend.name)

    if not reload_requested:
        notify("STOPPING=1")
    log.info("daemon_stopping", running=len(scheduler.running), reload=reload_requested)
    stop_by = time.monotonic() + config.daemon.shutdown_timeout
    unfinished = scheduler.shutdown(config.daemon.shutdown_timeout)
    notifier.stop(max(1.0, stop_by - time.monotonic()))
    metrics.close()
    if unfinished:
        _give_up(ledger)
        log.warning(
            "shutdown_timeout",
            unfinished=[str(relative) for relative in unfinished],
            note="left in processing/; redone at next start",
        )
        ledger.close()
        sys.stderr.flush()
        if reload_requested:
            reexec(lock.fileno())
        os._exit(0)  # the unfinished jobs' threads cannot be joined
    ledger.close()
    if reload_requested:
        reexec(lock.fileno())
    lock.close()
    log.info("daemon_stopped")
    return 0


PUBLISH_EVERY_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 5.0
PROGRESS_AFTER_SECONDS = 3.0
RETENTION_EVERY_SECONDS = 3600.0
RECENT_FAILURES = 50  # how many of the latest failures are watched for a change of their file


def housekeeping(config: Config, scheduler: Scheduler, ledger: Ledger, progress: Progress) -> None:
    """What the loop does besides importing: publish its state, log long imports' progress,
    apply the retention policy."""

    def publish_state() -> None:
        publish(config, {"pid": os.getpid(), "in_flight": progress.snapshot()})

    def log_progress() -> None:
        for job in progress.snapshot():
            if job["elapsed_s"] >= PROGRESS_AFTER_SECONDS:
                rate = job["bytes_done"] / job["elapsed_s"] if job["elapsed_s"] else 0.0
                log.info(
                    "import_progress",
                    attempt=job["attempt"],
                    path=job["package"],
                    step=job["step"],
                    bytes_done=job["bytes_done"],
                    bytes_total=job["bytes_total"],
                    rate=round(rate),
                    elapsed=job["elapsed_s"],
                )

    def apply_retention_policy() -> None:
        kept = config.retention
        if kept.done_days or kept.failed_days:
            now = datetime.now(UTC)
            apply_retention(config.paths, ledger, now, kept.done_days, kept.failed_days)

    def rejudge_changed_failures() -> None:
        """A failed package whose file changed since it was judged (a writer that paused
        longer than any wait, then went on writing into it in failed/) is judged again."""
        for attempt in ledger.latest(Status.FAILED, RECENT_FAILURES):
            path = attempt.final_path
            if attempt.place is not Place.FAILED or path is None or attempt.size is None:
                continue
            try:
                size = os.lstat(path).st_size
            except OSError:
                continue
            if size != attempt.size:
                log.warning(
                    "failed_package_changed",
                    attempt=attempt.id,
                    path=str(path),
                    judged_size=attempt.size,
                    size=size,
                )
                retry_failed(config, ledger, [attempt.id], force=True)

    scheduler.every(PUBLISH_EVERY_SECONDS, publish_state)
    scheduler.every(config.watch.rescan_interval, rejudge_changed_failures)
    scheduler.every(PROGRESS_EVERY_SECONDS, log_progress)
    scheduler.every(RETENTION_EVERY_SECONDS, apply_retention_policy)


def _give_up(ledger: Ledger) -> None:
    """Attempts a stop cut short are interrupted by the stop, not crashed: say so."""
    for attempt in ledger.in_flight():
        if attempt.place is not Place.NONE:
            ledger.finish(
                attempt.id,
                Status.INTERRUPTED,
                notes=[*attempt.notes, "stopped before the import finished"],
            )


def reexec(lock_fd: int) -> None:
    """SIGHUP: the same command again, in this process, so systemd keeps its PID, and with
    the lock's descriptor inherited, so no other daemon can start in between."""
    log.info("daemon_reexec", reason="SIGHUP: reloading the configuration")
    os.set_inheritable(lock_fd, True)
    os.environ[INHERITED_ENV_VAR] = str(lock_fd)
    os.execv(sys.executable, [sys.executable, "-m", "ymir_dropbox", *sys.argv[1:]])  # noqa: S606
