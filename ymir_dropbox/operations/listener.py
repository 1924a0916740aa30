"""The HTTP listener on ``[metrics] listen``: ``/metrics`` for Prometheus, ``/`` the status
page, ``/status.json`` the status object, ``/packages/<sha256>`` the verdict on a package
(:mod:`.verdicts`, what ``push --wait`` asks).

A small ThreadingHTTPServer of our own, so that one port serves them all. It only reads:
GET and HEAD, nothing else (405). The status is computed at most once a second, however many
phones and scrapers ask.

Whoever reaches the port is a stranger: at most :data:`MAX_CONNECTIONS` connections at once
(more are closed at once), a request head of at most :data:`MAX_HEAD_BYTES` (431 beyond),
read within :data:`REQUEST_DEADLINE_SECONDS` in all (a client trickling bytes is cut off),
and only for a host name this machine answers to (an IP address, ``localhost``, its own
names, ``[metrics] hosts``): a page that rebinds a name of its own to this address gets 421.
An aborted request is one log event, never a traceback.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import structlog

from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.operations.status_page import CONTENT_SECURITY_POLICY, render_page
from ymir_dropbox.operations.verdicts import BadQuestion, PackageSource, parse_question
from ymir_dropbox.storing.ledger import now

log = structlog.get_logger(__name__)

StatusSource = Callable[[], JsonObject]
# Accept header -> (body, content type), or None when nothing is counted
MetricsText = Callable[[str], tuple[bytes, str] | None]
STATUS_MAX_AGE_SECONDS = 1.0
PACKAGES = "/packages/"
MAX_CONNECTIONS = 32
MAX_HEAD_BYTES = 8 * 1024
REQUEST_DEADLINE_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 30.0


class CachedStatus:
    """The status source, asked at most once per ``max_age`` seconds (one caller at a time)."""

    def __init__(self, source: StatusSource, max_age: float = STATUS_MAX_AGE_SECONDS) -> None:
        self.source = source
        self.max_age = max_age
        self._lock = threading.Lock()
        self._value: JsonObject | None = None
        self._taken = 0.0

    def __call__(self) -> JsonObject:
        with self._lock:
            now = time.monotonic()
            if self._value is None or now - self._taken >= self.max_age:
                self._value = self.source()
                self._taken = now
            return self._value


class Listener:
    """Serves until :meth:`close`, in a daemon thread of its own."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics_text: MetricsText,
        status_source: StatusSource | None = None,
        status_max_age: float = STATUS_MAX_AGE_SECONDS,
        package_source: PackageSource | None = None,
        hosts: tuple[str, ...] = (),
        request_deadline: float = REQUEST_DEADLINE_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.metrics_text = metrics_text
        self.request_deadline = request_deadline
        self.max_connections = max_connections
        self.package_source = package_source
        self.hosts = frozenset(name.lower().rstrip(".") for name in hosts)
        self.status = (
            CachedStatus(status_source, status_max_age) if status_source is not None else None
        )
        self.server = _Server((host, port), _Handler, bind_and_activate=False)
        self.server.listener = self
        try:
            self.server.server_bind()
            self.server.server_activate()
        except BaseException:
            self.server.server_close()
            raise
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="ymir-dropbox-listener",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()


@functools.cache
def own_names() -> frozenset[str]:
    """The names this machine answers to besides its addresses; looked up once, at the first
    request by a name (``getfqdn`` asks the resolver: never at start)."""
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    return frozenset(name.lower().rstrip(".") for name in names if name)


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's ``Host`` names this machine: an IP address (a rebinding attack
    needs a name of its own), one of its own names, or one of ``allowed``. No ``Host``
    (HTTP/1.0 tools): allowed, since every browser sends one."""
    if host is None:
        return True
    name = host.strip()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.lower().rstrip(".")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name in allowed or name in own_names()
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    listener: Listener

    def server_activate(self) -> None:
        self.slots = threading.BoundedSemaphore(self.listener.max_connections)
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            log.warning(
                "listener_busy",
                client=str(client_address[0]),
                limit=self.listener.max_connections,
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that broke off (reset, closed mid-answer): one event, no traceback."""
        error = sys.exc_info()[1]
        log.info("listener_request_aborted", client=str(client_address[0]), error=repr(error)[:200])


class _HeadTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ymir-dropbox"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_SECONDS

    def handle_one_request(self) -> None:
        """Read the request head ourselves, bounded in size and in time, then answer it."""
        try:
            head = self._read_head()
        except _HeadTooLarge:
            self.command, self.close_connection = "", True
            self.request_version, self.requestline = "HTTP/1.0", ""
            self._send_text(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"a request head is {MAX_HEAD_BYTES} bytes at most\n",
            )
            return
        except OSError as error:  # too slow (a timeout), or gone
            self.close_connection = True
            log.info("listener_request_aborted", client=self.client_address[0], error=repr(error))
            return
        if not head:
            self.close_connection = True
            return
        self.rfile = io.BytesIO(head)
        super().handle_one_request()

    def _read_head(self) -> bytes:
        allowed = self.server.listener.request_deadline
        deadline = time.monotonic() + allowed
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no whole request within {allowed:g} s")
            self.connection.settimeout(left)
            chunk = self.connection.recv(4096)
            if not chunk:
                return data
            data += chunk
            if len(data) > MAX_HEAD_BYTES:
                raise _HeadTooLarge
        self.connection.settimeout(REQUEST_TIMEOUT_SECONDS)
        return data

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _refuse(self) -> None:
        """Every other method: this listener only reads."""
        self.close_connection = True  # a body we never read must not be taken for a request
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"only GET and HEAD here\n",
            "text/plain; charset=utf-8",
            {"Allow": "GET, HEAD"},
            with_body=True,
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

    def _answer(self, with_body: bool) -> None:
        listener = self.server.listener
        if not host_allowed(self.headers.get("Host"), listener.hosts):
            self._send_text(
                HTTPStatus.MISDIRECTED_REQUEST,
                "this listener does not answer to that host name (see [metrics] hosts)\n",
            )
            return
        parts = urlsplit(self.path)
        path = parts.path
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        if path == "/metrics":
            exposition = listener.metrics_text(self.headers.get("Accept", ""))
            if exposition is None:
                self._send_text(
                    HTTPStatus.NOT_FOUND,
                    "no metrics: prometheus-client is not installed "
                    "(pip install 'ymir-dropbox[metrics]')\n",
                )
                return
            body, content_type = exposition
            self._send(HTTPStatus.OK, body, content_type, headers, with_body)
            return
        if path.startswith(PACKAGES) and listener.package_source is not None:
            self._package(listener.package_source, path[len(PACKAGES) :], parts.query, with_body)
            return
        if path not in ("/", "/status.json"):
            self._send_text(
                HTTPStatus.NOT_FOUND,
                "not found: try /, /status.json, /metrics or /packages/<sha256>\n",
            )
            return
        if listener.status is None:
            self._send_text(HTTPStatus.NOT_FOUND, "no status here: only /metrics\n")
            return
        try:
            status = listener.status()
            if path == "/":
                body = render_page(status).encode()
                content_type = "text/html; charset=utf-8"
                headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                headers["Referrer-Policy"] = "no-referrer"
            else:
                body = (json.dumps(status, default=str) + "\n").encode()
                content_type = "application/json"
        except Exception as error:  # a status that cannot be read must not end the listener
            log.warning("status_unavailable", path=path, error=repr(error))
            self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, "status unavailable; see the log\n")
            return
        self._send(HTTPStatus.OK, body, content_type, headers, with_body)

    def _package(self, source: PackageSource, sha256: str, query: str, with_body: bool) -> None:
        """The verdict on the package with these bytes: 200 with its latest attempt, 404
        when none is known (yet), 400 for anything but a sha256 and known parameters."""
        answer: JsonObject
        try:
            question = parse_question(sha256, query)
        except BadQuestion as error:
            code, answer = HTTPStatus.BAD_REQUEST, {"error": str(error)}
        else:
            try:
                found = source(question)
            except Exception as error:  # an unreadable ledger must not end the listener
                log.warning("verdict_unavailable", error=repr(error))
                code, answer = HTTPStatus.SERVICE_UNAVAILABLE, {"error": "ledger unavailable"}
            else:
                if found is None:
                    code, answer = (
                        HTTPStatus.NOT_FOUND,
                        {
                            "sha256": question.sha256,
                            "status": "unknown",
                            "error": "no attempt at these bytes (yet)",
                        },
                    )
                else:
                    code, answer = HTTPStatus.OK, found
        body = (json.dumps({"now": now(), **answer}, default=str) + "\n").encode()
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        self._send(code, body, "application/json", headers, with_body)

    def _send_text(self, code: HTTPStatus, text: str) -> None:
        self._send(code, text.encode(), "text/plain; charset=utf-8", {}, with_body=True)

    def _send(
        self,
        code: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str],
        with_body: bool,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if with_body and self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: a scraper every 15 s would flood the journal."""
