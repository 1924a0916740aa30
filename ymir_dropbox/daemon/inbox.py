"""The inbox view: events and rescans become candidates; the readiness tracker says which are
complete. Runs on the scheduler's thread only (the watchdog thread only enqueues events, and
the scanner's thread only walks folders).

A walk never runs on the loop's thread: an uploader can fill the inbox with files, and a loop
that walks them stops importing, answering and pinging systemd's watchdog meanwhile. The
scanner walks (never entering an ignored folder, never through a symlink) and hands over the
package names with their ``lstat`` and the other names; the loop only weighs them. A walk's
``lstat`` may be seconds old: readiness then sees a change and waits longer, and the claim
looks at the file again before it takes it.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import structlog

from ymir_dropbox.config import WatchConfig
from ymir_dropbox.core.faults import NO_FAULTS, FaultPlan
from ymir_dropbox.daemon.readiness import Observation, ReadinessTracker, Ready
from ymir_dropbox.daemon.watching import FileEvent, Hint, InboxWatcher
from ymir_dropbox.storing.folders import WHOLE, Kind, is_ignored, is_package_name, scan_inbox

log = structlog.get_logger(__name__)
EVENTS_PER_TICK = 10_000
REPORTS_PER_SCAN = 100  # names left alone logged one by one; the rest only counted
WAKE = FileEvent("")  # not a file: wakes the loop when a job or a scan ends


@dataclass(slots=True)
class Scan:
    """What one walk found under ``root`` (the inbox's own ``.`` for a whole rescan)."""

    root: PurePosixPath
    hint: Hint = None
    packages: list[tuple[str, os.stat_result]] = field(default_factory=list)  # and their lstat
    others: list[str] = field(default_factory=list)  # names the daemon never takes
    folders: set[int] = field(default_factory=set)  # inodes of the folders it could open

    @property
    def whole(self) -> bool:
        return self.root == WHOLE


class Scanner:
    """One thread that walks what it is asked to, in turn; results wait in ``done``."""

    def __init__(
        self, inbox: Path, watch: WatchConfig, wake: queue.Queue[FileEvent], faults: FaultPlan
    ) -> None:
        self.inbox = inbox
        self.watch = watch
        self.wake = wake
        self.faults = faults
        self.asked: queue.Queue[tuple[PurePosixPath, Hint]] = queue.Queue()
        self.done: queue.Queue[Scan] = queue.Queue()
        self.pending: set[tuple[PurePosixPath, Hint]] = set()  # asked for, not begun
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, name="scanner", daemon=True)
        self.thread.start()

    def ask(self, root: PurePosixPath, hint: Hint = None) -> None:
        """Walk ``root`` (``.``: the whole inbox) once more; a walk already asked for and not
        begun covers this one (a folder renamed to and fro costs one walk each way, not one
        each time)."""
        with self.lock:
            if (root, hint) in self.pending:
                return
            self.pending.add((root, hint))
        self.asked.put((root, hint))

    def _serve(self) -> None:
        while True:
            root, hint = self.asked.get()
            with self.lock:
                self.pending.discard((root, hint))  # a change from now on may be after it
            try:
                self.faults.reach("scanning", str(root))
                found = self.scan(root, hint)
            except Exception as error:  # never lose the thread to one walk
                log.exception("scan_failed", root=str(root), error=repr(error))
                found = Scan(root, hint)
            self.done.put(found)
            self.wake.put(WAKE)

    def scan(self, root: PurePosixPath, hint: Hint) -> Scan:
        found = Scan(root, hint)
        for relative, kind, info in scan_inbox(self.inbox, self.watch, root):
            if info is None:
                found.others.append(relative)
            elif kind is Kind.FOLDER:
                found.folders.add(info.st_ino)
            else:
                found.packages.append((relative, info))
        return found


class InboxView:
    def __init__(
        self,
        inbox: Path,
        watch: WatchConfig,
        tracker: ReadinessTracker,
        faults: FaultPlan = NO_FAULTS,
    ) -> None:
        self.inbox = inbox
        self.watch = watch
        self.tracker = tracker
        self.events: queue.Queue[FileEvent] = queue.Queue()
        self.watcher = InboxWatcher(inbox, watch.mode, watch.recursive, self.events)
        self.reported: set[str] = set()  # names left alone, each logged once
        self.scanner = Scanner(inbox, watch, self.events, faults)

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
            self._poll_instead(str(error))

    def _poll_instead(self, reason: str) -> None:
        log.error("watch_failed", mode=self.watcher.mode, error=reason, fallback="polling")
        self.watcher.stop()
        self.watcher.mode = "polling"
        try:
            self.watcher.start()
        except OSError as error:  # the inbox gone meanwhile: keep_watching makes it again
            log.warning("watch_restart_failed", inbox=str(self.inbox), error=str(error))

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
            self._take_scans()
            return
        path = Path(event.path)
        try:
            relative = PurePosixPath(path.relative_to(self.inbox))
        except ValueError:
            return
        if event.folder:
            if self.watch.recursive and not is_ignored(relative, self.watch):
                self.scanner.ask(relative, hint=event.hint)  # "done" if moved in whole
            return
        self.consider(relative, None, hint=event.hint)

    def rescan(self) -> None:
        """Ask for a walk of the whole inbox; the loop takes its result when it is done."""
        self.scanner.ask(WHOLE)

    def _take_scans(self) -> None:
        while True:
            try:
                found = self.scanner.done.get_nowait()
            except queue.Empty:
                return
            self._take(found)

    def _take(self, found: Scan) -> None:
        for name, info in found.packages:
            self.consider(PurePosixPath(name), info, hint=found.hint)
        new = [name for name in found.others if name not in self.reported]
        for name in new[:REPORTS_PER_SCAN]:
            self.consider(PurePosixPath(name), None)  # says why, once (a fresh lstat)
        self.reported.update(new[REPORTS_PER_SCAN:])
        if len(new) > REPORTS_PER_SCAN:
            log.warning("files_left_alone", count=len(new) - REPORTS_PER_SCAN, root=str(found.root),
                        reason="not packages; each is named once, at most 100 a scan")  # fmt: skip
        if not found.whole:
            return
        seen = {name for name, _ in found.packages}
        for relative, known in list(self.tracker.candidates.items()):
            if str(relative) not in seen and not known.dispatched:
                self.consider(relative, None)  # gone since, or new since the walk began
        self.reported &= seen | set(found.others)
        if self.watcher.unwatched(found.folders):
            self._poll_instead("inotify watches ran out: some folders are not watched")

    def restat_settling(self) -> None:
        """Without events (polling, NFS) settle is seen only by looking again."""
        for relative in self.tracker.settling():
            self.consider(relative, None)

    def consider(
        self, relative: PurePosixPath, info: os.stat_result | None, hint: Hint = None
    ) -> None:
        if relative == WHOLE or is_ignored(relative, self.watch):
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
        """Log why a name is left alone, the first time it is seen (and after it was gone)."""
        if str(relative) in self.reported:
            return
        self.reported.add(str(relative))
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            reason = "a symlink is never followed or moved"
        elif not stat.S_ISREG(mode):
            reason = "not a regular file (fifo, device or socket)"
        else:
            reason = "name does not match watch.patterns"
        log.warning("file_left_alone", path=str(relative), reason=reason)

    def ready(self, limit: int) -> list[Ready]:
        return self.tracker.ready(limit)

    @property
    def waiting(self) -> int:
        return len(self.tracker.candidates)
