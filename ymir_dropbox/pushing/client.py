"""Asking the daemon's listener about a package: ``GET <status-url>/packages/<sha256>``.

Every failure to get an answer (refused, timed out, a proxy's 502) is a :class:`Reply` that
says so, never an exception: the daemon being down for a while is normal, and the caller
keeps asking until its own deadline.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import quote, urlencode, urlsplit

from ymir_dropbox.core.errors import UsageError
from ymir_dropbox.core.jsonvalues import JsonObject

MAX_ANSWER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """What one question got: the listener's JSON answer, or why there was none."""

    reached: bool  # the daemon's listener answered
    code: int | None = None  # its HTTP status
    answer: JsonObject | None = None
    error: str = ""  # why nothing (usable) came back

    @property
    def found(self) -> bool:
        return self.code == HTTPStatus.OK and self.answer is not None


def check_status_url(url: str) -> str:
    """``--status-url`` / ``[push] status_url``: the listener's base URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--status-url {url!r}: expected http://HOST:PORT, the daemon's [metrics] listen"
        )
    if parts.query or parts.fragment:
        raise UsageError(f"--status-url {url!r}: no query or fragment, only the base URL")
    return url.rstrip("/")


def ask(
    base_url: str,
    sha256: str,
    *,
    name: str | None = None,
    after: int | None = None,
    since: str | None = None,
    timeout: float = 10.0,
) -> Reply:
    """The listener's answer about the latest attempt at ``sha256`` (narrowed as
    :mod:`ymir_dropbox.operations.verdicts` documents)."""
    given = {"name": name, "after": after, "since": since}
    query = urlencode({key: value for key, value in given.items() if value is not None})
    url = f"{base_url}/packages/{quote(sha256)}" + (f"?{query}" if query else "")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=max(timeout, 0.1)) as response:  # noqa: S310
            return _reply(response.status, response.read(MAX_ANSWER_BYTES + 1))
    except urllib.error.HTTPError as error:
        with error:
            return _reply(error.code, error.read(MAX_ANSWER_BYTES + 1))
    except urllib.error.URLError as error:
        return Reply(False, error=str(error.reason))
    except TimeoutError:
        return Reply(False, error=f"no answer within {timeout:g} s")
    except OSError as error:  # reset by peer, a broken answer
        return Reply(False, error=str(error))


def _reply(code: int, body: bytes) -> Reply:
    if code not in (HTTPStatus.OK, HTTPStatus.NOT_FOUND, HTTPStatus.BAD_REQUEST):
        # A proxy in front, a daemon restarting: not the daemon's word on this package.
        return Reply(False, code, error=f"HTTP {code}")
    try:
        answer = json.loads(body[:MAX_ANSWER_BYTES])
    except ValueError:
        return Reply(False, code, error=f"HTTP {code} without a JSON answer (not ymir-dropbox?)")
    if not isinstance(answer, dict) or "now" not in answer:
        return Reply(False, code, error=f"HTTP {code}: not ymir-dropbox's answer")
    return Reply(True, code, answer)
