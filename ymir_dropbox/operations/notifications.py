"""Notifications: every final outcome announced to a program and/or a webhook (``[notify]``).

Delivery never slows an import down or changes what happens to a package: :meth:`Notifier.send`
only appends to a bounded queue (when it is full the oldest outcome is dropped and logged), and
each receiver has a thread of its own that delivers, with a timeout and retries spaced by the
project's one backoff formula. A receiver that is down, hangs or fails is logged, never raised.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from ymir_dropbox import __version__
from ymir_dropbox.config import ENV_VAR, NotifyConfig
from ymir_dropbox.core.backoff import backoff
from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.core.printable import printable
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.documents import outcome_document
from ymir_dropbox.storing.lifecycle import SETTLED

log = structlog.get_logger(__name__)

ENV_PREFIX = "YMIR_DROPBOX_"
# HTTP answers worth another try; any other 4xx will not get better by asking again.
RETRY_STATUSES = frozenset({408, 425, 429})
STDERR_TAIL_BYTES = 2000


def outcome_environment(document: JsonObject) -> dict[str, str]:
    """The same outcome as environment variables (``YMIR_DROPBOX_STATUS``, ...); every one is
    set, empty when the outcome has no such value. A control character in a value (a name's
    newline would forge a line) is escaped (``\\u000a``); stdin has the exact JSON."""
    scalars = (
        "status", "package", "sha256", "model_hash", "mAP", "best_stage_name", "attempt",
        "duplicate_of", "uploader", "finished_at", "folder", "path",
    )  # fmt: skip
    variables = {
        ENV_PREFIX + key.upper(): "" if document.get(key) is None else printable(str(document[key]))
        for key in scalars
    }
    codes = (problem.get("code") or "" for problem in document.get("problems") or [])
    variables[ENV_PREFIX + "PROBLEMS"] = " ".join(code for code in codes if code)
    return variables


class DeliveryFailed(Exception):
    """One try did not deliver; ``permanent``: trying again will not help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def run_command(command: tuple[str, ...], document: JsonObject, timeout: float) -> None:
    """Run the program with the outcome on stdin and in its environment; no shell."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(ENV_PREFIX) or key == ENV_VAR
    }
    environment.update(outcome_environment(document))
    try:
        # A session of its own, so a timeout kills whatever the program started too.
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=environment,
            start_new_session=True,
        )
    except OSError as error:  # not found, not executable: no retry will change that
        raise DeliveryFailed(f"cannot run {command[0]}: {error.strerror}", permanent=True) from None
    try:
        _, stderr = process.communicate(_encode(document), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise DeliveryFailed(f"no exit within {timeout:g} s; killed") from None
    if process.returncode != 0:
        tail = stderr[-STDERR_TAIL_BYTES:].decode("utf-8", "replace").strip()
        raise DeliveryFailed(f"exit status {process.returncode}: {tail}".rstrip(": "))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        process.communicate(timeout=1.0)
    except subprocess.TimeoutExpired:  # a descendant left the group and kept stderr open
        process.kill()
        process.wait()


def post_webhook(url: str, document: JsonObject, timeout: float) -> None:
    """POST the outcome as JSON; any 2xx answer is a delivery, a redirect is not. ``timeout``
    bounds the whole delivery, not each read: a receiver that trickles its answer a byte at a
    time is cut off when the time is up."""
    # The scheme is http or https: the config schema allows no other.
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=timeout)
    cut = threading.Event()
    deadline = threading.Timer(timeout, _cut_off, [connection, cut])
    deadline.start()
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", target, _encode(document), _WEBHOOK_HEADERS)
        answer = connection.getresponse()
        answer.read(65536)
        status, reason = answer.status, answer.reason
    except (OSError, http.client.HTTPException, ValueError) as error:
        if cut.is_set() or isinstance(error, TimeoutError):
            raise DeliveryFailed(f"timed out: no whole answer within {timeout:g} s") from None
        if isinstance(error, ConnectionError | OSError) and not isinstance(error, TimeoutError):
            raise DeliveryFailed(f"cannot reach the webhook: {error!r}") from None
        raise DeliveryFailed(f"webhook delivery failed: {error!r}") from None
    finally:
        deadline.cancel()
        connection.close()
    if 200 <= status < 300:
        return
    permanent = 400 <= status < 500 and status not in RETRY_STATUSES
    raise DeliveryFailed(f"HTTP {status} {reason}", permanent=permanent)


def _cut_off(connection: http.client.HTTPConnection, cut: threading.Event) -> None:
    """The delivery's time is up: wake the read waiting on the socket (a close alone would not)."""
    cut.set()
    if connection.sock is not None:
        with contextlib.suppress(OSError):
            connection.sock.shutdown(socket.SHUT_RDWR)


_WEBHOOK_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": f"ymir-dropbox/{__version__}",
}


def _encode(document: JsonObject) -> bytes:
    return (json.dumps(document, default=str) + "\n").encode()


@dataclass(frozen=True, slots=True)
class Receiver:
    """One place outcomes go: a name for the logs (never the URL: it may hold a token) and
    a function that delivers one outcome or raises :class:`DeliveryFailed`."""

    name: str
    deliver: Callable[[JsonObject], None]


def receivers_of(config: NotifyConfig) -> list[Receiver]:
    found = []
    if config.command:
        command = config.command
        found.append(
            Receiver("command", lambda document: run_command(command, document, config.timeout))
        )
    if config.webhook:
        url = config.webhook
        found.append(
            Receiver("webhook", lambda document: post_webhook(url, document, config.timeout))
        )
    return found


class Outbox:
    """One receiver's bounded queue and the thread that empties it."""

    def __init__(self, receiver: Receiver, config: NotifyConfig) -> None:
        self.receiver = receiver
        self.config = config
        self.queue: deque[JsonObject] = deque()
        self.changed = threading.Condition()
        self.closing = False
        self.abandon = threading.Event()  # stop's timeout passed: no more waiting or retries
        self.thread = threading.Thread(
            target=self._run, name=f"ymir-dropbox-notify-{receiver.name}", daemon=True
        )

    def put(self, document: JsonObject) -> None:
        with self.changed:
            if self.closing:
                _log_dropped(self.receiver, document, "stopping")
                return
            if len(self.queue) >= self.config.queue_size:
                _log_dropped(self.receiver, self.queue.popleft(), "queue full")
            self.queue.append(document)
            self.changed.notify()

    def close(self) -> None:
        with self.changed:
            self.closing = True
            self.changed.notify()

    def give_up(self) -> list[JsonObject]:
        """After stop's timeout: what was never delivered."""
        self.abandon.set()
        with self.changed:
            left = list(self.queue)
            self.queue.clear()
            self.changed.notify()
        return left

    def _run(self) -> None:
        while True:
            with self.changed:
                while not self.queue and not self.closing:
                    self.changed.wait()
                if not self.queue:
                    return
                document = self.queue.popleft()
            self._deliver(document)

    def _deliver(self, document: JsonObject) -> None:
        bound = log.bind(
            receiver=self.receiver.name,
            package=document.get("package"),
            attempt=document.get("attempt"),
            status=document.get("status"),
        )
        tries = 1 + self.config.retries
        for number in range(1, tries + 1):
            try:
                self.receiver.deliver(document)
            except DeliveryFailed as failure:
                if failure.permanent or number == tries or self.abandon.is_set():
                    bound.error("notification_failed", reason=failure.reason, tries=number)
                    return
                delay = backoff(
                    number, self.config.retry_base_seconds, self.config.retry_max_seconds
                )
                bound.warning(
                    "notification_retry", reason=failure.reason, tries=number, delay=delay
                )
                if self.abandon.wait(delay):
                    bound.error("notification_failed", reason="stopped", tries=number)
                    return
            except Exception as error:  # a bug here must not end the thread and its queue
                bound.exception("notification_crashed", error=repr(error))
                return
            else:
                bound.info("notification_delivered", tries=number)
                return


def _log_dropped(receiver: Receiver, document: JsonObject, reason: str) -> None:
    log.warning(
        "notification_dropped",
        receiver=receiver.name,
        package=document.get("package"),
        attempt=document.get("attempt"),
        status=document.get("status"),
        reason=reason,
    )


class Notifier:
    """Announces final outcomes; with neither ``command`` nor ``webhook`` configured, a no-op."""

    def __init__(self, config: NotifyConfig) -> None:
        self.config = config
        self.outboxes = [Outbox(receiver, config) for receiver in receivers_of(config)]

    @property
    def enabled(self) -> bool:
        return bool(self.outboxes)

    def start(self) -> None:
        for outbox in self.outboxes:
            outbox.thread.start()

    def send(self, attempt: Attempt) -> None:
        """Queue the outcome of a settled attempt; returns at once. Attempts that are not
        final outcomes (claimed, interrupted) are ignored."""
        if not self.outboxes or attempt.status not in SETTLED:
            return
        document = outcome_document(attempt)
        for outbox in self.outboxes:
            outbox.put(document)

    def stop(self, timeout: float) -> None:
        """Take no more outcomes, deliver what is queued for up to ``timeout`` seconds in all,
        then give up on the rest (logged). A delivery under way is left to its own timeout:
        the threads are daemon threads and never hold the process up."""
        for outbox in self.outboxes:
            outbox.close()
        deadline = time.monotonic() + timeout
        for outbox in self.outboxes:
            if outbox.thread.is_alive():
                outbox.thread.join(max(0.0, deadline - time.monotonic()))
        for outbox in self.outboxes:
            for document in outbox.give_up():
                _log_dropped(outbox.receiver, document, "stopped before delivery")
