"""The log: one event per line, and nothing a frame held."""

from __future__ import annotations

import io
import json

import structlog

from ymir_dropbox.core.logs import configure_logging


def fail_holding_a_secret() -> None:
    password = "hunter2-in-a-local"
    raise RuntimeError(f"cannot log in ({len(password)} characters)")


def logged_failure(log_format: str) -> str:
    """What the log says of a failure caught and logged with its traceback."""
    stream = io.StringIO()
    configure_logging(log_format, "info", stream)
    try:
        fail_holding_a_secret()
    except RuntimeError:
        structlog.get_logger("test").exception("login_failed")
    return stream.getvalue()


def test_a_traceback_on_a_terminal_never_shows_a_frames_locals() -> None:
    shown = logged_failure("console")

    assert "login_failed" in shown and "cannot log in (18 characters)" in shown
    assert "hunter2" not in shown
    renderer = structlog.get_config()["processors"][-1]
    assert renderer._exception_formatter is structlog.dev.plain_traceback


def test_json_lines_hold_one_event_each_with_its_traceback() -> None:
    lines = logged_failure("json").splitlines()

    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "login_failed" and "RuntimeError" in event["exception"]
    assert "hunter2" not in lines[0]
