"""The inbox view: events and rescans become candidates; the readiness tracker says which are
complete. Runs on the scheduler's thread only (the watchdog thread only enqueues events)."""

from __future__ import annotations

import os
import queue
import stat
from pathlib import Path, PurePosixPath

import structlog

from ymir_dropbox.config import WatchConfig
from ymir_dropbox.daemon.readiness import Observation, ReadinessTracker, Ready
from ymir_dropbox.daemon.watching import FileEvent, Hint, InboxWatcher
from ymir_dropbox.storing.folders import is_ignored, is_package_name, walk_files

log = structlog.get_logger(__name__)
EVENTS_PER_TICK = 10_000
WAKE = FileEvent("")  # not a file: wakes the loop when a job ends


class InboxView:
    def __init__(self, inbox: Path, watch: WatchConfig, tracker: ReadinessTracker) -> None:
        self.inbox = inbox
        self.watch = watch
        self.tracker = tracker
        self.events: queue.Queue[FileEvent] = queue.Queue()
        self.watcher = InboxWatcher(
            inbox, watch.mode, watch.recursive, watch.poll_interval, self.events
        )
        self.reported: set[PurePosixPath] = set()

    @property
    def mode(self) -> str:
        return self.watcher.mode

    def start(self) -> None:
        """Start the observer; if inotify is out of watches or instances, poll instead."""
        try:
            self.watcher.start()
        except OSError as error:
            if self.watcher.mode == "polling":
                raise
            log.error("watch_failed", mode=self.watcher.mode, error=str(error), fallback="polling")
            self.watcher.mode = "polling"
            self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()

    def keep_watching(self) -> bool:
        """Restart the observer if the inbox was deleted or replaced; True if it was."""
        if self.watcher.healthy():
            return False
        log.warning("watch_restarted", inbox=str(self.inbox))
        self.watcher.stop()
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.start()
        return True

    def wake(self) -> None:
        """Called from a worker thread: the loop looks at finished jobs at once."""
        self.events.put(WAKE)

    def drain(self, timeout: float) -> None:
        try:
            first = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle(first)
        for _ in range(EVENTS_PER_TICK):
            try:
                self._handle(self.events.get_nowait())
            except queue.Empty:
                return

    def _handle(self, event: FileEvent) -> None:
        if event is WAKE:
            return
        path = Path(event.path)
        try:
            relative = PurePosixPath(path.relative_to(self.inbox))
        except ValueError:
            return
        if event.folder:
            if path.is_dir() and not path.is_symlink() and self.watch.recursive:
                for inner, info in walk_files(path, True):
                    self.consider(relative / inner, info, hint="done")
            return
        self.consider(relative, None, hint=event.hint)

    def rescan(self) -> None:
        seen = set()
        for relative, info in walk_files(self.inbox, self.watch.recursive):
            seen.add(relative)
            self.consider(relative, info)
        for relative, known in list(self.tracker.candidates.items()):
            if relative not in seen and not known.dispatched:
                self.tracker.forget(relative)
        self.reported &= seen  # a name that comes back is reported again

    def restat_settling(self) -> None:
        """Without events (polling, NFS) settle is seen only by looking again."""
        for relative in self.tracker.settling():
            self.consider(relative, None)

    def consider(
        self, relative: PurePosixPath, info: os.stat_result | None, hint: Hint = None
    ) -> None:
        if relative == PurePosixPath(".") or is_ignored(relative, self.watch):
            return
        if info is None:
            try:
                info = os.lstat(self.inbox / relative)
            except OSError:
                self.tracker.forget(relative)
                return
        if stat.S_ISDIR(info.st_mode):
            self.tracker.forget(relative)
            return
        if not is_package_name(relative, self.watch) or not stat.S_ISREG(info.st_mode):
            self.tracker.forget(relative)
            self._report_once(relative, info)
            return
        self.tracker.observe(relative, Observation.of(info), hint)

    def _report_once(self, relative: PurePosixPath, info: os.stat_result) -> None:
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

    def ready(self, limit: int) -> list[Ready]:
        return self.tracker.ready(limit)

    @property
    def waiting(self) -> int:
        return len(self.tracker.candidates)
