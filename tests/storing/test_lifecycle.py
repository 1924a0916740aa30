"""The lifecycle in the ledger: the steps it refuses, crashes counted, names kept exactly."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from ymir_dropbox.config import Config
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.documents import attempt_document
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import IllegalTransition, Place, Status

NAME = PurePosixPath("model.tar.gz")


# -- the lifecycle in the ledger ------------------------------------------------------------------


def test_the_ledger_refuses_a_step_the_lifecycle_does_not_list(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    attempt = ledger.begin(package="a.tar.gz", place=Place.INBOX, processing_path=NAME)

    with pytest.raises(IllegalTransition):
        ledger.finish(attempt, Status.IMPORTED)  # never without the import step
    with pytest.raises(IllegalTransition):
        ledger.move(attempt, Place.DONE)  # never from the inbox straight to done/
    assert ledger.get(attempt).status == "claimed"  # type: ignore[union-attr]


def test_crashes_are_counted_from_the_ledger_until_the_package_settles(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    crashed = Problem("import.crashed", "", "boom")

    def attempt(status: Status, errors: list[Problem]) -> None:
        row = ledger.begin(package=NAME.name, place=Place.PROCESSING, processing_path=NAME)
        ledger.start_import(row, "embedded")
        ledger.finish(row, status, errors=errors)

    attempt(Status.INTERRUPTED, [crashed])
    attempt(Status.FAILED, [])
    attempt(Status.INTERRUPTED, [crashed])
    attempt(Status.INTERRUPTED, [])  # a stop, not a crash: does not count, does not break
    attempt(Status.INTERRUPTED, [crashed])

    assert ledger.crashes_in_a_row(NAME) == 2
    assert ledger.crashes_in_a_row(PurePosixPath("other.tar.gz")) == 0


def test_a_name_that_is_not_utf8_is_kept_exactly(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    name = PurePosixPath(os.fsdecode(b"caf\xe9.tar.gz"))
    attempt = ledger.begin(package=name.name, place=Place.PROCESSING, processing_path=name)
    ledger.start_import(attempt, "embedded")
    ledger.finish(attempt, Status.FAILED)

    row = ledger.settled_in_processing(name)

    assert row is not None and row.id == attempt
    assert row.processing_path == Path(os.fsdecode(b"caf\xe9.tar.gz"))  # stored exactly
    assert attempt_document(row)["processing_path"] == "caf\\xe9.tar.gz"  # shown escaped
