"""The HTTP listener on ``[metrics] listen``: ``/metrics`` for Prometheus, ``/`` the status
page, ``/status.json`` the status object.

A small ThreadingHTTPServer of our own, so that one port serves all three. It only reads:
GET and HEAD, nothing else. The status is computed at most once a second, however many
phones and scrapers ask.
"""

from __future__ import annotations

import json
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

log = structlog.get_logger(__name__)

StatusSource = Callable[[], JsonObject]
MetricsText = Callable[[str], tuple[bytes, str]]  # Accept header -> (body, content type)
STATUS_MAX_AGE_SECONDS = 1.0
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
    ) -> None:
        self.metrics_text = metrics_text
        self.status = (
            CachedStatus(status_source, status_max_age) if status_source is not None else None
        )
        self.server = _Server((host, port), _Handler)
        self.server.listener = self
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="ymir-dropbox-listener", daemon=True
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    listener: Listener


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ymir-dropbox"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, with_body: bool) -> None:
        listener = self.server.listener
        path = urlsplit(self.path).path
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        if path == "/metrics":
            body, content_type = listener.metrics_text(self.headers.get("Accept", ""))
            self._send(HTTPStatus.OK, body, content_type, headers, with_body)
            return
        if path not in ("/", "/status.json"):
            self._send_text(HTTPStatus.NOT_FOUND, "not found: try /, /status.json or /metrics\n")
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
