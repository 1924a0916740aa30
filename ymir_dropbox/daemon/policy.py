"""The daemon's policies: what happens to a file after a worker is done with it, and the
rules that decide when a package has had its chance.

Pure: each takes what was observed (and the clock) and returns a decision; the scheduler,
the workers and the housekeeping apply them. :data:`NEXT` is what follows each way a worker
can leave a file; the ledger's own steps (statuses, places) are in
:mod:`ymir_dropbox.storing.lifecycle`, and what a start does with an unfinished attempt in
:data:`ymir_dropbox.daemon.recovery.TABLE`. Retries wait by the project's one backoff formula
(:func:`ymir_dropbox.core.backoff.backoff`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath

from ymir_dropbox.core.backoff import backoff
from ymir_dropbox.daemon.readiness import OPEN_SETTLE_FACTOR
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.lifecycle import Place

MAX_CRASHES = 3  # unexpected errors (or deaths of the process) before a package is failed


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


@dataclass(slots=True)
class RetryPolicy:
    """Counts passing failures per file and turns each job's end into a decision."""

    base_seconds: float
    max_seconds: float
    clock: Callable[[], float] = time.monotonic
    max_crashes: int = MAX_CRASHES
    failures: Counter[PurePosixPath] = field(default_factory=Counter)

    def decide(self, result: JobResult) -> Decision:
        relative = result.relative
        action = NEXT[result.end]
        if result.end is JobEnd.CRASHED and crash_limit_reached(result.crashes, self.max_crashes):
            action = Action.FAIL_CRASHED  # not the machine's fault, not going away: failed
        if action in (Action.RETRY_INBOX, Action.REDO):
            self.failures[relative] += 1
            delay = backoff(self.failures[relative], self.base_seconds, self.max_seconds)
            return Decision(action, self.clock() + delay, delay)
        if action is not Action.WAIT_FOR_WRITER:
            self.failures.pop(relative, None)
        return Decision(action)


# What follows each way a worker can leave a file (the crash limit aside).
NEXT: dict[JobEnd, Action] = {
    JobEnd.SETTLED: Action.RECONSIDER,  # filed: look at the inbox path afresh
    JobEnd.NOT_READY: Action.WAIT_FOR_WRITER,
    JobEnd.CHANGED: Action.WAIT_FOR_WRITER,
    JobEnd.GONE: Action.FORGET,
    JobEnd.IGNORED: Action.FORGET,
    JobEnd.TRANSIENT: Action.RETRY_INBOX,  # unreadable for now: later, with backoff
    JobEnd.DEFERRED: Action.REDO,  # the machine failed: import again later, with backoff
    JobEnd.CRASHED: Action.REDO,  # until crash_limit_reached
}


def crash_limit_reached(crashes: int, max_crashes: int = MAX_CRASHES) -> bool:
    """A package whose import crashed this many times in a row is failed (import.crashed)."""
    return crashes >= max_crashes


def incomplete_is_verdict(quiet_seconds: float, settle_seconds: float) -> bool:
    """Whether a gzip stream that ends too early is the package's fault (failed) or its
    writer's pause (it waits): once the file has been quiet for as long as an open writer may
    pause, ``OPEN_SETTLE_FACTOR`` x ``settle_seconds``. A close or a rename alone is not the end
    of every writer (one closes and reopens to append)."""
    return quiet_seconds >= OPEN_SETTLE_FACTOR * settle_seconds


def rejudge_failure(failed: Attempt, size_now: int | None) -> bool:
    """A failed package whose file in failed/ changed since it was judged (a writer that
    paused longer than any wait, then went on writing into it) is judged again."""
    return (
        failed.place is Place.FAILED
        and failed.size is not None
        and size_now is not None
        and size_now != failed.size
    )
