"""Readiness: is this inbox file a complete package yet?

Signals that a writer finished (closed after writing, renamed into the inbox) make a file a
candidate after ``QUIET_AFTER_CLOSE`` without any event; without a signal (polling, NFS,
SMB) it must keep the same size and mtime for ``settle_seconds``. A signal is not proof: the
import reads the gzip stream once, and a stream that ends too early before the file has been
quiet for ``OPEN_SETTLE_FACTOR`` times ``settle_seconds`` is no verdict: the package goes
back to the inbox and waits for its writer.
An empty file is a placeholder that content has not reached yet: it is taken (and fails) only
when it has stayed empty for ``EMPTY_SETTLE_FACTOR`` times ``settle_seconds``.

The tracker is pure bookkeeping with an injected clock; the daemon feeds it observations.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from ymir_dropbox.daemon.watching import Hint

EMPTY_SETTLE_FACTOR = 10
# A file whose writer has not closed it (seen under inotify) is complete only after this many
# times settle_seconds of silence: a writer that pauses keeps its package.
OPEN_SETTLE_FACTOR = 10
# A close is not the end of every writer: `install` chmods, `wget`, `curl -R` and
# `rsync --inplace -t` set the mtime by path just after closing. A closed file is taken once
# no event at all (attribute changes included) has come for this long.
QUIET_AFTER_CLOSE = 0.2


@dataclass(frozen=True, slots=True)
class Observation:
    """What lstat said about a file; any change means the writer is still at work."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, info: os.stat_result) -> Observation:
        return cls(info.st_size, info.st_mtime_ns, info.st_ino)


@dataclass(slots=True)
class Candidate:
    observation: Observation
    changed_at: float  # when it last changed, as far as we know (first sight: from its mtime)
    seen_since: float  # since when we have seen it unchanged ourselves
    signalled: bool = False  # a writer finished with it (closed, renamed in)
    writing: bool = False  # a writer opened it for writing and has not closed it
    last_event_at: float = 0.0  # the last event of any kind (write, close, chmod, touch)
    not_before: float = 0.0
    dispatched: bool = False

    def quiet_for(self, now: float) -> float:
        return now - self.changed_at


@dataclass(frozen=True, slots=True)
class Ready:
    relative: PurePosixPath
    observation: Observation
    quiet: bool


class ReadinessTracker:
    def __init__(
        self,
        settle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settle_seconds = settle_seconds
        self.clock = clock
        self.wall_clock = wall_clock
        self.candidates: dict[PurePosixPath, Candidate] = {}

    def observe(self, relative: PurePosixPath, observation: Observation, hint: Hint = None) -> None:
        """Record what a scan or an event saw; a change restarts the settle time."""
        now = self.clock()
        known = self.candidates.get(relative)
        if known is None:
            # First sight (start-up scan, or an event): trust the mtime for how long it has
            # been quiet, so files that arrived while we were down are not made to wait.
            age = max(0.0, self.wall_clock() - observation.mtime_ns / 1e9)
            changed_at = now - min(age, EMPTY_SETTLE_FACTOR * self.settle_seconds)
            known = self.candidates[relative] = Candidate(observation, changed_at, now)
        elif known.observation != observation:
            rewritten = (known.observation.size, known.observation.inode) != (
                observation.size,
                observation.inode,
            )
            known.observation = observation
            known.changed_at = known.seen_since = now
            if rewritten:  # a new mtime alone is a touch after the close, not new content
                known.signalled = False
        if hint is not None:
            known.last_event_at = now
        if hint == "done":
            known.signalled, known.writing = True, False
        elif hint == "writing":
            known.signalled, known.writing = False, True

    def forget(self, relative: PurePosixPath) -> None:
        self.candidates.pop(relative, None)

    def settling(self) -> list[PurePosixPath]:
        """Candidates that only a look at their size and mtime can make ready."""
        now = self.clock()
        return [
            relative
            for relative, known in self.candidates.items()
            if not known.dispatched
            and not known.signalled
            and (
                known.quiet_for(now) < self.settle_seconds
                or known.observation.size == 0
                or known.not_before > now
            )
        ]

    def ready(self, limit: int) -> list[Ready]:
        """Up to ``limit`` candidates that may be taken now, oldest change first.

        They are marked dispatched until the worker reports back.
        """
        now = self.clock()
        found: list[Ready] = []
        for relative, known in sorted(self.candidates.items(), key=lambda item: item[1].changed_at):
            if len(found) >= limit:
                break
            if known.dispatched or known.not_before > now:
                continue
            if known.observation.size == 0:
                if known.quiet_for(now) >= EMPTY_SETTLE_FACTOR * self.settle_seconds:
                    known.dispatched = True
                    found.append(Ready(relative, known.observation, quiet=True))
                continue
            if known.writing and known.quiet_for(now) < OPEN_SETTLE_FACTOR * self.settle_seconds:
                continue  # its writer still has it open: a pause is not the end
            if known.signalled and now - known.last_event_at < QUIET_AFTER_CLOSE:
                continue  # closed just now: its writer may still chmod or touch it
            if known.quiet_for(now) >= self.settle_seconds or known.signalled:
                # Quiet only by its mtime (another machine's clock, on NFS or SMB) is not
                # enough to skip the completeness check: quiet while we watched is.
                watched_quiet = now - known.seen_since >= self.settle_seconds
                known.dispatched = True
                found.append(Ready(relative, known.observation, watched_quiet))
        return found

    def next_change(self) -> float | None:
        """The earliest moment a waiting candidate may become ready (to sleep no longer)."""
        moments = []
        for known in self.candidates.values():
            if known.dispatched:
                continue
            if known.signalled:
                moments.append(max(known.last_event_at + QUIET_AFTER_CLOSE, known.not_before))
            elif known.not_before:
                moments.append(known.not_before)
        return min(moments, default=None)

    def not_yet(self, relative: PurePosixPath) -> None:
        """The worker found the file incomplete: wait for another signal or for quiet."""
        known = self.candidates.get(relative)
        if known is not None:
            known.dispatched = False
            known.signalled = False
            known.changed_at = max(known.changed_at, known.seen_since)  # judge by what we saw

    def defer(self, relative: PurePosixPath, until: float) -> None:
        """A passing failure (busy, permission): not before ``until`` (the policy's backoff)."""
        known = self.candidates.get(relative)
        if known is not None:
            known.not_before = until
            known.dispatched = False
