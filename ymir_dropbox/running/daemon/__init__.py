"""The daemon: wiring, the scheduling loop, the workers, recovery and signals.

The main thread owns the readiness tracker: it drains watch events, rescans, re-stats files
that are settling and hands ready ones to a pool of ``[import] workers`` threads. A worker
claims a package (rename into processing/), imports it and settles it (rename into done/ or
failed/). Every step is in the ledger before it is taken, so a restart after ``kill -9``
finishes or redoes whatever was in processing/.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import signal
import stat
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any

import structlog

from ymir_dropbox.config import Config
from ymir_dropbox.reading.archive import gzip_complete, open_package
from ymir_dropbox.running.folders import (
    check_same_filesystem,
    free_path,
    is_ignored,
    is_package_name,
    move,
    remove_error_files,
    walk_inbox,
    write_error_files,
)
from ymir_dropbox.running.lock import acquire_lock
from ymir_dropbox.running.metrics import Metrics
from ymir_dropbox.running.readiness import Observation, ReadinessTracker, Ready
from ymir_dropbox.running.sdnotify import notify, watchdog_interval
from ymir_dropbox.running.watching import FileEvent, Hint, InboxWatcher
from ymir_dropbox.storing.backends import make_backend
from ymir_dropbox.storing.durable import remove_temporaries
from ymir_dropbox.storing.faults import crash_point
from ymir_dropbox.storing.importer import Importer
from ymir_dropbox.storing.ledger import IN_FLIGHT, DuplicateImport, Ledger, as_text

log = structlog.get_logger(__name__)
EVENTS_PER_TICK = 10_000
WAKE = FileEvent("")  # not a file: wakes the loop when a job ends
STATUS_EVERY_SECONDS = 5.0
MAX_CRASHES = 3  # unexpected errors in a row before a claimed package goes to failed/


@dataclass(frozen=True, slots=True)
class JobResult:
    """How a worker left a file: ``done``, ``not_ready``, ``changed``, ``gone``, ``ignored``,
    ``transient`` (inbox file unreadable for now), ``deferred`` (claimed; the machine failed,
    retry later) or ``crashed`` (claimed; an unexpected error, retried a few times)."""

    kind: str
    relative: PurePosixPath
    status: str | None = None
    reason: str = ""


class Daemon:
    def __init__(
        self, config: Config, ledger: Ledger, importer: Importer, metrics: Metrics
    ) -> None:
        self.config = config
        self.paths = config.paths
        self.ledger = ledger
        self.importer = importer
        self.metrics = metrics
        self.events: queue.Queue[FileEvent] = queue.Queue()
        self.tracker = ReadinessTracker(config.watch.settle_seconds)
        self.watcher = InboxWatcher(
            self.paths.inbox,
            config.watch.mode,
            config.watch.recursive,
            config.watch.poll_interval,
            self.events,
        )
        self.executor = ThreadPoolExecutor(config.import_.workers, thread_name_prefix="import")
        self.running: dict[Future[JobResult], PurePosixPath] = {}
        self.redo: dict[PurePosixPath, float] = {}  # claimed packages to import again, and when
        self.failures: Counter[PurePosixPath] = Counter()  # passing failures in a row
        self.crashes: Counter[PurePosixPath] = Counter()  # unexpected errors in a row
        self.stopping = threading.Event()
        self.reload_requested = False
        self.reported: set[PurePosixPath] = set()
        self.counts: Counter[str] = Counter()

    # -- start-up --------------------------------------------------------------------------------

    def recover(self) -> None:
        """Finish or redo what a previous run left in processing/; drop our temporary files."""
        leftovers = [
            *remove_temporaries(self.paths.models),
            *remove_temporaries(self.paths.failed, recursive=True),
        ]
        for removed in leftovers:
            log.info("temporary_removed", path=str(removed))
        for entry in self.paths.work.iterdir():
            if entry.is_dir() and not entry.is_symlink() and entry.name.startswith("mir-"):
                shutil.rmtree(entry, ignore_errors=True)
        for row in self.ledger.query(
            f"SELECT * FROM attempts WHERE status IN ({','.join('?' * len(IN_FLIGHT))})",  # noqa: S608
            list(IN_FLIGHT),
        ):
            if self.complete_in_backend(row):
                continue
            self.ledger.finish(
                row["id"],
                "interrupted",
                notes=[*(row.get("notes") or []), "interrupted: the daemon stopped mid-import"],
            )
            log.warning("attempt_interrupted", attempt=row["id"], package=row["package"])
        # Every attempt still placed in processing/ has a final status now (the unfinished
        # ones gave up their place above): settle its file, or note where it went.
        present = {
            as_text(str(relative)): relative
            for relative, info in walk_inbox(self.paths.processing, True)
            if stat.S_ISREG(info.st_mode)
        }
        for row in self.ledger.in_place("processing"):
            relative = present.pop(row["processing_path"], None)
            final = Path(row["final_path"]) if row["final_path"] else None
            if relative is not None:
                self.settle(row["id"], relative, row["status"])
            elif final is not None and final.exists():
                self.ledger.update(
                    row["id"], place="failed" if row["status"] == "failed" else "done"
                )
            else:
                self.ledger.update(row["id"], place="lost", final_path=None)
                log.error("package_missing_from_processing", attempt=row["id"], path=str(final))
        for relative in sorted(present.values()):
            log.info("package_recovered", path=str(relative))
            self.redo[relative] = 0.0

    def complete_in_backend(self, row: dict[str, Any]) -> bool:
        """Record an import the backend finished before the crash, rather than redo it."""
        result = self.importer.backend.recover(row)
        if result is None:
            return False
        try:
            self.ledger.finish(
                row["id"],
                "imported",
                model_hash=result.model_hash,
                dst_rev=result.dst_rev,
                notes=[*(row.get("notes") or []), *result.notes],
                errors=[],
            )
        except DuplicateImport:
            self.ledger.finish(row["id"], "duplicate", model_hash=result.model_hash)
        log.warning("attempt_completed_by_backend", attempt=row["id"], model_hash=result.model_hash)
        return True

    # -- the loop --------------------------------------------------------------------------------

    def serve(self) -> None:
        self.start_watching()
        self.rescan()
        notify("READY=1")
        log.info(
            "daemon_ready",
            inbox=str(self.paths.inbox),
            mode=self.watcher.mode,
            workers=self.config.import_.workers,
            backend=self.importer.backend.name,
        )
        interval = watchdog_interval()
        next_rescan = time.monotonic() + self.config.watch.rescan_interval
        next_status = next_ping = next_restat = 0.0
        while not self.stopping.is_set():
            self.drain_events(self.config.watch.poll_interval)
            self.collect()
            moment = time.monotonic()
            if moment >= next_rescan or not self.watcher.healthy():
                if not self.watcher.healthy():
                    log.warning("watch_restarted", inbox=str(self.paths.inbox))
                    self.watcher.stop()
                    self.paths.inbox.mkdir(parents=True, exist_ok=True)
                    self.start_watching()
                self.rescan()
                next_rescan = moment + self.config.watch.rescan_interval
            if moment >= next_restat:
                self.restat_settling()
                next_restat = moment + self.config.watch.poll_interval
            self.dispatch()
            if moment >= next_status:
                self.report_status()
                next_status = moment + STATUS_EVERY_SECONDS
            if interval is not None and moment >= next_ping:
                notify("WATCHDOG=1")
                next_ping = moment + interval
        self.shutdown()

    def start_watching(self) -> None:
        """Start the observer; if inotify is out of watches or instances, poll instead."""
        try:
            self.watcher.start()
        except OSError as error:
            if self.watcher.mode == "polling":
                raise
            log.error("watch_failed", mode=self.watcher.mode, error=str(error), fallback="polling")
            self.watcher.mode = "polling"
            self.watcher.start()

    def drain_events(self, timeout: float) -> None:
        try:
            first = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        self.handle_event(first)
        for _ in range(EVENTS_PER_TICK):
            try:
                self.handle_event(self.events.get_nowait())
            except queue.Empty:
                return

    def handle_event(self, event: FileEvent) -> None:
        if event is WAKE:
            return
        path = Path(event.path)
        try:
            relative = PurePosixPath(path.relative_to(self.paths.inbox))
        except ValueError:
            return
        if event.folder:
            if path.is_dir() and not path.is_symlink() and self.config.watch.recursive:
                for inner, info in walk_inbox(path, True):
                    self.consider(relative / inner, info, hint="done")
            return
        self.consider(relative, None, hint=event.hint)

    def rescan(self) -> None:
        seen = set()
        for relative, info in walk_inbox(self.paths.inbox, self.config.watch.recursive):
            seen.add(relative)
            self.consider(relative, info)
        for relative in list(self.tracker.candidates):
            known = self.tracker.candidates[relative]
            if relative not in seen and not known.dispatched:
                self.tracker.forget(relative)
        self.reported &= seen  # a name that comes back is reported again

    def consider(
        self, relative: PurePosixPath, info: os.stat_result | None, hint: Hint = None
    ) -> None:
        if relative == PurePosixPath(".") or is_ignored(relative, self.config.watch):
            return
        if info is None:
            try:
                info = os.lstat(self.paths.inbox / relative)
            except OSError:
                self.tracker.forget(relative)
                return
        if stat.S_ISDIR(info.st_mode):
            self.tracker.forget(relative)
            return
        if not is_package_name(relative, self.config.watch) or not stat.S_ISREG(info.st_mode):
            self.tracker.forget(relative)
            self.report_once(relative, info)
            return
        self.tracker.observe(relative, Observation.of(info), hint)

    def report_once(self, relative: PurePosixPath, info: os.stat_result) -> None:
        if relative in self.reported:
            return
        self.reported.add(relative)
        if stat.S_ISLNK(info.st_mode):
            reason = "a symlink is never followed or moved"
        elif not stat.S_ISREG(info.st_mode):
            reason = "not a regular file (fifo, device or socket)"
        else:
            reason = "name does not match watch.patterns"
        log.warning("file_left_alone", path=str(relative), reason=reason)

    def restat_settling(self) -> None:
        """Without events (polling, NFS) settle is seen only by looking again."""
        for relative in self.tracker.settling():
            self.consider(relative, None)

    def dispatch(self) -> None:
        room = 2 * self.config.import_.workers - len(self.running)
        moment = time.monotonic()
        for relative, not_before in sorted(self.redo.items()):
            if room <= 0:
                return
            if not_before <= moment:
                del self.redo[relative]
                self.submit(relative, self.process_claimed_file, relative)
                room -= 1
        if room <= 0:
            return
        for ready in self.tracker.ready(limit=room):
            self.submit(ready.relative, self.take, ready)

    def submit(self, relative: PurePosixPath, function: Any, *arguments: Any) -> None:
        future = self.executor.submit(self.guarded, relative, function, *arguments)
        future.add_done_callback(lambda _: self.events.put(WAKE))  # the loop collects at once
        self.running[future] = relative

    def guarded(self, relative: PurePosixPath, function: Any, *arguments: Any) -> JobResult:
        """A bug in one job must not strand a package: log it and try again later."""
        bound = structlog.contextvars.bound_contextvars(path=str(relative))
        with bound:
            try:
                result: JobResult = function(*arguments)
                return result
            except Exception as error:
                log.exception("job_crashed", error=repr(error))
                claimed = (self.paths.processing / relative).exists()
                return JobResult(
                    "crashed" if claimed else "transient", relative, reason=repr(error)
                )

    def collect(self) -> None:
        for future in [future for future in self.running if future.done()]:
            del self.running[future]
            self.apply(future.result())

    def apply(self, result: JobResult) -> None:
        relative = result.relative
        match result.kind:
            case "done":
                self.counts[result.status or "done"] += 1
                self.failures.pop(relative, None)
                self.crashes.pop(relative, None)
                self.tracker.forget(relative)
                self.consider(relative, None)
            case "not_ready" | "changed":
                self.tracker.not_yet(relative)
            case "gone" | "ignored":
                self.tracker.forget(relative)
            case "transient":
                delay = self.tracker.back_off(relative, self.config.daemon.retry_max_seconds)
                log.warning(
                    "package_retry_later", path=str(relative), reason=result.reason, delay=delay
                )
            case "crashed" if self.crashes[relative] + 1 >= MAX_CRASHES:
                # Not the machine's fault and not going away: fail it, with the reason.
                self.crashes.pop(relative)
                self.failures.pop(relative, None)
                self.submit(relative, self.fail_claimed, relative, result.reason)
            case "deferred" | "crashed":
                if result.kind == "crashed":
                    self.crashes[relative] += 1
                self.tracker.forget(relative)
                self.failures[relative] += 1
                delay = min(
                    self.config.daemon.retry_max_seconds,
                    self.config.watch.settle_seconds * 2.0 ** (self.failures[relative] - 1),
                )
                self.redo[relative] = time.monotonic() + delay
                log.warning(
                    "import_retry_later", path=str(relative), reason=result.reason, delay=delay
                )

    # -- workers ---------------------------------------------------------------------------------

    def take(self, ready: Ready) -> JobResult:
        """Claim a ready inbox file and import it."""
        relative = ready.relative
        path = self.paths.inbox / relative
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return JobResult("gone", relative)
        if not stat.S_ISREG(info.st_mode):
            return JobResult("ignored", relative)
        if Observation.of(info) != ready.observation:
            return JobResult("changed", relative)
        try:
            if not ready.quiet and not gzip_complete(path, self.config.limits.max_ratio):
                return JobResult("not_ready", relative)
            with open_package(path):
                pass
        except FileNotFoundError:
            return JobResult("gone", relative)
        except OSError as error:
            return JobResult("transient", relative, reason=f"{error.strerror or error}")
        target = self.paths.processing / relative
        if target.exists() or target.is_symlink():
            return JobResult(
                "transient", relative, reason="a package of that name is being imported"
            )
        attempt_id = self.begin_attempt(relative, "inbox", size=info.st_size)
        crash_point("claim")
        try:
            move(path, target)
        except OSError as error:
            self.ledger.finish(attempt_id, "interrupted", notes=[f"claim failed: {error}"])
            return JobResult(
                "gone" if isinstance(error, FileNotFoundError) else "transient", relative
            )
        self.ledger.update(attempt_id, place="processing")
        crash_point("claimed")
        log.info(
            "package_claimed",
            attempt=attempt_id,
            path=str(relative),
            size=info.st_size,
            since_write=round(time.time() - info.st_mtime, 3),
            step="claim",
        )
        return self.import_claimed(relative, attempt_id)

    def process_claimed_file(self, relative: PurePosixPath) -> JobResult:
        """Redo a package found in processing/ (after a crash, or a deferred import)."""
        path = self.paths.processing / relative
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return JobResult("gone", relative)
        finished = self.finished_in_processing(relative)
        if finished is not None:  # imported or failed already; only the move went wrong
            self.settle(finished["id"], relative, finished["status"])
            return JobResult("done", relative, finished["status"])
        attempt_id = self.begin_attempt(
            relative,
            "processing",
            size=info.st_size,
            notes=[f"redo after an interruption (failures so far: {self.failures[relative]})"],
        )
        return self.import_claimed(relative, attempt_id)

    def begin_attempt(self, relative: PurePosixPath, place: str, **fields: Any) -> int:
        """A new ledger row for the package at ``relative`` (under the inbox or processing/)."""
        return self.ledger.begin(
            package=relative.name,
            source=str(relative),
            place=place,
            processing_path=str(relative),
            **fields,
        )

    def finished_in_processing(self, relative: PurePosixPath) -> dict[str, Any] | None:
        rows = self.ledger.query(
            "SELECT * FROM attempts WHERE place = 'processing' AND processing_path = ? "
            "AND status IN ('imported', 'duplicate', 'failed') ORDER BY id DESC LIMIT 1",
            [as_text(str(relative))],
        )
        return next(iter(rows), None)

    def fail_claimed(self, relative: PurePosixPath, reason: str) -> JobResult:
        """A claimed package whose import keeps crashing: failed/, with the error."""
        with open_package(self.paths.processing / relative) as stream:
            sha256 = hashlib.file_digest(stream, "sha256").hexdigest()
        attempt_id = self.begin_attempt(relative, "processing", sha256=sha256)
        message = f"the import failed {MAX_CRASHES} times with an unexpected error: {reason}"
        problem = {"code": "import.crashed", "field": "", "message": message}
        self.ledger.finish(attempt_id, "failed", errors=[problem])
        self.settle(attempt_id, relative, "failed")
        return JobResult("done", relative, "failed")

    def import_claimed(self, relative: PurePosixPath, attempt_id: int) -> JobResult:
        path = self.paths.processing / relative
        claimed = os.lstat(path)
        if not stat.S_ISREG(claimed.st_mode):
            problem = {
                "code": "package.not_regular",
                "field": "",
                "message": f"{relative} is not a regular file (replaced by a link or special file)",
            }
            self.ledger.finish(attempt_id, "failed", errors=[problem])
            self.settle(attempt_id, relative, "failed")
            return JobResult("done", relative, "failed")
        try:
            outcome = self.importer.run(path, attempt_id)
        except OSError as error:
            # The machine's fault (disk full, store read-only, I/O error): retry with backoff.
            reason = f"{error.strerror or error}: {getattr(error, 'filename', '') or ''}".rstrip(
                ": "
            )
            self.ledger.finish(
                attempt_id,
                "interrupted",
                errors=[{"code": "import.io_error", "field": "", "message": reason}],
            )
            log.error("import_io_error", attempt=attempt_id, path=str(relative), error=reason)
            return JobResult("deferred", relative, reason=reason)
        except Exception as error:
            log.exception("import_crashed", attempt=attempt_id, path=str(relative))
            self.ledger.finish(
                attempt_id,
                "interrupted",
                errors=[{"code": "import.crashed", "field": "", "message": repr(error)}],
            )
            return JobResult("crashed", relative, reason=repr(error))
        if not self.settle(attempt_id, relative, outcome.status, Observation.of(claimed)):
            return JobResult("deferred", relative, reason="replaced while imported")
        row = self.ledger.get(attempt_id) or {}
        self.metrics.record(
            outcome.status, outcome.duration, int(row.get("size") or 0), time.time()
        )
        return JobResult("done", relative, outcome.status)

    def settle(
        self,
        attempt_id: int,
        relative: PurePosixPath,
        status: str,
        imported: Observation | None = None,
    ) -> bool:
        """Rename a finished package into done/ or failed/ under a free name.

        ``imported`` is the file the attempt read; if processing/ now holds another file (it
        was deleted or replaced meanwhile), that file is not filed under this attempt, and
        False is returned so that it gets an attempt of its own.
        """
        source = self.paths.processing / relative
        try:
            now_there = Observation.of(os.lstat(source))
        except FileNotFoundError:
            self.ledger.update(attempt_id, place="lost", final_path=None)
            log.error("package_missing_from_processing", attempt=attempt_id, path=str(relative))
            return True
        if imported is not None and now_there != imported:
            self.ledger.update(attempt_id, place="replaced", final_path=None)
            log.warning("package_replaced_while_imported", attempt=attempt_id, path=str(relative))
            return False
        destination = "failed" if status == "failed" else "done"
        folder = self.paths.failed if destination == "failed" else self.paths.done
        row = self.ledger.get(attempt_id) or {}
        planned = row.get("final_path")
        if planned and not Path(planned).exists() and Path(planned).parent.is_relative_to(folder):
            target = Path(planned)  # chosen before a crash; its error files may exist already
        else:
            target = free_path(folder, relative)
        while True:
            self.ledger.update(attempt_id, final_path=str(target))
            if destination == "failed":
                write_error_files(target, row)
            crash_point("recorded")
            try:
                move(source, target)
                break
            except FileExistsError:  # another package took the name meanwhile
                if destination == "failed":
                    remove_error_files(target)
                target = free_path(folder, relative)
        crash_point("moved")
        self.ledger.update(attempt_id, place=destination)
        log.info(
            "package_settled",
            attempt=attempt_id,
            path=str(relative),
            sha256=row.get("sha256"),
            status=status,
            target=str(target),
            step="settle",
            duration=row.get("duration"),
        )
        return True

    # -- reporting and stopping ----------------------------------------------------------------

    def report_status(self) -> None:
        waiting = len(self.tracker.candidates)
        depth = waiting + len(self.redo)
        self.metrics.set_queue_depth(depth)
        notify(
            f"STATUS=waiting {waiting}, importing {len(self.running)}, "
            f"imported {self.counts['imported']}, duplicates {self.counts['duplicate']}, "
            f"failed {self.counts['failed']}"
        )

    def request_stop(self, reload: bool = False) -> None:
        self.reload_requested = self.reload_requested or reload
        self.stopping.set()

    def shutdown(self) -> None:
        notify("STOPPING=1")
        log.info("daemon_stopping", running=len(self.running), reload=self.reload_requested)
        self.watcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        pending = [future for future in self.running if not future.cancelled()]
        finished, unfinished = wait(pending, timeout=self.config.daemon.shutdown_timeout)
        for future in finished:
            if not future.cancelled():
                self.apply(future.result())
        if unfinished:
            log.warning(
                "shutdown_timeout",
                unfinished=[str(self.running[future]) for future in unfinished],
                note="left in processing/; redone at next start",
            )
            self.ledger.close()
            sys.stderr.flush()
            if self.reload_requested:
                reexec()
            os._exit(0)


def reexec() -> None:
    """SIGHUP: the same command again, in this process, so systemd keeps its PID."""
    log.info("daemon_reexec", reason="SIGHUP: reloading the configuration")
    os.execv(sys.executable, [sys.executable, "-m", "ymir_dropbox", *sys.argv[1:]])  # noqa: S606


def run_daemon(config: Config) -> int:
    """``ymir-dropbox run``: returns the exit code (0 after SIGTERM/SIGINT)."""
    config.ensure_folders()
    check_same_filesystem(config)
    lock = acquire_lock(config)
    ledger = Ledger(config.paths.ledger)
    backend = make_backend(config)
    backend.check()
    metrics = Metrics(config.metrics.listen)
    daemon = Daemon(config, ledger, Importer(config, ledger, backend), metrics)
    log.info(
        "daemon_started",
        pid=os.getpid(),
        config=str(config.source) if config.source else "built-in defaults",
        **{name: str(path.absolute()) for name, path in config.paths.folders().items()},
        ledger=str(config.paths.ledger.absolute()),
    )

    def on_signal(number: int, frame: FrameType | None) -> None:
        daemon.request_stop(reload=number == signal.SIGHUP)

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, on_signal)
    daemon.recover()
    daemon.serve()
    ledger.close()
    lock.close()
    if daemon.reload_requested:
        reexec()
    log.info("daemon_stopped")
    return 0
