"""The daemon's policies, each a pure function with a name: what follows a job, when a crash
is the package's fault, when an incomplete stream is a verdict, when a failure is judged again."""

from __future__ import annotations

from pathlib import Path

import pytest

from ymir_dropbox.daemon.policy import (
    NEXT,
    Action,
    JobEnd,
    crash_limit_reached,
    incomplete_is_verdict,
    rejudge_failure,
)
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.lifecycle import Place, Status


def test_every_way_a_worker_leaves_a_file_has_what_follows() -> None:
    assert set(NEXT) == set(JobEnd)
    assert NEXT[JobEnd.DEFERRED] is NEXT[JobEnd.CRASHED] is Action.REDO


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
