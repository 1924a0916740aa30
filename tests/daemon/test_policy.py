"""The daemon's policies, each a pure function with a name: what follows a job, when a crash
is the package's fault, when an incomplete stream is a verdict, when a failure is judged again."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from ymir_dropbox.core.backoff import backoff
from ymir_dropbox.daemon.machine import Action, JobEnd, JobResult
from ymir_dropbox.daemon.policy import (
    RetryPolicy,
    crash_limit_reached,
    incomplete_is_verdict,
    rejudge_failure,
)
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.lifecycle import Place, Status


@pytest.mark.parametrize(("crashes", "limit"), [(2, False), (3, True), (4, True)])
def test_the_third_crash_in_a_row_is_the_packages_fault(crashes: int, limit: bool) -> None:
    assert crash_limit_reached(crashes) is limit


@pytest.mark.parametrize(
    ("quiet", "verdict"), [(0.5, False), (49.9, False), (50.0, True), (600.0, True)]
)
def test_an_incomplete_stream_is_a_verdict_after_ten_settle_times_of_quiet(
    quiet: float, verdict: bool
) -> None:
    assert incomplete_is_verdict(quiet, settle_seconds=5.0) is verdict


def failure(place: Place = Place.FAILED, size: int | None = 100) -> Attempt:
    return Attempt(
        id=7, package="x.tar.gz", status=Status.FAILED, place=place, size=size,
        final_path=Path("/srv/failed/x.tar.gz"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("attempt", "size_now", "again"),
    [
        (failure(), 100, False),
        (failure(), 160, True),
        (failure(), None, False),  # gone, or unreadable: nothing to judge
        (failure(place=Place.RETRIED), 160, False),  # not in failed/ any more
        (failure(size=None), 160, False),  # never hashed: no size to compare
    ],
    ids=["unchanged", "grown", "gone", "retried", "no-size"],
)
def test_a_failure_whose_file_changed_is_judged_again(
    attempt: Attempt, size_now: int | None, again: bool
) -> None:
    assert rejudge_failure(attempt, size_now) is again


NAME = PurePosixPath("model.tar.gz")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the policy -----------------------------------------------------------------------------------


def test_one_backoff_formula_doubles_from_the_base_up_to_the_maximum() -> None:
    assert [backoff(n, 5.0, 30.0) for n in range(1, 6)] == [5.0, 10.0, 20.0, 30.0, 30.0]


@pytest.mark.parametrize(
    ("end", "action"),
    [
        (JobEnd.SETTLED, Action.RECONSIDER),
        (JobEnd.NOT_READY, Action.WAIT_FOR_WRITER),
        (JobEnd.CHANGED, Action.WAIT_FOR_WRITER),
        (JobEnd.GONE, Action.FORGET),
        (JobEnd.IGNORED, Action.FORGET),
        (JobEnd.TRANSIENT, Action.RETRY_INBOX),
        (JobEnd.DEFERRED, Action.REDO),
        (JobEnd.CRASHED, Action.REDO),
    ],
    ids=lambda value: value.value,
)
def test_each_end_of_a_job_has_one_action(end: JobEnd, action: Action) -> None:
    assert RetryPolicy(5.0, 300.0).decide(JobResult(end, NAME)).action is action


def test_a_deferred_import_is_redone_later_and_later() -> None:
    clock = Clock()
    policy = RetryPolicy(5.0, 300.0, clock=clock)

    first = policy.decide(JobResult(JobEnd.DEFERRED, NAME))
    second = policy.decide(JobResult(JobEnd.DEFERRED, NAME))

    assert (first.at, second.at) == (105.0, 110.0)


def test_a_package_that_settles_starts_its_count_again() -> None:
    policy = RetryPolicy(5.0, 300.0)
    policy.decide(JobResult(JobEnd.DEFERRED, NAME))
    policy.decide(JobResult(JobEnd.SETTLED, NAME))

    assert policy.decide(JobResult(JobEnd.DEFERRED, NAME)).delay == 5.0


def test_the_third_crash_in_a_row_fails_the_package() -> None:
    policy = RetryPolicy(5.0, 300.0)

    decisions = [policy.decide(JobResult(JobEnd.CRASHED, NAME, crashes=n)) for n in (1, 2, 3)]

    assert [decision.action for decision in decisions] == [
        Action.REDO,
        Action.REDO,
        Action.FAIL_CRASHED,
    ]
