"""The retry and crash policy: what happens to a file after a worker is done with it.

Pure: it takes what a worker reported and the clock, and returns a decision; the scheduler
applies it, with the project's one backoff formula (:func:`ymir_dropbox.core.backoff.backoff`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath

from ymir_dropbox.core.backoff import backoff

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
        match result.end:
            case JobEnd.SETTLED:
                self.failures.pop(relative, None)
                return Decision(Action.RECONSIDER)
            case JobEnd.NOT_READY | JobEnd.CHANGED:
                return Decision(Action.WAIT_FOR_WRITER)
            case JobEnd.GONE | JobEnd.IGNORED:
                self.failures.pop(relative, None)
                return Decision(Action.FORGET)
            case JobEnd.CRASHED if result.crashes >= self.max_crashes:
                # Not the machine's fault and not going away: fail it, with the reason.
                self.failures.pop(relative, None)
                return Decision(Action.FAIL_CRASHED)
            case JobEnd.TRANSIENT | JobEnd.DEFERRED | JobEnd.CRASHED:
                self.failures[relative] += 1
                delay = backoff(self.failures[relative], self.base_seconds, self.max_seconds)
                action = Action.RETRY_INBOX if result.end is JobEnd.TRANSIENT else Action.REDO
                return Decision(action, self.clock() + delay, delay)
        raise AssertionError(result.end)  # pragma: no cover - every JobEnd is matched
