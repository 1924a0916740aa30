"""The listener facing strangers: GET and HEAD only, bounded connections, heads and time, and
only the host names this machine answers to. A real server on 127.0.0.1, real sockets."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import closing

import pytest

from ymir_dropbox.operations.listener import MAX_HEAD_BYTES, Listener, host_allowed


def status() -> dict[str, object]:
    return {"daemon_running": True}


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener(
        "127.0.0.1",
        0,
        metrics_text=lambda accept: None,
        status_source=status,
        hosts=("ymir.example.org",),
        request_deadline=1.0,
        max_connections=4,
    )
    served.start()
    yield served
    served.close()


def exchange(listener: Listener, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` whole and read the answer until the listener closes."""
    with closing(socket.create_connection(listener.address, timeout=timeout)) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


def get(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def status_line(answer: bytes) -> str:
    return answer.split(b"\r\n", 1)[0].decode()


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:9817", "[::1]:9817", "localhost:9817", "YMIR.example.org."]
)
def test_the_hosts_this_machine_answers_to_are_served(listener: Listener, host: str) -> None:
    assert status_line(exchange(listener, get("/status.json", host))).endswith("200 OK")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9817", "127.0.0.1.evil.example"])
def test_a_rebound_name_is_refused(listener: Listener, host: str) -> None:
    answer = exchange(listener, get("/status.json", host))
    assert status_line(answer).endswith("421 Misdirected Request")
    assert b"daemon_running" not in answer


def test_no_host_header_is_an_old_tool_and_served() -> None:
    assert host_allowed(None, frozenset())


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head_are_answered(listener: Listener, method: str) -> None:
    request = f"{method} /status.json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc"
    answer = exchange(listener, request.encode())
    assert status_line(answer).endswith("405 Method Not Allowed")
    assert b"Allow: GET, HEAD" in answer


def test_a_head_over_the_limit_gets_431_and_nothing_more(listener: Listener) -> None:
    flood = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * 1000) for n in range(20))
    answer = exchange(listener, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + flood + b"\r\n")
    assert status_line(answer).endswith("431 Request Header Fields Too Large")
    assert str(MAX_HEAD_BYTES).encode() in answer


def test_a_client_trickling_its_request_is_cut_off_at_the_deadline(listener: Listener) -> None:
    with closing(socket.create_connection(listener.address, timeout=10)) as connection:
        started = time.monotonic()
        connection.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        while time.monotonic() - started < 5:
            try:
                connection.sendall(b"X: y\r\n")
                if connection.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            except OSError:  # reset by the listener
                closed = True
                break
            time.sleep(0.2)
        assert closed, "the listener kept a trickling client beyond its deadline"
        assert time.monotonic() - started < 3


def test_connections_beyond_the_limit_are_closed_and_the_rest_served(listener: Listener) -> None:
    idle = [socket.create_connection(listener.address, timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)  # let the listener accept them all (no condition to poll from outside)
        extra = socket.create_connection(listener.address, timeout=5)
        with closing(extra):
            assert extra.recv(1) == b""  # closed at once, no answer
    finally:
        for connection in idle:
            connection.close()
    # The slots come back once the idle connections are gone.
    deadline = time.monotonic() + 5
    while True:
        answer = exchange(listener, get("/status.json"))
        if answer or time.monotonic() > deadline:
            break
    assert status_line(answer).endswith("200 OK")


def test_an_aborted_request_is_one_log_event_not_a_traceback(
    listener: Listener, capfd: pytest.CaptureFixture[str]
) -> None:
    """A client that sends its request and resets the connection before the answer."""
    said = ""
    for _ in range(20):  # the reset must arrive before the answer is written: try a few times
        with closing(socket.create_connection(listener.address, timeout=5)) as connection:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.sendall(b"GET /status.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.05)
        captured = capfd.readouterr()
        said += captured.out + captured.err
        if "listener_request_aborted" in said:
            break
    assert "listener_request_aborted" in said
    assert "Traceback" not in said
    assert status_line(exchange(listener, get("/status.json"))).endswith("200 OK")
