"""``push --wait``: ask the daemon's listener until each delivered package has its verdict.

A verdict is the daemon's final word on the attempt at *this* delivery, never an earlier
attempt at the same bytes: before delivering, push asks for the latest attempt at them and
afterwards counts only later ones (``after``). When the listener could not be asked before
(the daemon was down), the first answer after the delivery gives the daemon's clock, and
only attempts received since the delivery began, by that clock, count (``since``). Every
question names the package as delivered (``name``).

The daemon being down, or restarting, while push waits is normal: it keeps asking until
its deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus

from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.pushing.client import Reply, ask
from ymir_dropbox.pushing.sources import Package
from ymir_dropbox.storing.ledger import timestamp

REQUEST_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 1.0
UNREACHED_POLL_SECONDS = 2.0
CLOCK_MARGIN_SECONDS = 1.0  # a question's own travel time, taken off the daemon's clock


@dataclass(slots=True)
class Awaited:
    """A delivered package and what is known of its verdict so far."""

    package: Package
    after: int | None  # the latest attempt at these bytes before the delivery (0: none)
    delivered_at: float  # time.time() when the delivery began
    since: str | None = None
    verdict: JsonObject | None = None  # the final answer
    seen: JsonObject | None = None  # the latest answer that was not final
    reached: bool = False  # the listener answered a question about it
    error: str = ""  # why the last question got no answer


def before_delivery(base_url: str, package: Package, timeout: float) -> tuple[int | None, str]:
    """The latest attempt id at the package's bytes (0: none yet), or None and why the
    listener did not answer within ``timeout`` seconds (at most one question's time)."""
    if timeout <= 0:
        return None, "no time left to ask"
    reply = ask(base_url, package.sha256, timeout=min(timeout, REQUEST_TIMEOUT_SECONDS))
    if not reply.reached or reply.answer is None:
        return None, reply.error or "no answer"
    attempt = reply.answer.get("attempt")
    if reply.found and isinstance(attempt, int):
        return attempt, ""
    return (0, "") if reply.code == HTTPStatus.NOT_FOUND else (None, reply.error)


def wait_for_verdicts(
    base_url: str,
    awaited: list[Awaited],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Ask until every package has its final verdict or ``timeout`` seconds have passed;
    the answers are kept in ``awaited``."""
    deadline = clock() + timeout
    while True:
        pending = [item for item in awaited if item.verdict is None]
        if not pending:
            return
        for item in pending:
            left = deadline - clock()
            if left <= 0:
                return
            _ask_once(base_url, item, min(left, REQUEST_TIMEOUT_SECONDS))
        if all(item.verdict is not None for item in awaited):
            return
        reached = any(item.reached and not item.error for item in pending)
        pause = POLL_SECONDS if reached else UNREACHED_POLL_SECONDS
        left = deadline - clock()
        if left <= 0:
            return
        sleep(min(pause, left))


def _ask_once(base_url: str, item: Awaited, timeout: float) -> None:
    reply = ask(
        base_url,
        item.package.sha256,
        name=item.package.name,
        after=item.after,
        since=item.since,
        timeout=timeout,
    )
    if not reply.reached or reply.answer is None:
        item.error = reply.error
        return
    item.reached, item.error = True, ""
    if item.after is None and item.since is None:
        item.since = _delivery_on_daemon_clock(reply, item.delivered_at)
    answer = reply.answer
    if not reply.found:
        return  # not seen yet: still in the inbox, or not yet hashed
    received = answer.get("received_at")
    if item.since is not None and (not isinstance(received, str) or received < item.since):
        return  # an earlier attempt (the first answer, before ``since`` was known)
    if answer.get("final") is True:
        item.verdict = answer
    else:
        item.seen = answer


def _delivery_on_daemon_clock(reply: Reply, delivered_at: float) -> str | None:
    """When the delivery began, by the daemon's clock (its ``now`` less the time passed here)."""
    assert reply.answer is not None
    now = reply.answer.get("now")
    if not isinstance(now, str):
        return None
    try:
        daemon_now = datetime.fromisoformat(now.replace("Z", "+00:00"))
    except ValueError:
        return None
    passed = time.time() - delivered_at + CLOCK_MARGIN_SECONDS
    return timestamp(daemon_now - timedelta(seconds=max(passed, 0.0)))
