"""The HTTP listener on ``[metrics] listen``: ``/metrics`` for Prometheus, ``/`` the status
page, ``/status.json`` the status object, ``/packages/<sha256>`` the verdict on a package
(:mod:`.verdicts`, what ``push --wait`` asks).

A small ThreadingHTTPServer of our own, so that one port serves them all. It only reads:
GET and HEAD, nothing else (405). The status is computed at most once a second, however many
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
from ymir_dropbox.operations.verdicts import BadQuestion, PackageSource, clock, parse_question

log = structlog.get_logger(__name__)

StatusSource = Callable[[], JsonObject]
# Accept header -> (body, content type), or None when nothing is counted
MetricsText = Callable[[str], tuple[bytes, str] | None]
STATUS_MAX_AGE_SECONDS = 1.0
PACKAGES = "/packages/"
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
    ) -> None:
        self.metrics_text = metrics_text
        self.package_source = package_source
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
        body = (json.dumps({"now": clock(), **answer}, default=str) + "\n").encode()
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
