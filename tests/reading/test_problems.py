"""The catalogue of problem codes: a backend adds its own; what was recorded is read back."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from ymir_dropbox.reading.problems import CODES, Problem, register_codes
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Place, Status


def test_a_code_no_module_registered_is_refused() -> None:
    unknown = re.escape("unknown problem code 'import.nobody_registered'")
    with pytest.raises(ValueError, match=unknown):
        Problem("import.nobody_registered", "", "?")


def test_a_backends_codes_are_in_the_catalogue_once_its_module_is_imported() -> None:
    from ymir_dropbox.storing.backends import mir, ymir_api, ymir_images, ymir_routes

    for module in (mir, ymir_api, ymir_images, ymir_routes):
        assert module.PROBLEMS and module.PROBLEMS.items() <= CODES.items()
    assert Problem("import.mir_failed", "mir", "exit 1").code == "import.mir_failed"


def test_a_code_is_registered_with_one_meaning() -> None:
    register_codes({"package.unreadable": CODES["package.unreadable"]})  # the same: no harm

    with pytest.raises(ValueError, match=re.escape("package.unreadable")):
        register_codes({"package.unreadable": "something else"})


def test_a_recorded_code_this_release_does_not_know_is_read_back(tmp_path: Path) -> None:
    """A row written by a newer release (then downgraded), or by a backend not imported
    here: the ledger reads it as it was recorded."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    attempt = ledger.begin(package="a.tar.gz", source=Path("a.tar.gz"), place=Place.INBOX)
    ledger.move(attempt, Place.PROCESSING)
    ledger.finish(attempt, Status.FAILED, errors=[Problem("package.unreadable", "", "at first")])
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as connection:
        recorded = [{"code": "package.from_the_future", "field": "x", "message": "newer"}]
        connection.execute("UPDATE attempts SET errors = ?", [json.dumps(recorded)])
    connection.close()

    [found] = Ledger.open_for_reading(tmp_path / "ledger.sqlite").recent()

    assert [problem.as_dict() for problem in found.errors] == [
        {"code": "package.from_the_future", "field": "x", "message": "newer"}
    ]
