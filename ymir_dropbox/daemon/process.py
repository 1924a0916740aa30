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
from dataclasses import dataclass
from datetime import datetime
from types import FrameType

import structlog

from ymir_dropbox.config import Config
from ymir_dropbox.core.faults import NO_FAULTS, FaultPlan
from ymir_dropbox.core.progress import Progress
from ymir_dropbox.core.refreshing import Refreshing
from ymir_dropbox.core.sdnotify import notify
from ymir_dropbox.daemon.filing import Filing
from ymir_dropbox.daemon.housekeeping import housekeeping
from ymir_dropbox.daemon.inbox import InboxView
from ymir_dropbox.daemon.policy import RetryPolicy
from ymir_dropbox.daemon.readiness import ReadinessTracker
from ymir_dropbox.daemon.recovery import recover
from ymir_dropbox.daemon.scheduler import Scheduler
from ymir_dropbox.daemon.worker import Worker
from ymir_dropbox.operations.metrics import Metrics
from ymir_dropbox.operations.notifications import Notifier
from ymir_dropbox.operations.retention import folder_usage
from ymir_dropbox.operations.status import collect_status
from ymir_dropbox.operations.verdicts import package_source
from ymir_dropbox.storing.backends import Backend, make_backend
from ymir_dropbox.storing.folders import check_same_filesystem
from ymir_dropbox.storing.importer import Importer
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Place, Status
from ymir_dropbox.storing.lock import DaemonLock, acquire_lock

log = structlog.get_logger(__name__)
# The folders' sizes are walked in the background, at most every so often, and only when a
# scrape or the status page asks: an uploader decides how long the walk takes.
DISK_MAX_AGE_SECONDS = 5.0
DISK_WAIT_SECONDS = 2.0


@dataclass(slots=True)
class Daemon:
    """The wired daemon: what a stop has to close, in order."""

    lock: DaemonLock
    ledger: Ledger
    backend: Backend
    notifier: Notifier
    metrics: Metrics
    filing: Filing
    scheduler: Scheduler
    reload_requested: bool = False


def run_daemon(config: Config, faults: FaultPlan = NO_FAULTS) -> int:
    """``ymir-dropbox run``: returns the exit code (0 after SIGTERM/SIGINT)."""
    daemon = wire(config, faults)
    log.info(
        "daemon_started",
        pid=os.getpid(),
        config=str(config.source) if config.source else "built-in defaults",
        **{name: str(path.absolute()) for name, path in config.paths.folders().items()},
        ledger=str(config.paths.ledger.absolute()),
    )

    def on_signal(number: int, frame: FrameType | None) -> None:
        if number == signal.SIGINT and daemon.scheduler.stopping.is_set():
            raise StopNow  # a second Ctrl-C: no more waiting for the imports
        if number == signal.SIGHUP and not daemon.scheduler.stopping.is_set():
            daemon.reload_requested = True
            notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        daemon.scheduler.request_stop()

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, on_signal)
    # A reload blocked SIGHUP across its exec (see reexec): one sent meanwhile was kept
    # pending, and is taken now, by the handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    daemon.notifier.start()
    try:
        scheduler = daemon.scheduler
        for relative in recover(
            config.paths, daemon.ledger, daemon.backend, daemon.filing, scheduler.solo
        ):
            scheduler.redo[relative] = 0.0
        daemon.scheduler.serve(daemon.backend.name)
        return stop(config, daemon)
    except StopNow:
        stop_at_once(daemon)
        return EXIT_INTERRUPTED


def wire(config: Config, faults: FaultPlan) -> Daemon:
    """The folders, the lock, the ledger, the backend, and the pipeline over them."""
    config.ensure_folders()
    check_same_filesystem(config)
    lock = acquire_lock(config)
    ledger = Ledger(config.paths.ledger)
    backend = make_backend(config)
    backend.check()
    progress = Progress()
    usage = Refreshing(lambda: folder_usage(config.paths), DISK_MAX_AGE_SECONDS, "folder-usage")

    def disk() -> dict[str, int]:
        return usage.get(wait=DISK_WAIT_SECONDS) or {}

    metrics = Metrics(
        config.metrics.listen,
        status_source=lambda: collect_status(config, progress.documents(), disk()),
        package_source=package_source(config.paths.ledger, progress.snapshot),
        disk_source=disk,
        last_success=_last_import(ledger),
        hosts=config.metrics.hosts,
    )
    notifier = Notifier(config.notify)
    filing = Filing(config.paths, ledger, notifier, faults)
    importer = Importer(config, ledger, backend, faults)
    worker = Worker(config, ledger, importer, filing, metrics, progress)
    inbox = InboxView(
        config.paths.inbox, config.watch, ReadinessTracker(config.watch.settle_seconds), faults
    )
    policy = RetryPolicy(config.watch.settle_seconds, config.daemon.retry_max_seconds)
    scheduler = Scheduler(config, inbox, worker, policy, ledger, metrics)
    housekeeping(config, scheduler, ledger, progress)
    return Daemon(lock, ledger, backend, notifier, metrics, filing, scheduler)


def stop(config: Config, daemon: Daemon) -> int:
    """Drain: running imports get ``shutdown_timeout`` seconds; then exit, or re-execute for
    a reload (the lock's descriptor inherited)."""
    scheduler, reload_requested = daemon.scheduler, daemon.reload_requested
    if not reload_requested:
        notify("STOPPING=1")
    waiting_for = sorted(str(relative) for relative in scheduler.running.values())
    log.info(
        "daemon_stopping",
        running=len(waiting_for),
        waiting_for=waiting_for,
        up_to=config.daemon.shutdown_timeout,
        reload=reload_requested,
        note="Ctrl-C again to stop at once; what is not finished is redone at the next start",
    )
    stop_by = time.monotonic() + config.daemon.shutdown_timeout
    unfinished = scheduler.shutdown(config.daemon.shutdown_timeout)
    daemon.notifier.stop(max(1.0, stop_by - time.monotonic()))
    daemon.metrics.close()
    if unfinished:
        _give_up(daemon.ledger)
        log.warning(
            "shutdown_timeout",
            unfinished=[str(relative) for relative in unfinished],
            note="left in processing/; redone at next start",
        )
    else:
        _clean_up(daemon)
    daemon.ledger.close()
    if reload_requested:
        sys.stderr.flush()
        reexec(daemon.lock)
    if unfinished:
        sys.stderr.flush()
        os._exit(0)  # the unfinished jobs' threads cannot be joined
    daemon.lock.close()
    log.info("daemon_stopped")
    return 0


def _clean_up(daemon: Daemon) -> None:
    """Every import finished: what the backend left for them that nobody needs any more (a
    staged package YMIR is done with) goes now, not at the next start."""
    try:
        daemon.backend.clean_up(daemon.ledger)
    except Exception as error:  # a stop never fails for it: the next start tries again
        log.warning("clean_up_failed", error=repr(error))


def _last_import(ledger: Ledger) -> float | None:
    """Unix time of the ledger's last import, if any."""
    for attempt in ledger.latest(Status.IMPORTED, 1):
        if attempt.finished_at:
            return datetime.fromisoformat(attempt.finished_at).timestamp()
    return None


class StopNow(Exception):
    """A second SIGINT while stopping: stop without waiting for the imports."""


EXIT_INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C


def stop_at_once(daemon: Daemon) -> None:
    """The imports in flight stay in processing/ (interrupted by the stop, not crashed), and
    the process ends now: their threads cannot be joined."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a third Ctrl-C changes nothing
    waiting_for = sorted(str(relative) for relative in daemon.scheduler.running.values())
    daemon.scheduler.request_stop()
    _give_up(daemon.ledger)
    log.warning(
        "daemon_stopped_at_once",
        unfinished=waiting_for,
        note="left in processing/; redone at next start",
    )
    daemon.ledger.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _give_up(ledger: Ledger) -> None:
    """Attempts a stop cut short are interrupted by the stop, not crashed: say so."""
    for attempt in ledger.in_flight():
        if attempt.place is not Place.NONE:
            ledger.finish(
                attempt.id,
                Status.INTERRUPTED,
                notes=[*attempt.notes, "stopped before the import finished"],
            )


def reexec(lock: DaemonLock) -> None:
    """SIGHUP: the same command again, in this process, so systemd keeps its PID, and with
    the lock's descriptor inherited, so no other daemon can start in between."""
    log.info("daemon_reexec", reason="SIGHUP: reloading the configuration")
    # Until the new process has its handler, a SIGHUP (the next `systemctl reload`) would
    # end it: blocked here, the signal mask survives the exec, and run_daemon unblocks it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    os.environ.update(lock.inherited_by_exec())
    script = sys.argv[0]
    if os.path.basename(script) == "ymir-dropbox" and os.access(script, os.X_OK):
        # The console script again: the process keeps its name (`pgrep -f "ymir-dropbox run"`).
        os.execv(script, [script, *sys.argv[1:]])  # noqa: S606
    os.execv(sys.executable, [sys.executable, "-m", "ymir_dropbox", *sys.argv[1:]])  # noqa: S606
