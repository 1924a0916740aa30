"""Watching: filesystem events become candidates on a queue; nothing else happens here.

The watchdog handler thread only enqueues. Events are hints, never proof: the daemon also
scans at start and rescans periodically (missed events, a full inotify queue, NFS and SMB that
send none). ``mode = "auto"`` picks polling when the inbox is on a network or FUSE filesystem;
polling is the inbox's own walk every ``poll_interval`` seconds (see the inbox view).
"""

from __future__ import annotations

import os
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

log = structlog.get_logger(__name__)

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse", "fuseblk", "sshfs", "ceph",
        "glusterfs", "afs", "lustre", "gpfs", "virtiofs", "davfs", "ncpfs",
    }
)  # fmt: skip
MOUNTINFO = Path("/proc/self/mountinfo")
# watchdog holds an IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO, and every event
# behind it waits as long: each claim (a rename out of the inbox) delayed the next package's
# pick-up by 0.5 s. The kernel queues both halves of a rename together, so 20 ms pairs them.
InotifyMoveEventGrouper.delay = 0.02
Hint = Literal["done", "writing", "touched"] | None
# "created" says nothing of the writer: a file renamed in from outside the inbox arrives
# complete, as a creation. "attrib" (chmod, a new mtime) says its writer is still about.
HINTS: dict[str, Hint] = {"closed": "done", "modified": "writing", "attrib": "touched"}


@dataclass(frozen=True, slots=True)
class FileEvent:
    """A path the watcher saw change, and what it says of the writer: ``"done"`` (it closed
    the file after writing, or renamed it in), ``"writing"`` (it wrote to it and has not
    closed it yet), or None."""

    path: str
    hint: Hint = None
    folder: bool = False


def filesystem_type(path: Path, mountinfo: Path = MOUNTINFO) -> str:
    """The type of the filesystem holding ``path``, from the mount table ("" if unknown)."""
    target = os.path.realpath(path)
    best, best_type = "", ""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        mount_point = parts[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, rest.split()[0]
    return best_type


def is_network_filesystem(kind: str) -> bool:
    return kind in NETWORK_FILESYSTEMS or kind.startswith("fuse.")


def choose_mode(mode: str, inbox: Path, mountinfo: Path = MOUNTINFO) -> str:
    if mode != "auto":
        return mode
    kind = filesystem_type(inbox, mountinfo)
    return "polling" if is_network_filesystem(kind) else "inotify"


def inotify_watched_inodes(proc: Path = Path("/proc/self")) -> set[int] | None:
    """The inode numbers this process's inotify instances watch (``/proc/self/fdinfo``), or
    None where that cannot be read."""
    watched: set[int] = set()
    try:
        descriptors = os.listdir(proc / "fd")
    except OSError:
        return None
    for fd in descriptors:
        try:
            if os.readlink(proc / "fd" / fd) != "anon_inode:inotify":
                continue
            lines = (proc / "fdinfo" / fd).read_text().splitlines()
        except OSError:
            continue  # closed meanwhile
        for line in lines:
            if line.startswith("inotify wd:"):
                fields = dict(part.split(":", 1) for part in line.split()[1:] if ":" in part)
                watched.add(int(fields.get("ino", "0"), 16))
    return watched


class _Enqueue(FileSystemEventHandler):
    def __init__(self, events: queue.Queue[FileEvent]) -> None:
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in {"opened", "closed_no_write"}:
            return
        if event.is_directory and kind not in {"created", "moved"}:
            return  # a folder's own "modified" fires for every entry added or removed
        hint: Hint = None
        if kind == "moved":
            path, hint = os.fsdecode(event.dest_path), "done"
        else:
            path = os.fsdecode(event.src_path)
            hint = HINTS.get(kind)
        self.events.put(FileEvent(path, hint=hint, folder=event.is_directory))


class InboxWatcher:
    """A watchdog observer on the inbox that can be restarted (inbox deleted and re-created)."""

    def __init__(
        self,
        inbox: Path,
        mode: str,
        recursive: bool,
        events: queue.Queue[FileEvent],
    ) -> None:
        self.inbox = inbox
        self.mode = choose_mode(mode, inbox)
        self.recursive = recursive
        self.events = events
        self.observer: BaseObserver | None = None
        self.identity: tuple[int, int] | None = None
        self.missing: set[int] = set()  # folders the last look found unwatched

    def start(self) -> None:
        """Watch with inotify; when polling, there is no observer: the inbox's own walks,
        every ``poll_interval`` seconds, are the looks (they never enter ignored folders,
        where a polling observer would list and stat everything)."""
        if self.mode != "polling":
            observer: BaseObserver = Observer()
            observer.schedule(_Enqueue(self.events), str(self.inbox), recursive=self.recursive)
            observer.daemon = True
            observer.start()
            self.observer = observer
        info = os.stat(self.inbox)
        self.identity = (info.st_dev, info.st_ino)
        log.info("watch_started", inbox=str(self.inbox), mode=self.mode, recursive=self.recursive)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None

    def unwatched(self, folders: set[int]) -> bool:
        """True when inotify watches none of some of ``folders`` (inode numbers of the inbox's
        folders, from a walk) in two looks in a row: the user's watches ran out (watchdog
        then goes on without them). A folder made during the walk is watched by the next."""
        if self.mode != "inotify" or not self.recursive:
            return False
        watched = inotify_watched_inodes()
        missing = folders - watched if watched is not None else set()
        lasting, self.missing = missing & self.missing, missing
        return bool(lasting)

    def healthy(self) -> bool:
        """False when the inbox is gone or was replaced by another folder, or the observer died."""
        try:
            info = os.stat(self.inbox)
        except OSError:
            return False
        alive = self.mode == "polling" or (self.observer is not None and self.observer.is_alive())
        return alive and (info.st_dev, info.st_ino) == self.identity
