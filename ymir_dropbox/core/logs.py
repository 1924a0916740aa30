"""The one place the structlog processor chain is configured.

JSON lines when stderr is not a terminal (journald, files, pipes), coloured key-value lines
on a terminal. Events are short snake_case names; values are fields, never interpolated.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from ymir_dropbox.core.printable import printable_values


def configure_logging(
    format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    stream = stream or sys.stderr
    as_json = format == "json" or (format == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        # A plain traceback, never rich's or better-exceptions' (whichever is installed):
        # they print each frame's locals, and a frame may hold YMIR's password or token.
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            *([] if as_json else [_printable]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def _printable(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """On a terminal, values show no control character (an uploader's name could hold one):
    one event stays one line. JSON lines escape them already."""
    return {
        key: printable_values(value) if key != "exc_info" else value for key, value in event.items()
    }
