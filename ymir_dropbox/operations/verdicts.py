"""``GET /packages/<sha256>`` on the daemon's listener: what became of the bytes a training
server delivered, the question ``push --wait`` asks.

The answer is the latest attempt at those bytes (:func:`~ymir_dropbox.storing.documents.
verdict_document`), with ``final`` true only once its package has left processing/: nothing is
told before what it describes is on disk. Three query parameters narrow the attempts to the
asker's own delivery, so that an earlier attempt at the same bytes is never taken for it:

- ``name``: the name it was delivered under, inbox-relative (``team/run7.tar.gz``) or its last
  part (``run7.tar.gz``);
- ``after``: an attempt id; only later attempts count (``push`` asks before it delivers and
  passes the latest id it was told, or 0);
- ``since``: a time on the daemon's clock (ISO 8601 in UTC, the form of ``now``, which every
  answer carries); only attempts received at or after it count.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.core.progress import JobProgress
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.documents import verdict_document
from ymir_dropbox.storing.ledger import Ledger, LedgerQueries, timestamp

SHA256 = re.compile(r"[0-9a-fA-F]{64}")
MAX_NAME = 4096
ATTEMPTS_LOOKED_AT = 200  # the newest attempts at one sha256 that a question considers


class BadQuestion(DropboxError):
    """A request the endpoint cannot answer: not a sha256, a malformed parameter."""


@dataclass(frozen=True, slots=True)
class Question:
    """Which attempt at ``sha256`` the asker means."""

    sha256: str
    name: str | None = None
    after: int = 0
    since: str | None = None  # normalized to the ledger's timestamp form

    def matches(self, attempt: Attempt) -> bool:
        if self.name is not None and self.name not in _names_of(attempt):
            return False
        if self.since is not None:
            return attempt.received_at is not None and attempt.received_at >= self.since
        return True


def parse_question(sha256: str, query: str) -> Question:
    """The question in ``/packages/<sha256>?<query>``; raises :class:`BadQuestion`."""
    if not SHA256.fullmatch(sha256):
        raise BadQuestion(f"{sha256[:80]!r} is not a sha256 (64 hexadecimal digits)")
    try:
        given = parse_qs(
            query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=8
        )
    except ValueError as error:
        raise BadQuestion(f"the query string: {error}") from None
    unknown = sorted(set(given) - {"name", "after", "since"})
    if unknown:
        raise BadQuestion(f"unknown parameter {unknown[0][:40]!r}: expected name, after or since")
    values = {key: found[-1] for key, found in given.items()}
    name = values.get("name")
    if name is not None and not 0 < len(name) <= MAX_NAME:
        raise BadQuestion(f"name: expected 1 to {MAX_NAME} characters")
    after = values.get("after", "0")
    if not after.isascii() or not after.isdigit() or len(after) > 18:
        raise BadQuestion(f"after: {after[:40]!r} is not an attempt id")
    since = values.get("since")
    return Question(sha256.lower(), name, int(after), None if since is None else _time(since))


def answer(
    ledger: LedgerQueries, question: Question, in_flight: Mapping[int, JobProgress]
) -> JsonObject | None:
    """The latest attempt the question means, as its verdict document, or None."""
    for attempt in ledger.by_sha256(question.sha256, question.after, ATTEMPTS_LOOKED_AT):
        if question.matches(attempt):
            return verdict_document(attempt, in_flight.get(attempt.id))
    return None


PackageSource = Callable[[Question], JsonObject | None]


def package_source(ledger_path: Path, in_flight: Callable[[], list[JobProgress]]) -> PackageSource:
    """What the listener asks: the ledger, through a read-only handle of its own (opened at
    the first question; it sees only what was committed, so only what is on disk), and the
    imports in flight (the daemon's progress)."""
    opened: list[LedgerQueries] = []
    opening = threading.Lock()

    def ask(question: Question) -> JsonObject | None:
        with opening:
            if not opened or opened[0].empty:
                opened[:] = [Ledger.open_for_reading(ledger_path)]
        jobs = {job.attempt: job for job in in_flight()}
        return answer(opened[0], question, jobs)

    return ask


def _names_of(attempt: Attempt) -> set[str]:
    names = {attempt.package}
    relative = attempt.relative
    if relative is not None:
        names |= {str(relative), relative.name}
    return names


def _time(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadQuestion(f"since: {text[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise BadQuestion(f"since: {text[:40]!r} has no time zone (UTC: end it with Z)")
    return timestamp(moment)
