"""What can happen next: after a job, and at start, one row for every case."""

from __future__ import annotations

import itertools

import pytest

from ymir_dropbox.daemon.machine import AFTER_JOB, Action, AtStart, JobEnd, at_start
from ymir_dropbox.storing.lifecycle import IN_FLIGHT, SETTLED, Place, Status


def test_every_way_a_worker_leaves_a_file_has_what_follows() -> None:
    assert set(AFTER_JOB) == set(JobEnd)
    assert AFTER_JOB[JobEnd.DEFERRED] is AFTER_JOB[JobEnd.CRASHED] is Action.REDO


@pytest.mark.parametrize(
    ("status", "place", "there", "step"),
    [
        (Status.IMPORTING, Place.NONE, False, AtStart.ITS_OWN),
        (Status.CLAIMED, Place.INBOX, False, AtStart.FINISH_OR_INTERRUPT),
        (Status.IMPORTING, Place.PROCESSING, True, AtStart.FINISH_OR_INTERRUPT),
        (Status.FAILED, Place.PROCESSING, True, AtStart.FILE),
        (Status.IMPORTED, Place.PROCESSING, False, AtStart.RECORD_FILED),
        (Status.IMPORTED, Place.DONE, True, None),
        (Status.INTERRUPTED, None, True, None),
    ],
)
def test_what_a_start_does_with_an_attempt(
    status: Status, place: Place | None, there: bool, step: AtStart | None
) -> None:
    assert at_start(status, place, there) is step


def test_every_unfinished_attempt_in_processing_has_exactly_one_step_at_start() -> None:
    for status, there in itertools.product(IN_FLIGHT | SETTLED, (True, False)):
        assert at_start(status, Place.PROCESSING, there) is not None, (status, there)
