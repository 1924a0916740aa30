"""Scheduling: the loop, the pool of workers, and an orderly stop.

The loop runs on the main thread. It drains watch events, rescans, re-stats settling files,
hands ready files and due redos to ``[import] workers`` threads, and applies the policy's
decision to every finished job. Nothing is handed to a worker once a stop is requested.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import structlog

from ymir_dropbox.config import Config
from ymir_dropbox.core.sdnotify import notify, watchdog_interval
from ymir_dropbox.daemon.inbox import InboxView
from ymir_dropbox.daemon.machine import Action, JobEnd, JobResult
from ymir_dropbox.daemon.policy import RetryPolicy
from ymir_dropbox.daemon.worker import Worker
from ymir_dropbox.operations.metrics import Metrics
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Status

log = structlog.get_logger(__name__)
STATUS_EVERY_SECONDS = 5.0


class Scheduler:
    def __init__(
        self,
        config: Config,
        inbox: InboxView,
        worker: Worker,
        policy: RetryPolicy,
        ledger: Ledger,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.inbox = inbox
        self.worker = worker
        self.policy = policy
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self.executor = ThreadPoolExecutor(config.import_.workers, thread_name_prefix="import")
        self.running: dict[Future[JobResult], PurePosixPath] = {}
        self.redo: dict[PurePosixPath, float] = {}  # claimed packages to import again, and when
        # Packages to redo alone, first, one at a time: several were at work when the daemon
        # died, and the next death is the guilty one's (recovery).
        self.solo: set[PurePosixPath] = set()
        self.stopping = threading.Event()
        self.counts: Counter[str] = Counter()
        self.periodic: list[_Periodic] = []

    def every(self, seconds: float, task: Callable[[], None]) -> None:
        """Run ``task`` on the loop's thread every ``seconds`` (first at the first turn).

        A task that raises is logged and runs again next time: housekeeping never stops the
        daemon."""
        self.periodic.append(_Periodic(seconds, task))

    # -- the loop --------------------------------------------------------------------------------

    def serve(self, backend_name: str) -> None:
        self.inbox.start()
        self.inbox.rescan()
        notify("READY=1")
        log.info(
            "daemon_ready",
            inbox=str(self.inbox.inbox),
            mode=self.inbox.mode,
            workers=self.config.import_.workers,
            backend=backend_name,
        )
        watch = self.config.watch
        interval = watchdog_interval()
        next_rescan = self.clock() + self.rescan_interval()
        next_status = next_ping = next_restat = 0.0
        while not self.stopping.is_set():
            self.inbox.drain(self.sleep_for(watch.poll_interval))
            self.collect()
            moment = self.clock()
            if self.inbox.keep_watching() or moment >= next_rescan:
                self.inbox.rescan()
                next_rescan = moment + self.rescan_interval()
            if moment >= next_restat:
                self.inbox.restat_settling()
                next_restat = moment + watch.poll_interval
            self.dispatch()
            if moment >= next_status:
                self.report_status()
                next_status = moment + STATUS_EVERY_SECONDS
            if interval is not None and moment >= next_ping:
                notify("WATCHDOG=1")
                next_ping = moment + interval
            for periodic in self.periodic:
                periodic.run_if_due(moment)

    def rescan_interval(self) -> float:
        """``rescan_interval``; when polling, a walk is the only look: ``poll_interval``."""
        watch = self.config.watch
        return watch.poll_interval if self.inbox.mode == "polling" else watch.rescan_interval

    def sleep_for(self, longest: float) -> float:
        """Until the next event, or the next moment a file or a redo becomes due."""
        moments = [*self.redo.values()]
        upcoming = self.inbox.tracker.next_change()
        if upcoming is not None:
            moments.append(upcoming)
        if not moments:
            return longest
        return min(longest, max(0.005, min(moments) - self.clock()))

    def dispatch(self) -> None:
        if self.stopping.is_set():
            return
        if self.solo:
            self.dispatch_alone()
            return
        room = 2 * self.config.import_.workers - len(self.running)
        moment = self.clock()
        for relative, not_before in sorted(self.redo.items()):
            if room <= 0:
                return
            if not_before <= moment:
                del self.redo[relative]
                self.submit(relative, self.worker.redo, relative)
                room -= 1
        if room <= 0:
            return
        for ready in self.inbox.ready(limit=room):
            self.submit(ready.relative, self.worker.take, ready)

    def dispatch_alone(self) -> None:
        """One suspect at a time, and nothing beside it."""
        if self.running:
            return
        relative = min(self.solo)
        self.solo.discard(relative)
        self.redo.pop(relative, None)
        log.info("import_alone", path=str(relative), left=len(self.solo))
        self.submit(relative, self.worker.redo, relative)

    def submit(self, relative: PurePosixPath, job: Callable[..., JobResult], *args: Any) -> None:
        assert not self.stopping.is_set(), "nothing is handed to a worker while stopping"
        future = self.executor.submit(self._guarded, relative, job, *args)
        future.add_done_callback(lambda _: self.inbox.wake())  # the loop collects at once
        self.running[future] = relative

    def _guarded(
        self, relative: PurePosixPath, job: Callable[..., JobResult], *args: Any
    ) -> JobResult:
        """A bug in one job must not strand a package: log it and try again later."""
        with structlog.contextvars.bound_contextvars(path=str(relative)):
            try:
                return job(*args)
            except Exception as error:
                log.exception("job_crashed", error=repr(error))
                claimed = (self.config.paths.processing / relative).exists()
                end = JobEnd.CRASHED if claimed else JobEnd.TRANSIENT
                return JobResult(end, relative, reason=repr(error))

    def collect(self) -> None:
        for future in [future for future in self.running if future.done()]:
            del self.running[future]
            self.apply(future.result())

    def apply(self, result: JobResult) -> None:
        """Do what the policy decides; while stopping, only what needs no worker."""
        relative = result.relative
        tracker = self.inbox.tracker
        decision = self.policy.decide(result)
        match decision.action:
            case Action.RECONSIDER:
                if result.status:
                    self.counts[result.status] += 1
                tracker.forget(relative)
                self.inbox.consider(relative, None)
            case Action.WAIT_FOR_WRITER:
                tracker.not_yet(relative)
            case Action.FORGET:
                tracker.forget(relative)
            case Action.RETRY_INBOX:
                tracker.defer(relative, decision.at)
                log.warning(
                    "package_retry_later",
                    path=str(relative),
                    reason=result.reason,
                    delay=decision.delay,
                )
            case Action.REDO:
                tracker.forget(relative)
                self.redo[relative] = decision.at
                log.warning(
                    "import_retry_later",
                    path=str(relative),
                    reason=result.reason,
                    delay=decision.delay,
                )
            case Action.FAIL_CRASHED:
                tracker.forget(relative)
                if self.stopping.is_set():
                    return  # stays in processing/: the next start fails it from the ledger
                self.submit(relative, self.worker.fail_crashed, relative, result.reason)

    # -- reporting and stopping ----------------------------------------------------------------

    def report_status(self) -> None:
        waiting = self.inbox.waiting
        self.metrics.set_queue_depth(waiting + len(self.redo))
        notify(
            f"STATUS=waiting {waiting}, importing {len(self.running)}, "
            f"imported {self.counts[Status.IMPORTED]}, "
            f"duplicates {self.counts[Status.DUPLICATE]}, failed {self.counts[Status.FAILED]}"
        )

    def request_stop(self) -> None:
        self.stopping.set()

    def shutdown(self, timeout: float) -> list[PurePosixPath]:
        """Stop watching, let running jobs finish for up to ``timeout`` seconds; return the
        packages whose jobs did not finish (they stay where they are, for the next start)."""
        self.stopping.set()
        self.inbox.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        pending = [future for future in self.running if not future.cancelled()]
        finished, unfinished = wait(pending, timeout=timeout)
        for future in finished:
            if not future.cancelled():
                self.apply(future.result())
        return [self.running[future] for future in unfinished]


@dataclass(slots=True)
class _Periodic:
    seconds: float
    task: Callable[[], None]
    due: float = 0.0

    def run_if_due(self, moment: float) -> None:
        if moment < self.due:
            return
        self.due = moment + self.seconds
        try:
            self.task()
        except Exception as error:
            log.exception("housekeeping_failed", task=getattr(self.task, "__name__", "?"),
                          error=repr(error))  # fmt: skip
