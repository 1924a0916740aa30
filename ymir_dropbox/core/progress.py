"""Progress of the imports in flight: which step each is at, how far, since when.

Pure bookkeeping, shared between the threads: the importer says which step an attempt is at
and how to read how far it got (the position in the package file, which the kernel keeps for
us); the daemon reads a snapshot for its log, ``status`` and the status page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ymir_dropbox.core.jsonvalues import JsonObject

Position = Callable[[], int]


def _nowhere() -> int:
    return 0


@dataclass(slots=True)
class _Job:
    package: str
    total: int
    started: float
    step: str = "claim"
    position: Position = field(default=_nowhere)
    detail: str = ""


class Progress:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()

    def begin(self, attempt_id: int, package: str, total: int) -> None:
        with self._lock:
            self._jobs[attempt_id] = _Job(package, total, self.clock())

    def step(
        self, attempt_id: int, step: str, position: Position | None = None, detail: str = ""
    ) -> None:
        with self._lock:
            job = self._jobs.get(attempt_id)
            if job is not None:
                job.step, job.position, job.detail = step, position or _nowhere, detail

    def end(self, attempt_id: int) -> None:
        with self._lock:
            self._jobs.pop(attempt_id, None)

    def snapshot(self) -> list[JobProgress]:
        """Every import in flight."""
        now = self.clock()
        with self._lock:
            jobs = list(self._jobs.items())
        found = []
        for attempt_id, job in jobs:
            try:
                done = min(job.position(), job.total)
            except OSError:  # the file was closed between the look and the read
                done = 0
            percent = round(100.0 * done / job.total, 1) if job.total and done else None
            elapsed = round(now - job.started, 1)
            found.append(
                JobProgress(
                    job.package, attempt_id, job.step, job.detail, done, job.total, percent, elapsed
                )
            )
        return found

    def documents(self) -> list[JsonObject]:
        """The snapshot as ``status --json`` and the status page show it."""
        return [asdict(job) for job in self.snapshot()]


@dataclass(frozen=True, slots=True)
class JobProgress:
    """One import in flight: its step, how far it read, since when."""

    package: str
    attempt: int
    step: str
    detail: str
    bytes_done: int
    bytes_total: int
    percent: float | None  # None when a step has no measure
    elapsed_s: float
