"""``GET /packages/<sha256>``: which attempt a question means, and when its verdict is told.

The ledger is a real one; the attempts go through the steps the daemon takes."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from ymir_dropbox.core.progress import JobProgress
from ymir_dropbox.operations.verdicts import BadQuestion, Question, answer, parse_question
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.attempts import Findings
from ymir_dropbox.storing.ledger import Ledger, now
from ymir_dropbox.storing.lifecycle import Place, Status

SHA = "ab" * 32
OTHER = "cd" * 32


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite")


def claimed(ledger: Ledger, relative: str, sha256: str = SHA) -> int:
    attempt = ledger.begin(
        package=PurePosixPath(relative).name,
        source=PurePosixPath(relative),
        place=Place.INBOX,
        processing_path=PurePosixPath(relative),
        size=10,
    )
    ledger.move(attempt, Place.PROCESSING)
    ledger.record_package(attempt, sha256, 10)
    ledger.start_import(attempt, "embedded")
    return attempt


def filed(ledger: Ledger, relative: str, status: Status, sha256: str = SHA) -> int:
    attempt = claimed(ledger, relative, sha256)
    errors = (
        [Problem("info.missing", "ymir-info.yaml", "no info")] if status is Status.FAILED else []
    )
    ledger.finish(attempt, status, errors=errors, model_hash="m" * 40 if not errors else None)
    ledger.move(attempt, Place.FAILED if status is Status.FAILED else Place.DONE)
    return attempt


@pytest.mark.parametrize(
    "sha256",
    ["abc", "ab" * 31 + "a", "ab" * 32 + "a", "g" * 64, "../" + "a" * 61, "", "ab" * 32 + "/x"],
    ids=["short", "63", "65", "not-hex", "dots", "empty", "a-path-after"],
)
def test_anything_but_64_hex_digits_is_refused(sha256: str) -> None:
    with pytest.raises(BadQuestion, match="not a sha256"):
        parse_question(sha256, "")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("colour=red", "unknown parameter 'colour'"),
        ("after=-1", "after: '-1' is not an attempt id"),
        ("after=1e3", "is not an attempt id"),
        ("since=yesterday", "not an ISO 8601 time"),
        ("since=2026-12-04T10:00:00", "no time zone"),
        ("name=", "name: expected 1 to"),
        ("&&&", "the query string"),
    ],
)
def test_a_malformed_parameter_is_refused_and_named(query: str, message: str) -> None:
    with pytest.raises(BadQuestion, match=message):
        parse_question(SHA, query)


def test_a_question_in_capitals_and_with_every_parameter_is_understood() -> None:
    question = parse_question(
        SHA.upper(), "name=team%2Frun7.tar.gz&after=12&since=2026-12-04T10:00:00%2B01:00"
    )
    assert question == Question(SHA, "team/run7.tar.gz", 12, "2026-12-04T09:00:00.000000Z")


def test_an_unknown_sha256_has_no_answer(ledger: Ledger) -> None:
    filed(ledger, "a.tar.gz", Status.IMPORTED)
    assert answer(ledger, Question(OTHER), {}) is None


def test_an_import_is_told_only_once_its_package_is_in_done(ledger: Ledger) -> None:
    attempt = claimed(ledger, "a.tar.gz")
    ledger.finish(attempt, Status.IMPORTED, model_hash="m" * 40)
    before = answer(ledger, Question(SHA), {})
    assert before is not None
    assert (before["status"], before["place"], before["final"]) == ("imported", "processing", False)
    ledger.move(attempt, Place.DONE)
    after = answer(ledger, Question(SHA), {})
    assert after is not None
    assert (after["status"], after["place"], after["final"]) == ("imported", "done", True)
    assert after["attempt"] == attempt and after["model_hash"] == "m" * 40


def test_a_failure_carries_its_problems(ledger: Ledger) -> None:
    filed(ledger, "bad.tar.gz", Status.FAILED)
    found = answer(ledger, Question(SHA), {})
    assert found is not None and found["final"]
    assert found["problems"] == [
        {"code": "info.missing", "field": "ymir-info.yaml", "message": "no info"}
    ]


def test_an_import_carries_its_warnings(ledger: Ledger) -> None:
    attempt = claimed(ledger, "a.tar.gz")
    # A backend's own code: what the ledger holds is answered whichever backend wrote it.
    warning = Problem.recorded(
        {
            "code": "ymir.executor_not_registered",
            "field": "task_context.executor",
            "message": "gone",
        }
    )
    ledger.finish(
        attempt, Status.IMPORTED, model_hash="m" * 40, findings=Findings(warnings=(warning,))
    )
    ledger.move(attempt, Place.DONE)
    found = answer(ledger, Question(SHA), {})
    assert found is not None and found["problems"] == []
    assert found["warnings"] == [warning.as_dict()]


def test_an_attempt_in_flight_shows_its_step(ledger: Ledger) -> None:
    attempt = claimed(ledger, "a.tar.gz")
    progress = JobProgress("a.tar.gz", attempt, "store", "", 50, 200, 25.0, 1.5)
    found = answer(ledger, Question(SHA), {attempt: progress})
    assert found is not None
    assert (found["status"], found["final"], found["step"], found["percent"]) == (
        "importing", False, "store", 25.0,
    )  # fmt: skip


def test_after_skips_the_earlier_attempts_at_the_same_bytes(ledger: Ledger) -> None:
    first = filed(ledger, "a.tar.gz", Status.IMPORTED)
    assert answer(ledger, Question(SHA, after=first), {}) is None  # the new copy: not seen yet
    second = claimed(ledger, "a.tar.gz")
    ledger.finish(second, Status.DUPLICATE, duplicate_of=first, model_hash="m" * 40)
    ledger.move(second, Place.DONE)
    found = answer(ledger, Question(SHA, after=first), {})
    assert found is not None
    assert (found["attempt"], found["status"], found["duplicate_of"]) == (
        second,
        "duplicate",
        first,
    )


def test_name_matches_the_inbox_relative_name_or_its_last_part(ledger: Ledger) -> None:
    team = filed(ledger, "team/run7.tar.gz", Status.IMPORTED)
    filed(ledger, "other.tar.gz", Status.FAILED)  # the same bytes, later, under another name
    for name in ("team/run7.tar.gz", "run7.tar.gz"):
        found = answer(ledger, Question(SHA, name=name), {})
        assert found is not None and found["attempt"] == team
        assert found["package"] == "team/run7.tar.gz"
    assert answer(ledger, Question(SHA, name="run8.tar.gz"), {}) is None
    latest = answer(ledger, Question(SHA), {})
    assert latest is not None and latest["package"] == "other.tar.gz"


def test_since_counts_only_attempts_received_from_then_on(ledger: Ledger) -> None:
    filed(ledger, "a.tar.gz", Status.IMPORTED)
    moment = now()
    assert answer(ledger, Question(SHA, since=moment), {}) is None
    later = filed(ledger, "a.tar.gz", Status.DUPLICATE)
    found = answer(ledger, Question(SHA, since=moment), {})
    assert found is not None and found["attempt"] == later


def test_the_answer_names_no_path_of_the_daemons_host(ledger: Ledger, tmp_path: Path) -> None:
    attempt = claimed(ledger, "deep/er/a.tar.gz")
    ledger.finish(attempt, Status.IMPORTED, model_hash="m" * 40)
    ledger.plan(attempt, tmp_path / "done" / "deep" / "er" / "a.tar.gz")
    ledger.move(attempt, Place.DONE)
    found = answer(ledger, Question(SHA), {})
    assert found is not None
    assert found["package"] == "deep/er/a.tar.gz"
    assert not any(str(tmp_path) in str(value) for value in found.values())
