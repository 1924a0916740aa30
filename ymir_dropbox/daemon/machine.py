"""What can happen next to a package: the daemon's state machine, on one screen.

Where a package is and how far its attempt got are the ledger's (the statuses, the places and
the legal steps between them: :mod:`ymir_dropbox.storing.lifecycle`, which refuses any other
step). Around them, the daemon decides in two moments, each a table below:

- :data:`AFTER_JOB`: a worker is done with a file (it claimed, imported and filed it, or
  could not): what the loop does with it next.
- :data:`AT_START`: the last run left an attempt unfinished (a stop, a kill, a power cut):
  what a start does with it, by its status, its place, and whether its file is still in
  processing/. A file in processing/ that no row accounts for is imported again.

When is the policies' (:mod:`ymir_dropbox.daemon.policy`): how long a retry waits, when
crashes are the package's fault, when an incomplete stream is a verdict.

::

    inbox file --claim--> processing/ --import--> verdict --file--> done/ | failed/
        |                     |                     |
        | not ready, changed  | the machine fails   | filing fails: retried, verdict kept
        v                     v                     v
      waits for its writer   redo later (backoff)  crash x3 in a row: failed, import.crashed
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath

from ymir_dropbox.storing.lifecycle import IN_FLIGHT, SETTLED, Place, Status


class JobEnd(Enum):
    """How a worker left a file."""

    SETTLED = "settled"  # filed in done/ or failed/ (or found gone from processing/)
    NOT_READY = "not_ready"  # its gzip stream is still incomplete: wait for the writer
    CHANGED = "changed"  # it changed since it was judged ready
    GONE = "gone"  # it left the inbox before the claim
    IGNORED = "ignored"  # it is not a regular file any more
    TRANSIENT = "transient"  # an inbox file that cannot be read or claimed for now
    DEFERRED = "deferred"  # claimed; the machine failed (disk, store, YMIR): import later
    CRASHED = "crashed"  # claimed; an unexpected error


@dataclass(frozen=True, slots=True)
class JobResult:
    end: JobEnd
    relative: PurePosixPath
    status: str | None = None  # the final status, when SETTLED
    reason: str = ""
    crashes: int = 0  # CRASHED: crashes in a row so far, as the ledger counts them


class Action(Enum):
    """What the loop does with a file after a job."""

    RECONSIDER = "reconsider"  # forget what we knew and look at the inbox path afresh
    WAIT_FOR_WRITER = "wait_for_writer"
    FORGET = "forget"
    RETRY_INBOX = "retry_inbox"  # try the inbox file again at ``at``
    REDO = "redo"  # import the claimed file in processing/ again at ``at``
    FAIL_CRASHED = "fail_crashed"  # file the claimed package in failed/ as import.crashed


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    at: float = 0.0  # monotonic time, for RETRY_INBOX and REDO
    delay: float = 0.0


AFTER_JOB: dict[JobEnd, Action] = {
    JobEnd.SETTLED: Action.RECONSIDER,  # filed: look at the inbox path afresh
    JobEnd.NOT_READY: Action.WAIT_FOR_WRITER,
    JobEnd.CHANGED: Action.WAIT_FOR_WRITER,
    JobEnd.GONE: Action.FORGET,
    JobEnd.IGNORED: Action.FORGET,
    JobEnd.TRANSIENT: Action.RETRY_INBOX,  # unreadable for now: later, with backoff
    JobEnd.DEFERRED: Action.REDO,  # the machine failed: import again later, with backoff
    JobEnd.CRASHED: Action.REDO,  # FAIL_CRASHED once policy.crash_limit_reached
}


class AtStart(Enum):
    """What a start does with an attempt the last run left unfinished."""

    ITS_OWN = "its_own"  # a `ymir-dropbox import`'s: left to it, taken up once it is gone
    FINISH_OR_INTERRUPT = "finish_or_interrupt"  # the backend's result, else interrupted
    FILE = "file"  # judged, not filed: file it under its verdict
    RECORD_FILED = "record_filed"  # filed, the move not recorded: record it (or lost)


# (statuses, places, file still in processing/ (None: either way)) -> what a start does.
AT_START: tuple[tuple[frozenset[Status], frozenset[Place], bool | None, AtStart], ...] = (
    (IN_FLIGHT, frozenset({Place.NONE}), None, AtStart.ITS_OWN),
    (IN_FLIGHT, frozenset({Place.INBOX, Place.PROCESSING}), None, AtStart.FINISH_OR_INTERRUPT),
    (SETTLED, frozenset({Place.PROCESSING}), True, AtStart.FILE),
    (SETTLED, frozenset({Place.PROCESSING}), False, AtStart.RECORD_FILED),
)


def at_start(status: Status, place: Place | None, file_in_processing: bool) -> AtStart | None:
    """The row of :data:`AT_START` for an attempt; None: nothing to do at start."""
    for statuses, places, in_processing, step in AT_START:
        if status in statuses and place in places and in_processing in (None, file_in_processing):
            return step
    return None
