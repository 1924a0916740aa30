"""The readiness rules, with the clocks in the test's hands."""

from __future__ import annotations

from pathlib import PurePosixPath

from ymir_dropbox.daemon.machine import JobEnd, JobResult
from ymir_dropbox.daemon.policy import RetryPolicy
from ymir_dropbox.daemon.readiness import (
    EMPTY_SETTLE_FACTOR,
    QUIET_AFTER_CLOSE,
    Observation,
    ReadinessTracker,
)

SETTLE = 5.0
NAME = PurePosixPath("model.tar.gz")


class Clocks:
    def __init__(self) -> None:
        self.monotonic = 1000.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds


def tracker(clocks: Clocks) -> ReadinessTracker:
    return ReadinessTracker(SETTLE, clock=lambda: clocks.monotonic, wall_clock=lambda: clocks.wall)


def written(clocks: Clocks, size: int = 100, ago: float = 0.0) -> Observation:
    return Observation(size, int((clocks.wall - ago) * 1e9), inode=7)


def test_a_fresh_file_without_signal_waits_for_settle() -> None:
    clocks = Clocks()
    readiness = tracker(clocks)
    readiness.observe(NAME, written(clocks))

    assert readiness.ready(10) == []
    clocks.advance(SETTLE)
    (ready,) = readiness.ready(10)
    assert ready.relative == NAME and ready.quiet


def test_a_signal_makes_it_a_candidate_after_a_short_quiet_but_not_quiet() -> None:
    clocks = Clocks()
    readiness = tracker(clocks)
    readiness.observe(NAME, written(clocks), hint="done")

    assert readiness.ready(10) == []  # its writer may still chmod or touch it
    clocks.advance(QUIET_AFTER_CLOSE)
    (ready,) = readiness.ready(10)
    assert not ready.quiet  # the worker still checks the gzip stream


def test_a_chmod_after_the_close_starts_the_short_quiet_again() -> None:
    clocks = Clocks()
    readiness = tracker(clocks)
    readiness.observe(NAME, written(clocks), hint="done")
    clocks.advance(QUIET_AFTER_CLOSE * 0.75)
    readiness.observe(NAME, written(clocks), hint="touched")  # install -m 644: chmod by path

    clocks.advance(QUIET_AFTER_CLOSE * 0.75)
    assert readiness.ready(10) == []
    clocks.advance(QUIET_AFTER_CLOSE * 0.3)
    assert [ready.relative for ready in readiness.ready(10)] == [NAME]


def test_a_new_mtime_after_the_close_keeps_the_signal() -> None:
    """wget, curl -R and rsync --inplace -t set the mtime by path after closing."""
    clocks = Clocks()
    readiness = tracker(clocks)
    readiness.observe(NAME, written(clocks), hint="done")
    readiness.observe(NAME, written(clocks, ago=3600), hint="touched")

    clocks.advance(QUIET_AFTER_CLOSE)

    assert [ready.relative for ready in readiness.ready(10)] == [NAME]


def test_new_content_after_the_close_drops_the_signal() -> None:
    clocks = Clocks()
    readiness = tracker(clocks)
    readiness.observe(NAME, written(clocks), hint="done")
    readiness.observe(NAME, written(clocks, size=300))  # reopened and written, seen by a rescan

    clocks.advance(QUIET_AFTER_CLOSE)

    assert readiness.ready(10) == []


def test_the_loop_is_told_when_a_closed_file_becomes_due() -> None:
    clocks = Clocks()
    readiness = tracker(clocks)
    readiness.observe(NAME, written(clocks), hint="done")

    assert readiness.next_change() == clocks.monotonic + QUIET_AFTER_CLOSE


def test_a_change_restarts_the_settle_time() -> None:
    clocks = Clocks()
    readiness = tracker(clocks)
    readiness.observe(NAME, written(clocks))
    clocks.advance(SETTLE - 1)
    readiness.observe(NAME, written(clocks, size=200))
    clocks.advance(SETTLE - 1)

    assert readiness.ready(10) == []


def test_an_old_mtime_is_a_candidate_at_once_but_checked_for_completeness() -> None:
    """Files that arrived while the daemon was down are not made to wait; yet an mtime may
    come from another machine's clock, so only quiet that we watched skips the check."""
    clocks = Clocks()
    readiness = tracker(clocks)
    readiness.observe(NAME, written(clocks, ago=3600))

    (ready,) = readiness.ready(10)
    assert not ready.quiet

    readiness.not_yet(NAME)  # the worker found the stream incomplete
    assert readiness.ready(10) == []
    clocks.advance(SETTLE)
    (ready,) = readiness.ready(10)
    assert ready.quiet


def test_an_empty_file_waits_much_longer_than_settle() -> None:
    clocks = Clocks()
    readiness = tracker(clocks)
    readiness.observe(NAME, written(clocks, size=0), hint="done")

    clocks.advance(SETTLE * (EMPTY_SETTLE_FACTOR - 1))
    assert readiness.ready(10) == []
    clocks.advance(SETTLE)
    assert [ready.relative for ready in readiness.ready(10)] == [NAME]


def test_back_off_doubles_up_to_the_maximum() -> None:
    clocks = Clocks()
    readiness = tracker(clocks)
    policy = RetryPolicy(SETTLE, 30.0, clock=lambda: clocks.monotonic)
    readiness.observe(NAME, written(clocks), hint="done")
    readiness.ready(10)

    decisions = [policy.decide(JobResult(JobEnd.TRANSIENT, NAME)) for _ in range(5)]
    readiness.defer(NAME, decisions[-1].at)

    assert [decision.delay for decision in decisions] == [5.0, 10.0, 20.0, 30.0, 30.0]
    assert readiness.ready(10) == []
    clocks.advance(30.0)
    assert len(readiness.ready(10)) == 1


def test_ready_respects_the_limit_and_takes_the_oldest_first() -> None:
    clocks = Clocks()
    readiness = tracker(clocks)
    for index in range(5):
        readiness.observe(PurePosixPath(f"p{index}.tar.gz"), written(clocks), hint="done")
        clocks.advance(0.1)
    clocks.advance(QUIET_AFTER_CLOSE)

    first = readiness.ready(2)
    rest = readiness.ready(10)

    assert [ready.relative.name for ready in first] == ["p0.tar.gz", "p1.tar.gz"]
    assert len(rest) == 3
