"""The daemon's policies: the rules that decide when a package has had its chance, each a
pure function of what was observed (and the clock).

:mod:`ymir_dropbox.daemon.machine` says what can happen next; these say when: how long to
wait before a retry (the project's one backoff formula,
:func:`ymir_dropbox.core.backoff.backoff`), when crashes are the package's fault, when an
incomplete stream is a verdict, when a failure is judged again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ymir_dropbox.core.backoff import backoff
from ymir_dropbox.daemon.machine import AFTER_JOB, Action, Decision, JobEnd, JobResult
from ymir_dropbox.daemon.readiness import OPEN_SETTLE_FACTOR
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.lifecycle import Place

MAX_CRASHES = 3  # unexpected errors (or deaths of the process) before a package is failed


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
        action = AFTER_JOB[result.end]
        if result.end is JobEnd.CRASHED and crash_limit_reached(result.crashes, self.max_crashes):
            action = Action.FAIL_CRASHED  # not the machine's fault, not going away: failed
        if action in (Action.RETRY_INBOX, Action.REDO):
            self.failures[relative] += 1
            delay = backoff(self.failures[relative], self.base_seconds, self.max_seconds)
            return Decision(action, self.clock() + delay, delay)
        if action is not Action.WAIT_FOR_WRITER:
            self.failures.pop(relative, None)
        return Decision(action)


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
